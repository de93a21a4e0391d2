"""Smear: each input embedding takes in a gated share of the previous token's.

    x_t <- x_t + scale * sigmoid(gate(x_t[:SMEAR_GATE_WIDTH])) * x_{t-1}

An induction head (look back for an earlier occurrence of the token just read, copy what followed it)
needs two attention layers in a plain transformer: one writes "the token before me" into each position,
the next matches the current token against it. With the previous token already in every embedding, one
layer can make that match, so the look-up a long prompt's answers rest on ("which digit appeared third":
the digit after the caption that says 3) forms much sooner (the smeared keys of Olsson et al., 2022,
"In-context learning and induction heads"; the smear gate of the modded-nanogpt speedruns). `scale`
starts at 0, so a model starts as one without it and learns how much to take.

Dims: B batch, T tokens, D model dim.
"""

from __future__ import annotations

import torch
from torch import nn

from hepta.config.model_config import SMEAR_GATE_WIDTH


class Smear(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gate = nn.Linear(min(SMEAR_GATE_WIDTH, dim), 1)
        self.scale = nn.Parameter(torch.zeros(()))

    def forward(self, x_BTD: torch.Tensor, previous_BTD: torch.Tensor) -> torch.Tensor:
        """`previous_BTD`: each position's previous input embedding (zeros where a sequence starts)."""
        share_BT1 = self.scale * torch.sigmoid(self.gate(x_BTD[..., :self.gate.in_features]))
        return x_BTD + share_BT1 * previous_BTD

    def reset_parameters(self) -> None:
        self.gate.reset_parameters()
        nn.init.zeros_(self.scale)
