"""RoPE frequencies with context-extension scaling: default, linear (position interpolation) and
YaRN (NTK-by-parts interpolation plus an attention temperature), as Hugging Face transformers
computes them, so imported checkpoints see the same angles.

Dims: T tokens, Dr rotary dims (the head dim, or MLA's qk_rope_head_dim).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hepta.config import ModelConfig


@dataclass(frozen=True)
class RopeScaling:
    """The scaling part of a RoPE setup (`ModelConfig.rope_*`); `from_config` builds one."""

    rope_type: str = "default"
    factor: float = 1.0  # context extension: new length / original length
    original_max_len: int = 4096  # YaRN: the pretraining context
    beta_fast: float = 32.0  # YaRN: rotations above which a dim is extrapolated (kept) ...
    beta_slow: float = 1.0  # ... and below which it is interpolated (divided by factor)
    truncate: bool = True  # YaRN: round the ramp bounds to whole dims
    mscale: float = 0.0  # YaRN (DeepSeek): temperature numerator weight; 0 = unset
    mscale_all_dim: float = 0.0  # YaRN (DeepSeek): temperature denominator weight; 0 = unset
    attention_factor: float | None = None  # YaRN: cos/sin multiplier; None = derived from factor

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> "RopeScaling":
        return cls(cfg.rope.type, cfg.rope.factor, cfg.rope.original_max_len, cfg.rope.beta_fast, cfg.rope.beta_slow,
                   cfg.rope.truncate, cfg.rope.mscale, cfg.rope.mscale_all_dim, cfg.rope.attention_factor)


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def rope_inv_freq(dim: int, theta: float, scaling: RopeScaling) -> tuple[torch.Tensor, float]:
    """Inverse frequencies [Dr/2] and the factor that multiplies cos and sin."""
    inv_freq = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    if scaling.rope_type == "default":
        return inv_freq, 1.0
    if scaling.rope_type == "linear":
        return inv_freq / scaling.factor, 1.0
    assert scaling.rope_type == "yarn", scaling.rope_type
    s = scaling
    if s.attention_factor is not None:
        attention_factor = s.attention_factor
    elif s.mscale and s.mscale_all_dim:
        attention_factor = yarn_mscale(s.factor, s.mscale) / yarn_mscale(s.factor, s.mscale_all_dim)
    else:
        attention_factor = yarn_mscale(s.factor)

    def correction_dim(num_rotations: float) -> float:  # the dim that turns num_rotations times over the context
        return dim * math.log(s.original_max_len / (num_rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = correction_dim(s.beta_fast), correction_dim(s.beta_slow)
    if s.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    # high-frequency dims (ramp 0) keep their frequency; low-frequency dims (ramp 1) are interpolated
    inv_freq = inv_freq / s.factor * ramp + inv_freq * (1 - ramp)
    return inv_freq, float(attention_factor)


def softmax_scale_multiplier(scaling: RopeScaling) -> float:
    """DeepSeek's YaRN also sharpens the attention softmax by mscale(factor, mscale_all_dim)^2."""
    if scaling.rope_type == "default" or not scaling.mscale_all_dim:
        return 1.0
    return yarn_mscale(scaling.factor, scaling.mscale_all_dim) ** 2


def scaled_rope_cos_sin(positions: torch.Tensor, dim: int, theta: float, scaling: RopeScaling,
                        mrope_section: tuple[int, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [*positions.shape, Dr] in the "rotate half" layout; angles formed in fp32.

    With `mrope_section`, `positions` may hold three rows, [3, B, T] (time, height, width): each
    rotary frequency takes its angle from the row it belongs to (interleaved, as Qwen3-VL assigns
    them), and the tables are [B, T, Dr]. Text has the same position in all three rows, so plain
    positions give the same tables.

    Computed per forward rather than cached in buffers: it is T x Dr/2 work, and it keeps the
    model free of non-parameter state that would need re-initialising after a meta build.
    """
    inv_freq, attention_factor = rope_inv_freq(dim, theta, scaling)
    angles = positions.float()[..., None] * inv_freq.to(positions.device)  # [T, Dr/2] (or [B, T, Dr/2])
    if mrope_section and positions.dim() == 3:  # [3, B, T, Dr/2] -> [B, T, Dr/2]
        row = torch.zeros(dim // 2, dtype=torch.long, device=positions.device)
        for axis, offset in ((1, 1), (2, 2)):  # height, width
            row[offset:3 * mrope_section[axis]:3] = axis
        angles = angles.gather(0, row.expand(1, *angles.shape[1:3], -1)).squeeze(0)
    angles = torch.cat([angles, angles], dim=-1)  # [T, Dr]
    return angles.cos() * attention_factor, angles.sin() * attention_factor
