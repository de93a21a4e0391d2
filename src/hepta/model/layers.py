"""Small building blocks: RMSNorm, rotary position embedding, SwiGLU.

Dims: B batch, T tokens, H heads, Dh head dim, D model dim, F hidden dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hepta.model.matvec import Linear


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, zero_centered: bool = False):
        """zero_centered: the weight is stored around 0 and scales by (1 + weight), as Qwen3.5 keeps it; the 1 is
        added in fp32, so a bf16 weight loses nothing of its small part."""
        super().__init__()
        self.eps, self.zero_centered = eps, zero_centered
        self.weight = nn.Parameter(torch.zeros(dim) if zero_centered else torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # statistics in fp32 even under bf16 autocast: the mean of squares underflows otherwise
        scale = self.weight.float() + 1 if self.zero_centered else self.weight.float()
        return F.rms_norm(x.float(), (x.shape[-1],), scale, self.eps).to(x.dtype)

    def reset_parameters(self) -> None:
        (nn.init.zeros_ if self.zero_centered else nn.init.ones_)(self.weight)


def apply_rope(x_BHTDh: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotates [B, H, T, Dh] (or [B, T, Dh]) by tables [T, Dr], or [B, T, Dr] when positions differ per sequence;
    with Dr < Dh (partial rotary) only the first Dr dims turn and the rest pass through."""
    if cos.dim() == 3 and x_BHTDh.dim() == 4:
        cos, sin = cos[:, None], sin[:, None]  # broadcast over heads
    rotary = cos.shape[-1]
    if rotary < x_BHTDh.shape[-1]:
        return torch.cat([apply_rope(x_BHTDh[..., :rotary], cos, sin), x_BHTDh[..., rotary:]], dim=-1)
    x1, x2 = x_BHTDh.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (x_BHTDh * cos + rotated * sin).to(x_BHTDh.dtype)


class SwiGLU(nn.Module):
    """Dense feed-forward: down(silu(gate(x)) * up(x)); gate and up share one matmul."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.gate_up_proj = Linear(dim, 2 * hidden_dim, bias=False)
        self.down_proj = Linear(hidden_dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)
