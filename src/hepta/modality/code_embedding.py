"""Image- and audio-code embeddings that start out knowing which codes are alike.

An FSQ code is a point on a grid of levels (for 5*5*5 codes: three coordinates in [-1, 1]), and
two codes one level apart decode to nearly the same patch. A freshly initialised embedding table
knows none of that: every code is an unrelated random vector, and the model must learn from a few
thousand images that code 62 looks like code 63. So the image-code rows start as a random linear
map of the code's coordinates plus an equal share of independent noise: neighbours start close,
every code stays distinguishable, and the scale equals the text rows' (std 0.02). Only the
starting point changes; the table trains as usual and the model does not depend on it.
"""

from __future__ import annotations

import torch

from hepta.modality.fsq import FSQ

INIT_STD = 0.02  # the text rows' init (model/transformer.py: init_weights)


def code_coordinates(fsq: FSQ) -> torch.Tensor:
    """[K, C]: each code's quantised latent, in [-1, 1] per channel."""
    codes = torch.arange(fsq.codebook_size).view(-1, 1, 1)
    return fsq.from_codes(codes).flatten(1)


def structured_code_rows(coordinates_KC: torch.Tensor, dim: int, generator: torch.Generator) -> torch.Tensor:
    """[K, dim] rows: half of the variance a shared random map of the coordinates, half noise."""
    num_codes, num_channels = coordinates_KC.shape
    mean_square = coordinates_KC.pow(2).mean().clamp_min(1e-6)  # 0.5 for 5 evenly spaced levels
    projection_CD = torch.randn(num_channels, dim, generator=generator) / (num_channels * mean_square).sqrt()
    noise_KD = torch.randn(num_codes, dim, generator=generator)
    return INIT_STD * (coordinates_KC @ projection_CD + noise_KD) / 2 ** 0.5


@torch.no_grad()
def init_code_rows(embedding: torch.Tensor, code_start: int, fsq: FSQ, seed: int) -> None:
    """Overwrites the code rows of an embedding (or output) matrix [V, dim] in place: the FSQ's
    codes, whose first id is `code_start` (an image or audio vocabulary's)."""
    generator = torch.Generator().manual_seed(seed)
    rows = structured_code_rows(code_coordinates(fsq), embedding.shape[1], generator)
    embedding[code_start:code_start + fsq.codebook_size] = rows.to(embedding.dtype)
