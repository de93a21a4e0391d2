"""Qwen3-VL-MoE folders: the language model as a hepta `Transformer`, the vision tower beside it.

The language model is Qwen3-MoE's (QK-norm per head, routed experts) with multimodal RoPE
(`rope.mrope_section`): hepta runs it. The vision tower is transformers' own
`Qwen3VLMoeVisionModel`, built from the folder's `vision_config` and filled with its
`model.visual.*` weights: it runs standalone, it is a dense ViT (nothing of it is what hepta is
for), and reusing it keeps every detail of the released model (its 2-D rotary embedding, the
interpolated position table, the patch merger and the DeepStack mergers) exact. It needs
transformers installed; the language model alone does not.

Released folders store the experts transposed (gate_up_proj [E, D, 2F], down_proj [E, F, D]);
folders written by transformers' `save_pretrained` keep its in-memory layout ([E, 2F, D],
[E, D, F]). down_proj tells the two apart whenever F != D; `expert_orientation` reads it from the
file headers before any tensor is copied, so a square gate_up (2F == D) is never guessed.

Dims: E experts, D model dim, F expert hidden dim.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import safe_open

from hepta.errors import HeptaError

TYPE = "qwen3_vl_moe"
VISION_PREFIX = "model.visual."


def text_config(hf: dict) -> dict:
    """The language model's config.json fields, with the folder's choice of tied embeddings."""
    text = dict(hf["text_config"])
    return {**text, "model_type": TYPE, "tie_word_embeddings": hf.get("tie_word_embeddings", False),
            "quantization_config": hf.get("quantization_config")}


def config_changes(text: dict) -> dict:
    """ModelConfig fields of the language model beyond those every type shares: Qwen3-MoE's, plus mrope."""
    rope = text.get("rope_parameters") or text.get("rope_scaling") or {}
    section = rope.get("mrope_section")
    if not section or len(section) != 3:
        raise HeptaError("text_config.rope_parameters.mrope_section in config.json must give three counts "
                         "(time, height, width); restore the folder's original config.json")
    if not rope.get("mrope_interleaved", True):
        raise HeptaError("mrope_interleaved=false (Qwen2.5-VL's sectioned layout) is not supported; hepta runs "
                         "Qwen3-VL's interleaved multimodal RoPE")
    if text.get("attention_bias"):
        raise HeptaError("attention_bias=true is not supported for qwen3_vl_moe; released checkpoints have none")
    return {
        "attention.qk_norm": True, "attention.qk_norm_per_head": True,
        "moe.num_experts": text["num_experts" if "num_experts" in text else "num_local_experts"],
        "router.norm_topk_prob": True, "moe.expert_hidden_dim": text["moe_intermediate_size"],
        "moe.dense_hidden_dim": text["intermediate_size"], "moe.layer_step": text.get("decoder_sparse_step", 1),
        "moe.dense_layers": tuple(text.get("mlp_only_layers") or ()), "rope.mrope_section": tuple(section),
    }


_DOWN = re.compile(r"model\.language_model\.layers\.\d+\.mlp\.experts\.down_proj")


def experts_transposed(files: list[Path], cfg) -> bool:
    """Whether the folder's fused experts are stored transposed (as released) rather than as transformers
    holds them, read from a down_proj's shape in the file headers; the released layout when F == D."""
    D, F = cfg.dim, cfg.moe.expert_hidden_dim
    for file in files:
        if file.suffix != ".safetensors":
            continue
        with safe_open(str(file), framework="pt") as shard:
            for name in shard.keys():
                if _DOWN.fullmatch(name):
                    shape = tuple(shard.get_slice(name).get_shape())
                    return F == D or shape[1:] == (F, D)
    return True


def missing_transformers(what: str) -> HeptaError:
    """The error for a tower or processor that runs on transformers when it is not installed."""
    return HeptaError(f"{what} runs on transformers; install it with pip install 'hepta[vision]'")


def load_vision_tower(folder: str | Path, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """transformers' Qwen3VLMoeVisionModel from the folder's vision_config and `model.visual.*` weights (eval mode)."""
    try:
        from transformers import Qwen3VLMoeVisionConfig
        from transformers.models.qwen3_vl_moe.modeling_qwen3_vl_moe import Qwen3VLMoeVisionModel
    except ImportError as e:
        raise missing_transformers("the Qwen3-VL vision tower") from e
    from hepta.interop.hf_load import checkpoint_dtype, load_tower

    folder = Path(folder)
    hf = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config = Qwen3VLMoeVisionConfig(**hf["vision_config"])
    config._attn_implementation = "sdpa"
    # built for real, not on the meta device: its rotary frequencies are buffers no checkpoint holds
    tower = Qwen3VLMoeVisionModel(config).to(dtype or checkpoint_dtype(hf))
    return load_tower(folder, tower, (VISION_PREFIX,), "vision tower")
