"""The image tokenizer: a small convolutional autoencoder with an FSQ bottleneck.

An image of `image_size` x `image_size` pixels (`channels` 1 grey or 3 RGB, values in [0, 1])
becomes a grid of (image_size / downsample)^2 discrete codes and back. Saved as
`image_tokenizer/` inside a model folder: `config.json` and `model.safetensors`.

Dims: N images, P pixel channels, S image side, C latent channels, h w code grid (S / downsample).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from hepta.modality.fsq import FSQ
from hepta.modality.image_tokenizer_config import ImageTokenizerConfig
from hepta.modality.tokenizer_folder import load_tokenizer, save_tokenizer

IMAGE_TOKENIZER_DIR = "image_tokenizer"


def _stage(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.GELU())


class ImageTokenizer(nn.Module):
    def __init__(self, config: ImageTokenizerConfig):
        super().__init__()
        self.config = config
        c, hidden = config.channels, config.hidden
        num_halvings = int(math.log2(config.downsample))
        encoder: list[nn.Module] = [_stage(c, hidden)]
        for _ in range(num_halvings):
            encoder += [nn.Conv2d(hidden, hidden, 4, stride=2, padding=1), nn.GELU()]
        encoder += [_stage(hidden, hidden), nn.Conv2d(hidden, len(config.levels), 1)]
        self.encoder = nn.Sequential(*encoder)
        self.quantizer = FSQ(config.levels)
        decoder: list[nn.Module] = [nn.Conv2d(len(config.levels), hidden, 1), nn.GELU(), _stage(hidden, hidden)]
        for _ in range(num_halvings):
            decoder += [nn.ConvTranspose2d(hidden, hidden, 4, stride=2, padding=1), nn.GELU()]
        decoder += [_stage(hidden, hidden), nn.Conv2d(hidden, c, 3, padding=1)]
        self.decoder = nn.Sequential(*decoder)

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    def forward(self, images_NPSS: torch.Tensor) -> torch.Tensor:
        """Reconstruction through the quantized bottleneck (training)."""
        return torch.sigmoid(self.decoder(self.quantizer(self.encoder(images_NPSS * 2 - 1))))

    @torch.no_grad()
    def encode(self, images_NPSS: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> codes [N, h, w]."""
        expected = (self.config.channels, self.config.image_size, self.config.image_size)
        assert tuple(images_NPSS.shape[1:]) == expected, f"images are {tuple(images_NPSS.shape[1:])}, expected {expected}"
        return self.quantizer.to_codes(self.quantizer(self.encoder(images_NPSS.float() * 2 - 1)))

    @torch.no_grad()
    def decode(self, codes_Nhw: torch.Tensor) -> torch.Tensor:
        """Codes [N, h, w] -> images in [0, 1]."""
        return torch.sigmoid(self.decoder(self.quantizer.from_codes(codes_Nhw)))

    # --- the folder -----------------------------------------------------------------------

    def save(self, folder: str | Path) -> None:
        save_tokenizer(self, self.config, folder)

    @classmethod
    def load(cls, folder: str | Path) -> "ImageTokenizer":
        return load_tokenizer(cls, ImageTokenizerConfig, folder, "image")


def load_image_tokenizer(model_folder: str | Path) -> ImageTokenizer | None:
    """The image tokenizer inside a model folder, or None for a text-only model."""
    folder = Path(model_folder) / IMAGE_TOKENIZER_DIR
    return ImageTokenizer.load(folder) if folder.is_dir() else None
