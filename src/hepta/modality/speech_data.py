"""The embedded speech data: domain sentences (speech_domain.py) said by eSpeak NG, nothing downloaded.

Recognition examples are said by the split's voice variants at a random rate and pitch, half of
them with white noise at 12-30 dB SNR. Training ones may also be speed-perturbed (`speed_range`):
resampled by a factor near 1 and played at 16 kHz, which moves the formants and the pitch together
as a different vocal tract would, so a few dozen voices stand for many (Ko et al., 2015, "Audio
augmentation for speech recognition"). Held-out utterances are never perturbed. Synthesis examples
are all said by one house voice (eSpeak's plain `en-us` at its default rate and pitch, clean), so
the model learns one consistent voice rather than a random one per sentence; the same voice,
saying the same sentences, is the reference the synthesis metric compares against.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import soxr

from hepta.modality import espeak, speech_domain

HOUSE_RATE, HOUSE_PITCH = 175, 50  # eSpeak's defaults
RATE_RANGE = (130, 210)  # words a minute
PITCH_RANGE = (30, 70)
NOISY_SHARE = 0.5
SNR_RANGE_DB = (12.0, 30.0)
PERTURBED_SHARE = 2 / 3  # of training utterances, given a speed range; the rest stay as eSpeak says them


@dataclass(frozen=True)
class Utterance:
    text: str
    wave: np.ndarray | None  # float32 16 kHz mono (None once encoded, where only its codes are kept)
    voice: str  # an eSpeak variant, or "house"


def voices(split: str) -> list[str]:
    """The voice variants of a split ("train" or "held_out")."""
    want_held_out = {"train": False, "held_out": True}[split]
    return [v for v in espeak.voice_variants()
            if v not in speech_domain.EXCLUDED_VOICES and speech_domain.is_held_out_voice(v) == want_held_out]


def add_noise(wave: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    power = float(np.mean(wave ** 2)) + 1e-12
    noise = rng.standard_normal(len(wave)).astype(np.float32) * np.sqrt(power / 10 ** (snr_db / 10))
    return np.clip(wave + noise, -1.0, 1.0).astype(np.float32)


def speed_perturbed(wave: np.ndarray, factor: float) -> np.ndarray:
    """The wave played `factor` times faster: `factor` > 1 is shorter and higher, formants included."""
    return soxr.resample(wave, espeak.SAMPLE_RATE * factor, espeak.SAMPLE_RATE).astype(np.float32)


def varied_utterances(split: str, count: int, seed: int = 0, speed_range: tuple[float, float] | None = None,
                      voice_split: str | None = None, word_share: float = 0.0) -> list[Utterance]:
    """`count` sentences of the split, each said by one of the split's voices (or `voice_split`'s), rate, pitch and
    noise drawn at random (and for training, with `speed_range`, PERTURBED_SHARE of them sped up or slowed down by
    a factor in it; with `word_share`, that share of the texts random word sequences, speech_domain.sentences)."""
    return list(iter_varied_utterances(split, count, seed, speed_range, voice_split, word_share))


def iter_varied_utterances(split: str, count: int, seed: int = 0, speed_range: tuple[float, float] | None = None,
                           voice_split: str | None = None, word_share: float = 0.0) -> Iterator[Utterance]:
    """varied_utterances one at a time (the first n are the same for any count >= n), so that many
    can be encoded without holding all their waves."""
    if speed_range is not None and split != "train":
        raise ValueError("only training utterances are speed-perturbed; held-out ones stay as eSpeak says them")
    rng = random.Random(f"speech-voices-{split}-{seed}")
    speed_rng = random.Random(f"speech-speed-{seed}")  # its own stream: the texts and voices stay those without
    noise_rng = np.random.default_rng(seed)
    pool = voices(voice_split or split)
    for text in speech_domain.sentences(split, count, seed, word_share):
        voice = rng.choice(pool)
        wave = espeak.synthesize(text, variant=voice, rate=rng.randint(*RATE_RANGE), pitch=rng.randint(*PITCH_RANGE))
        if speed_range is not None and speed_rng.random() < PERTURBED_SHARE:
            wave = speed_perturbed(wave, speed_rng.uniform(*speed_range))
        if rng.random() < NOISY_SHARE:
            wave = add_noise(wave, rng.uniform(*SNR_RANGE_DB), noise_rng)
        yield Utterance(text, wave, voice)


def house_utterance(text: str) -> Utterance:
    return Utterance(text, espeak.synthesize(text, variant=None, rate=HOUSE_RATE, pitch=HOUSE_PITCH), "house")


def house_utterances(split: str, count: int, seed: int = 0) -> list[Utterance]:
    """`count` distinct sentences of the split said by the house voice (what synthesis learns and is
    judged on); fewer where the split's first `4 * count` draws hold fewer."""
    return list(iter_house_utterances(split, count, seed))


def iter_house_utterances(split: str, count: int, seed: int = 0) -> Iterator[Utterance]:
    return (house_utterance(text) for text in house_sentences(split, count, seed))


def house_sentences(split: str, count: int, seed: int = 0) -> list[str]:
    """The texts of house_utterances: distinct sentences among the split's first `4 * count` draws."""
    return list(dict.fromkeys(speech_domain.sentences(split, count * 4, seed)))[:count]
