"""Real-time speech on the CPU: streaming recognition and streaming synthesis through hepta's engine.

    .venv/bin/python benchmarks/speech_stream.py --model runs/omni [--utterances 8] [--rounds 5] [--json out.json]

Recognition: each held-out utterance is fed in 100 ms pieces at the pace a microphone would
deliver them (the feeder sleeps until each piece is due), a partial transcript every 0.5 s of
audio. Measured: from the moment the last piece is due to the final transcript (target: under
300 ms), and the number of partials.

Synthesis: each held-out sentence is said through `stream_speech`. Measured: from the request to
the first audio chunk (target: under 300 ms), and the real-time factor, the wall time of the
whole request over the seconds of speech it made (target: below 0.5).

Each figure is the median over rounds x utterances; the engine runs on its own thread as the
server's does, with torch limited to the machine's cores. Intelligibility of the streamed speech
against the same codes decoded in one piece is reported when pocketsphinx is installed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from hepta.infer.engine import Engine, EngineConfig, generate_many
from hepta.infer.request import Request
from hepta.infer.speech_stream import GREEDY, StreamingTranscriber, speech_prompt, stream_speech
from hepta.loading import load, load_audio_codec, load_tokenizer
from hepta.modality import speech_data
from hepta.modality.audio_features import SAMPLE_RATE

PIECE_SECONDS = 0.1
MAX_SPEECH_CODES = 200


def recognise_live(transcriber: StreamingTranscriber, wave: np.ndarray) -> dict:
    piece = round(PIECE_SECONDS * SAMPLE_RATE)
    started = time.perf_counter()
    partials = []
    for begin in range(0, len(wave), piece):
        due = started + begin / SAMPLE_RATE
        time.sleep(max(0.0, due - time.perf_counter()))
        partial = transcriber.feed(wave[begin:begin + piece])
        if partial is not None:
            partials.append(partial)
    audio_end = started + len(wave) / SAMPLE_RATE
    time.sleep(max(0.0, audio_end - time.perf_counter()))
    final = transcriber.finish()
    return {"final_latency_s": time.perf_counter() - audio_end, "partials": len(partials), "final": final,
            "late_s": max(0.0, time.perf_counter() - audio_end)}


def say_live(engine, tokenizer, codec, text: str) -> dict:
    started = time.perf_counter()
    first, chunks = None, []
    for chunk in stream_speech(engine, tokenizer, codec, text, MAX_SPEECH_CODES):
        if first is None and len(chunk):
            first = time.perf_counter() - started
        chunks.append(chunk)
    wall = time.perf_counter() - started
    wave = np.concatenate(chunks)
    return {"first_chunk_s": first, "rtf": wall / max(len(wave) / SAMPLE_RATE, 1e-9), "wave": wave}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--utterances", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    model, tokenizer = load(args.model), load_tokenizer(args.model)
    codec = load_audio_codec(args.model, tokenizer)
    engine = Engine(model, tokenizer, EngineConfig(max_num_seqs=4), audio=codec.vocab).start()
    heard = speech_data.varied_utterances("held_out", args.utterances, seed=2)
    texts = [u.text for u in speech_data.house_utterances("held_out", args.utterances, seed=2)]
    try:
        say_live(engine, tokenizer, codec, texts[0])  # warm-up: the first forward pays for allocation
        recognition, synthesis, spoken = [], [], {}
        for _ in range(args.rounds):
            for utterance, text in zip(heard, texts):
                recognition.append(recognise_live(StreamingTranscriber(engine, tokenizer, codec), utterance.wave))
                said = say_live(engine, tokenizer, codec, text)
                spoken[text] = said.pop("wave")
                synthesis.append(said)
    finally:
        engine.stop()

    result = {
        "utterances": args.utterances, "rounds": args.rounds,
        "recognition": {"final_latency_ms_median": 1000 * statistics.median(r["final_latency_s"] for r in recognition),
                        "final_latency_ms_p90": 1000 * float(np.percentile([r["final_latency_s"] for r in recognition], 90)),
                        "partials_per_utterance": statistics.mean(r["partials"] for r in recognition),
                        "audio_seconds_median": statistics.median(len(u.wave) / SAMPLE_RATE for u in heard)},
        "synthesis": {"first_chunk_ms_median": 1000 * statistics.median(s["first_chunk_s"] for s in synthesis),
                      "first_chunk_ms_p90": 1000 * float(np.percentile([s["first_chunk_s"] for s in synthesis], 90)),
                      "rtf_median": statistics.median(s["rtf"] for s in synthesis),
                      "rtf_p90": float(np.percentile([s["rtf"] for s in synthesis], 90))},
        "targets": {"recognition_final_ms": 300, "synthesis_first_chunk_ms": 300, "synthesis_rtf": 0.5},
    }
    result["intelligibility"] = _intelligibility(model, tokenizer, codec, texts, spoken)
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


def _intelligibility(model, tokenizer, codec, texts: list[str], spoken: dict) -> dict | None:
    """The judge's WER on the streamed speech and on the same (greedy) codes decoded in one piece."""
    try:
        from hepta.eval.recogniser import domain_recogniser, word_error_rate
        judge = domain_recogniser()
    except ImportError:
        return None
    engine = Engine(model, tokenizer, EngineConfig(max_num_seqs=8), audio=codec.vocab).start()
    try:
        prompts = [speech_prompt(codec, tokenizer, t) for t in texts]
        requests = [Request(p, min(MAX_SPEECH_CODES + 1, engine.max_len - len(p)), GREEDY) for p in prompts]
        choices = [c[0] for c in generate_many(engine, requests)]
    finally:
        engine.stop()
    whole = [codec.wave([i - codec.vocab.code_start for i in c.token_ids if codec.vocab.is_code(i)]) for c in choices]
    return {"streamed_wer": word_error_rate(texts, [judge.transcribe(spoken[t]) for t in texts]),
            "whole_wer": word_error_rate(texts, [judge.transcribe(w) for w in whole])}


if __name__ == "__main__":
    main()
