"""The image tokenizer's shape, apart from its torch module so that the CLI can read it without torch."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ImageTokenizerConfig:
    image_size: int = 8
    channels: int = 1
    downsample: int = 2  # code grid side = image_size / downsample
    hidden: int = 64
    levels: tuple[int, ...] = (8, 5, 5)  # FSQ levels per latent channel; codebook = their product

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", tuple(self.levels))
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {self.channels}")
        if self.downsample < 1 or self.downsample & (self.downsample - 1):
            raise ValueError(f"downsample must be a power of two, got {self.downsample}")
        if self.image_size <= 0 or self.image_size % self.downsample:
            raise ValueError(f"image_size {self.image_size} must be a positive multiple of downsample {self.downsample}")
        if not self.levels or any(level < 2 for level in self.levels):
            raise ValueError(f"levels must be a non-empty list of integers >= 2, got {list(self.levels)}")
        if self.hidden <= 0:
            raise ValueError(f"hidden must be positive, got {self.hidden}")

    @property
    def grid_size(self) -> int:
        return self.image_size // self.downsample

    @property
    def codebook_size(self) -> int:
        return math.prod(self.levels)
