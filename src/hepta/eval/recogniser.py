"""The independent judge of speech: pocketsphinx, restricted to the speech domain.

It is no part of hepta: CMU's recogniser with the English acoustic model its PyPI wheel ships,
and a trigram language model (pocketsphinx's own ARPA builder) over training sentences of the
domain, so it only hears the domain's words and knows how they go together, but has never seen a
held-out sentence. It judges hepta's speech (`tts`) and, as `reference_wer`, eSpeak NG's own
audio of the same sentences.

Measured on clean eSpeak speech of 40 held-out sentences: the trigram model gives 0.13 WER where
a grammar or a unigram over the bare word list gives 0.55-0.75; pocketsphinx's acoustic model
was trained on human speech and needs the context. Each clip gets 0.3 s of silence either side
and dither at -80 dB: without them it drops first words and mis-hears digital silence.
"""

from __future__ import annotations

import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from hepta.modality import speech_domain
from hepta.modality.audio_features import SAMPLE_RATE

LANGUAGE_MODEL_SENTENCES = 20000
PAD_SECONDS = 0.3
DITHER = 1e-4


class DomainRecogniser:
    def __init__(self, training_sentences: Sequence[str]):
        from pocketsphinx import Config, Decoder
        from pocketsphinx.lm import ArpaBoLM

        language_model = ArpaBoLM(text="\n".join(training_sentences) + "\n", add_start=True)
        language_model.compute()
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "domain.lm"
            with path.open("w", encoding="utf-8") as f:
                language_model.write(f)
            self.decoder = Decoder(Config(samprate=SAMPLE_RATE, loglevel="FATAL", lm=str(path)))
        self.rng = np.random.default_rng(0)

    def transcribe(self, wave: np.ndarray) -> str:
        """What it hears in one 16 kHz clip in [-1, 1], as lower-case words."""
        pad = np.zeros(round(PAD_SECONDS * SAMPLE_RATE), dtype=np.float32)
        padded = np.concatenate([pad, np.asarray(wave, dtype=np.float32), pad])
        padded += DITHER * self.rng.standard_normal(len(padded)).astype(np.float32)
        pcm = (np.clip(padded, -1, 1) * 32767).astype("<i2").tobytes()
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()
        hypothesis = self.decoder.hyp()
        return hypothesis.hypstr.lower().strip() if hypothesis is not None else ""


@lru_cache(maxsize=1)
def domain_recogniser() -> DomainRecogniser:
    return DomainRecogniser(speech_domain.sentences("train", LANGUAGE_MODEL_SENTENCES, seed=7))


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Word errors (substitutions, deletions, insertions) over all reference words of a corpus."""
    import jiwer

    return float(jiwer.wer(list(references), [h if h else "<silence>" for h in hypotheses]))
