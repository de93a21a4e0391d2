"""gpt-oss folders: the config fields, the experts' layouts on disk, and MXFP4 expert weights.

gpt-oss differs from the other MoE types in its attention (a bias on every projection, a learned
sink logit per head, sliding-window layers alternating with full ones), its router (a bias on the
logits) and its experts (biases, a clamped SwiGLU, and gate and up columns interleaved). hepta's
model has each of these as a config field; this module maps the folder onto them.

Dims: E experts, D model dim, F expert hidden dim, G groups of 32 values, 16 bytes per group.

Experts in transformers' layout (and in bf16 folders):
    gate_up_proj [E, D, 2F]  column 2f is gate f, column 2f + 1 is up f
    gate_up_proj_bias [E, 2F]  interleaved the same way
    down_proj [E, F, D]
hepta holds gate_up_proj [E, 2F, D] with gate rows first, then up rows, and down_proj [E, D, F].
Released checkpoints store the expert matrices as MXFP4 (`quant_method: mxfp4`):
    {gate_up,down}_proj_blocks [E, rows, G, 16] uint8: two 4-bit values a byte, low nibble first
    {gate_up,down}_proj_scales [E, rows, G] uint8: a power of two per group of 32, biased by 127
with rows the output dim (2F interleaved, or D) and the groups along the input dim.
"""

from __future__ import annotations

from typing import Callable

import torch

from hepta.errors import HeptaError

# transformers' GptOssConfig defaults, for config.json files that leave them out
DEFAULT_ROPE = {"rope_type": "yarn", "rope_theta": 150000.0, "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                "truncate": False, "original_max_position_embeddings": 4096}

# the E2M1 values of the 16 codes of a 4-bit MXFP4 element
FP4_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)
MXFP4_SUFFIXES = ("_blocks", "_scales")


def config_changes(hf: dict) -> dict:
    """The ModelConfig fields of a gpt_oss config.json beyond those every type shares."""
    layer_types = hf.get("layer_types") or ["sliding_attention" if i % 2 == 0 else "full_attention"
                                            for i in range(hf["num_hidden_layers"])]
    unknown = set(layer_types) - {"sliding_attention", "full_attention"}
    if unknown:
        raise HeptaError(f"layer_types in config.json holds {sorted(unknown)}; gpt_oss layers are "
                         "'sliding_attention' or 'full_attention'")
    window = hf.get("sliding_window")
    sliding = tuple(i for i, kind in enumerate(layer_types) if kind == "sliding_attention") if window else ()
    bias = bool(hf.get("attention_bias", True))
    return {
        "attention.qk_norm": False, "attention.qkv_bias": bias, "attention.o_bias": bias, "attention.sinks": True,
        "attention.sliding_window": window if sliding else None, "attention.sliding_window_layers": sliding,
        "moe.num_experts": hf["num_local_experts"], "router.norm_topk_prob": True, "router.logit_bias": True,
        "moe.expert_proj_bias": True, "moe.expert_activation": "clamped_swiglu",
        "moe.swiglu_alpha": float(hf.get("swiglu_alpha", 1.702)), "moe.swiglu_limit": float(hf.get("swiglu_limit", 7.0)),
    }


def check_quantization(quant: object) -> None:
    """Only MXFP4 experts are read (dequantised on load); anything else is refused by name."""
    method = quant.get("quant_method", "?") if isinstance(quant, dict) else "?"
    if method != "mxfp4":
        raise HeptaError(f"quantization_config (quant_method {method!r}) is not supported for gpt_oss; hepta reads "
                         "mxfp4 experts and unquantized weights")


def dequantize_mxfp4(blocks: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[E, rows, G, 16] uint8 codes and [E, rows, G] uint8 exponents -> [E, rows, G * 32] values.

    One expert at a time, so the fp32 intermediates stay one expert's size. Values times powers
    of two are exact in fp32 and in bf16 alike, so the result equals transformers' dequantisation.
    """
    if blocks.shape[:-1] != scales.shape or blocks.shape[-1] != 16:
        raise HeptaError(f"MXFP4 blocks {tuple(blocks.shape)} and scales {tuple(scales.shape)} do not pair up "
                         "(blocks [..., groups, 16], scales [..., groups]); the checkpoint is damaged")
    lut = torch.tensor(FP4_VALUES, dtype=torch.float32)
    out = torch.empty(*scales.shape[:-1], scales.shape[-1] * 32, dtype=dtype)
    for e in range(blocks.shape[0]):
        codes = blocks[e].to(torch.int64)
        values = torch.stack([lut[codes & 0x0F], lut[codes >> 4]], dim=-1).flatten(-2)  # [rows, G, 32]
        exponents = scales[e].to(torch.int32) - 127
        out[e] = torch.ldexp(values, exponents[..., None].float()).flatten(-2).to(dtype)
    return out


def expert_target(kind: str, experts: torch.nn.Module, dequantized: bool) -> tuple[torch.Tensor, tuple[int, ...]]:
    """(a view of hepta's parameter laid out as the folder's tensor, with its interleaved gate/up dim split in
    two, and the shape the folder's tensor must have) for one expert tensor of a gpt_oss folder; `kind` is
    gate_up_proj, gate_up_proj_bias, down_proj or down_proj_bias. Dequantised MXFP4 matrices come with rows =
    outputs ([E, 2F, D], [E, D, F]). The folder's tensor, reshaped to the view's shape, copies straight in."""
    E, D, F = experts.down_proj.shape
    if kind == "gate_up_proj_bias":  # [E, 2F] interleaved -> [E, F, 2] over hepta's [E, 2, F]
        return experts.gate_up_bias.view(E, 2, F).transpose(1, 2), (E, 2 * F)
    if kind == "down_proj_bias":
        return experts.down_bias, (E, D)
    if kind == "gate_up_proj" and dequantized:  # [E, 2F, D] rows interleaved -> [E, F, 2, D]
        return experts.gate_up_proj.view(E, 2, F, D).transpose(1, 2), (E, 2 * F, D)
    if kind == "gate_up_proj":  # [E, D, 2F] columns interleaved -> [E, D, F, 2]
        return experts.gate_up_proj.view(E, 2, F, D).permute(0, 3, 2, 1), (E, D, 2 * F)
    if dequantized:  # down_proj [E, D, F]
        return experts.down_proj, (E, D, F)
    return experts.down_proj.transpose(1, 2), (E, F, D)  # down_proj [E, F, D]


def folder_expert_layouts(experts: torch.nn.Module) -> list[tuple[str, torch.Tensor, Callable]]:
    """(name suffix, hepta parameter, the function that gives it in transformers' layout) for one layer's
    experts, as a bf16/fp32 gpt_oss folder holds them; the writer calls each function when its shard is written."""
    E, D, F = experts.down_proj.shape
    return [
        ("gate_up_proj", experts.gate_up_proj, lambda w: w.view(E, 2, F, D).permute(0, 3, 2, 1).reshape(E, D, 2 * F)),
        ("gate_up_proj_bias", experts.gate_up_bias, lambda b: b.view(E, 2, F).transpose(1, 2).reshape(E, 2 * F)),
        ("down_proj", experts.down_proj, lambda w: w.transpose(1, 2)),
        ("down_proj_bias", experts.down_bias, lambda b: b),
    ]
