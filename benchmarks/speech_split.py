"""Where recognition errors come from: unheard voices, unseen sentences, or both.

    .venv/bin/python benchmarks/speech_split.py --model runs/omni [--n 100] [--seed 0] [--json results.json]

The `asr` task scores held-out sentences said by held-out voices, so its word error rate mixes two
gaps. This scores the four cells apart, each on --n utterances said as the recipe says them (a random
rate and pitch, half with noise, `modality/speech_data.py`; never speed-perturbed):

    voices \\ sentences   training (the run's own: first --n, drawn with --seed)   held-out (the asr task's first --n)
    training             what the model fitted                                      new sentences, known voices
    held-out             known sentences, new voices                                the asr task

A large gap down a column says the voices are what the model has not learned to generalise over
(more voices or augmentation would help); across a row, the sentences (more or more varied text).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from hepta.eval.recogniser import word_error_rate
from hepta.eval.speech_eval import EVAL_SEED, SpeechEval
from hepta.loading import load, load_audio_codec, load_tokenizer
from hepta.modality import speech_data

SPLITS = ("train", "held_out")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--n", type=int, default=100, help="utterances per cell")
    p.add_argument("--seed", type=int, default=0, help="the run's seed (its training sentences)")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args()
    folder = Path(args.model)
    model, tokenizer = load(folder), load_tokenizer(folder)
    speech = SpeechEval.open(model, tokenizer, load_audio_codec(folder, tokenizer), str(folder), args.n)
    results, started = {}, time.perf_counter()
    try:
        for voices in SPLITS:
            for sentences in SPLITS:
                seed = args.seed if sentences == "train" else EVAL_SEED
                said = speech_data.varied_utterances(sentences, args.n, seed, voice_split=voices)
                heard = speech.transcripts([u.wave for u in said])
                wer = word_error_rate([u.text for u in said], heard)
                exact = float(np.mean([h == u.text for h, u in zip(heard, said)]))
                results[f"{voices} voices, {sentences} sentences"] = {"wer": wer, "sentence_accuracy": exact}
                print(f"{voices:>8s} voices, {sentences:>8s} sentences: WER {wer:.3f}, sentences exactly right "
                      f"{exact:.2f} ({time.perf_counter() - started:.0f} s)", flush=True)
    finally:
        speech.close()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
