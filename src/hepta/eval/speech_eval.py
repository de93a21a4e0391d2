"""The speech tasks of `hepta eval`, answered by hepta's engine.

`asr`: held-out sentences said by held-out voices (varied rate, pitch and noise) -> transcripts,
scored by word error rate. `tts`: held-out sentences -> hepta's speech, heard by the independent
recogniser (recogniser.py), whose word error rate on eSpeak NG's own audio of the same sentences
is the reference. `asr-real`: human recordings that Debian packages ship (report only).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from hepta.errors import HeptaError
from hepta.eval.recogniser import domain_recogniser, word_error_rate
from hepta.infer.engine import Engine, EngineConfig, generate_many
from hepta.infer.request import Request
from hepta.infer.sampling import SamplingParams
from hepta.infer.speech_stream import MAX_TRANSCRIPT_TOKENS, speech_prompt, transcription_prompt
from hepta.modality import speech_data, speech_domain
from hepta.modality.audio_codec import AudioCodec
from hepta.modality.audio_io import decode_audio
from hepta.modality.audio_train import mel_distance

GREEDY = SamplingParams(temperature=0.0)
DEFAULT_UTTERANCES = 200
EVAL_SEED = 1  # the held-out utterances of `hepta eval`; training draws with the run's seed from other sentences
MAX_SPEECH_SECONDS = 8.0


def normalise(text: str) -> str:
    """Lower case, letters, digits and single spaces: how transcripts are compared."""
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower()).split())


@dataclass
class SpeechEval:
    engine: Engine
    tokenizer: object
    codec: AudioCodec
    limit: int
    on_answer: Callable[[], None] = lambda: None

    @classmethod
    def open(cls, model, tokenizer, codec: AudioCodec | None, folder: str, limit: int | None,
             max_num_seqs: int = 64) -> "SpeechEval":
        if codec is None:
            raise HeptaError(f"{folder} does not hear or speak (no audio_tokenizer/ folder), so it cannot be evaluated "
                             "on speech tasks; pass a model trained with --preset omni-tiny")
        engine = Engine(model, tokenizer, EngineConfig(max_num_seqs=max_num_seqs), audio=codec.vocab).start()
        return cls(engine, tokenizer, codec, limit or DEFAULT_UTTERANCES)

    def close(self) -> None:
        self.engine.stop()

    def _run(self, prompts: list[list[int]], max_tokens: int) -> list:
        requests = [Request(p, max_tokens=max_tokens, sampling=GREEDY) for p in prompts]
        return [choices[0] for choices in generate_many(self.engine, requests, on_done=lambda _i: self.on_answer())]

    def transcripts(self, waves: list[np.ndarray]) -> list[str]:
        prompts = [transcription_prompt(self.codec, self.tokenizer, codes) for codes in self.codec.codes_of_many(waves)]
        return [normalise(c.text) for c in self._run(prompts, MAX_TRANSCRIPT_TOKENS)]

    def speech(self, texts: list[str]) -> list[np.ndarray]:
        """hepta's speech for each text: the answer opened as an audio span, decoded."""
        prompts = [speech_prompt(self.codec, self.tokenizer, t) for t in texts]
        max_codes = round(MAX_SPEECH_SECONDS * self.codec.codes_per_second)
        room = self.engine.max_len - max(len(p) for p in prompts)
        choices = self._run(prompts, min(max_codes + 2, room))
        waves = []
        for choice in choices:
            spans = self.codec.vocab.find_spans([self.codec.vocab.start_id] + choice.token_ids)
            codes = spans[0] if spans else [c - self.codec.vocab.code_start for c in choice.token_ids
                                            if self.codec.vocab.is_code(c)]  # cut off at the limit: still speech
            waves.append(self.codec.wave(codes))
        return waves

    # --- the tasks ------------------------------------------------------------------------

    def asr(self) -> dict:
        utterances = speech_data.varied_utterances("held_out", self.limit, seed=EVAL_SEED)
        heard = self.transcripts([u.wave for u in utterances])
        references = [u.text for u in utterances]
        exact = float(np.mean([h == r for h, r in zip(heard, references)]))
        return {"n": len(utterances), "wer": word_error_rate(references, heard), "sentence_accuracy": exact,
                "voices": sorted({u.voice for u in utterances}),
                "examples": [{"said": r, "heard": h} for r, h in list(zip(references, heard))[:5]]}

    def tts(self) -> dict:
        utterances = speech_data.house_utterances("held_out", self.limit, seed=EVAL_SEED)
        texts = [u.text for u in utterances]
        spoken = self.speech(texts)
        judge = domain_recogniser()
        heard = [judge.transcribe(w) for w in spoken]
        reference_heard = [judge.transcribe(u.wave) for u in utterances]
        wer, reference_wer = word_error_rate(texts, heard), word_error_rate(texts, reference_heard)
        return {"n": len(texts), "wer": wer, "reference_wer": reference_wer,
                "ratio": wer / max(reference_wer, 1e-9),
                "seconds_of_speech": round(float(sum(len(w) for w in spoken)) / speech_data.espeak.SAMPLE_RATE, 1),
                "examples": [{"text": t, "judge_heard": h} for t, h in list(zip(texts, heard))[:5]]}

    def asr_real(self) -> dict:
        """Human recordings Debian ships: each scored as heard exactly, and by the domain words it holds."""
        recordings = real_recordings()
        if not recordings:
            raise HeptaError("no real recordings found: install Debian's alsa-utils and klettres-data "
                             f"(`apt-get install alsa-utils klettres-data`), which put them in {ALSA_SOUNDS} and "
                             f"{KLETTRES}")
        heard = self.transcripts([wave for _, _, wave in recordings])
        by_source: dict[str, dict] = {}
        for (source, said, _), transcript in zip(recordings, heard):
            entry = by_source.setdefault(source, {"n": 0, "correct": 0, "examples": []})
            entry["n"] += 1
            entry["correct"] += transcript == said
            if len(entry["examples"]) < 5:
                entry["examples"].append({"said": said, "heard": transcript})
        for entry in by_source.values():
            entry["accuracy"] = entry.pop("correct") / entry["n"]
        domain = set(speech_domain.vocabulary())
        said_words = [(w, h.split()) for (_, said, _), h in zip(recordings, heard) for w in said.split() if w in domain]
        return {"n": len(recordings), "accuracy": float(np.mean([h == s for (_, s, _), h in zip(recordings, heard)])),
                "domain_word_recall": (float(np.mean([w in h for w, h in said_words])) if said_words else None),
                "by_source": by_source}


def audio_tokenizer_quality(codec: AudioCodec, limit: int) -> dict:
    """The audio tokenizer alone: held-out sentences in the house voice through codes and back,
    heard by the judge, against the same judge on the originals; and their mel distance."""
    utterances = speech_data.house_utterances("held_out", limit, seed=EVAL_SEED)
    rebuilt = [codec.wave(codes)[:len(u.wave)] for codes, u in zip(codec.codes_of_many([u.wave for u in utterances]),
                                                                    utterances)]
    judge, texts = domain_recogniser(), [u.text for u in utterances]
    return {"n": len(texts), "wer": word_error_rate(texts, [judge.transcribe(w) for w in rebuilt]),
            "reference_wer": word_error_rate(texts, [judge.transcribe(u.wave) for u in utterances]),
            "mel_distance": float(np.mean([mel_distance(u.wave, w) for u, w in zip(utterances, rebuilt)])),
            "codes_per_second": codec.codes_per_second}


ALSA_SOUNDS = Path("/usr/share/sounds/alsa")
KLETTRES = Path("/usr/share/klettres")


def real_recordings() -> list[tuple[str, str, np.ndarray]]:
    """(source, what is said, 16 kHz wave) for alsa-utils' channel names (Front_Left.wav says
    "front left") and klettres-data's English letters (alpha/B.ogg says "b"), where installed."""
    found = []
    for path in sorted(ALSA_SOUNDS.glob("*.wav")):
        if path.stem != "Noise":
            found.append(("alsa-utils", path.stem.replace("_", " ").lower(), path))
    for path in sorted(KLETTRES.glob("en*/alpha/*.ogg")):
        found.append(("klettres-data", path.stem.lower(), path))
    return [(source, said, decode_audio(path.read_bytes())) for source, said, path in found]
