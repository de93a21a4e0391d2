"""Sentence embeddings from a decoder: mean of the final hidden states, L2-normalised.

Dims: B inputs, T tokens (padded), D model dim.
"""

from __future__ import annotations

import torch

from hepta.infer.padding import pad_right
from hepta.model import Transformer


@torch.no_grad()
def pooled_embeddings(model: Transformer, inputs: list[list[int]], dimensions: int | None = None) -> torch.Tensor:
    """[B, D] (or [B, dimensions]: the leading dims, renormalised) unit vectors for token id lists."""
    ids_BT, lengths_B = pad_right(inputs)
    hidden_BTD = model.hidden_states(ids_BT).float()  # causal: right padding never changes real positions
    real_BT = torch.arange(ids_BT.shape[1])[None, :] < lengths_B[:, None]
    mean_BD = (hidden_BTD * real_BT[..., None]).sum(dim=1) / lengths_B[:, None]
    if dimensions is not None:
        mean_BD = mean_BD[:, :dimensions]
    return torch.nn.functional.normalize(mean_BD, dim=-1)
