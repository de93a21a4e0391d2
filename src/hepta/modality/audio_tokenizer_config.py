"""The audio tokenizer's shape, apart from its torch module so that the CLI can read it without torch."""

from __future__ import annotations

import math
from dataclasses import dataclass

SAMPLE_RATE = 16_000
FRAMES_PER_SECOND = 100  # the spectrogram's hop of 10 ms (audio_features.HOP)


@dataclass(frozen=True)
class AudioTokenizerConfig:
    downsample: int = 4  # spectrogram frames per code: 4 -> 25 codes a second
    hidden: int = 128
    levels: tuple[int, ...] = (8, 5, 5, 5)  # FSQ levels per latent channel; codebook = their product

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", tuple(self.levels))
        if self.downsample < 1 or self.downsample & (self.downsample - 1):
            raise ValueError(f"downsample must be a power of two, got {self.downsample}")
        if not self.levels or any(level < 2 for level in self.levels):
            raise ValueError(f"levels must be a non-empty list of integers >= 2, got {list(self.levels)}")
        if self.hidden <= 0:
            raise ValueError(f"hidden must be positive, got {self.hidden}")

    @property
    def codes_per_second(self) -> float:
        return FRAMES_PER_SECOND / self.downsample

    @property
    def samples_per_code(self) -> int:
        return SAMPLE_RATE // FRAMES_PER_SECOND * self.downsample

    def num_codes_for(self, num_samples: int) -> int:
        """How many codes a clip of `num_samples` becomes (its tail padded to a whole code)."""
        frames = num_samples // (SAMPLE_RATE // FRAMES_PER_SECOND) + 1
        return math.ceil(frames / self.downsample)

    @property
    def codebook_size(self) -> int:
        return math.prod(self.levels)
