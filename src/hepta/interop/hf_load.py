"""Open Hugging Face MoE checkpoints (Mixtral, OLMoE, Qwen2-MoE) as hepta models.

The folder's config.json is mapped onto one `ModelConfig`; weights stream shard by shard
into a model whose parameters were allocated once, each tensor copied into place and then
dropped, so the process never holds the weights twice. Per-expert tensors of the classic
layout (`experts.{e}.w1/w2/w3` or `gate_proj/up_proj/down_proj`) are written straight into
hepta's stacked `[E, ...]` parameters; the fused layout (`experts.gate_up_proj`) maps as is.
Every parameter must be filled completely: a missing weight is an error, never random init.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Iterator

import torch
from safetensors import SafetensorError, safe_open

from hepta.config import ModelConfig
from hepta.errors import HeptaError
from hepta.model import Transformer

SUPPORTED_TYPES = ("mixtral", "olmoe", "qwen2_moe")
INDEX_FILE = "model.safetensors.index.json"


def _rope_theta(hf: dict) -> float:
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", None):
        raise HeptaError(f"rope type {rope_type!r} is not supported yet for {hf['model_type']}; "
                         "supported: default")
    return float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))


def config_from_hf(hf: dict) -> ModelConfig:
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_TYPES:
        raise HeptaError(f"model_type {model_type!r} is not supported; hepta loads: {', '.join(SUPPORTED_TYPES)}")
    if hf.get("sliding_window") and hf.get("use_sliding_window", True):
        raise HeptaError(f"sliding_window={hf['sliding_window']} is not supported; set it to null in config.json "
                         "to attend over the full context")
    if hf.get("clip_qkv"):
        raise HeptaError(f"clip_qkv={hf['clip_qkv']} is not supported; models trained with it need it at inference")
    if hf.get("hidden_act", "silu") != "silu":
        raise HeptaError(f"hidden_act={hf['hidden_act']!r} is not supported; hepta experts use silu (SwiGLU)")
    heads = hf["num_attention_heads"]
    common = dict(
        vocab_size=hf["vocab_size"], dim=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
        num_heads=heads, num_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
        rope_theta=_rope_theta(hf), max_seq_len=hf.get("max_position_embeddings", 4096),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)), norm_eps=hf.get("rms_norm_eps", 1e-6),
        top_k=hf["num_experts_per_tok"], expert_hidden_dim=hf["intermediate_size"],
        router_scoring="softmax", aux_loss_coef=hf.get("router_aux_loss_coef", 0.0),
    )
    if model_type == "mixtral":
        return ModelConfig(**common, qk_norm=False, num_experts=hf["num_local_experts"], norm_topk_prob=True)
    if model_type == "qwen2_moe":
        shared = hf.get("shared_expert_intermediate_size") or 0
        return ModelConfig(**{**common, "expert_hidden_dim": hf["moe_intermediate_size"]},
                           qk_norm=False, qkv_bias=bool(hf.get("qkv_bias", True)), num_experts=hf["num_experts"],
                           norm_topk_prob=bool(hf.get("norm_topk_prob", False)),
                           num_shared_experts=1 if shared else 0, shared_expert_hidden_dim=shared or None,
                           shared_expert_gate=bool(shared), dense_hidden_dim=hf["intermediate_size"],
                           moe_layer_step=hf.get("decoder_sparse_step", 1),
                           dense_layers=tuple(hf.get("mlp_only_layers") or ()))
    return ModelConfig(**common, qk_norm=True, qk_norm_per_head=False, num_experts=hf["num_experts"],
                       norm_topk_prob=bool(hf.get("norm_topk_prob", False)))


# HF name -> (hepta parameter, expert index or None, which half of gate_up or None)
_LAYER = r"model\.layers\.(\d+)\."
_RULES: list[tuple[re.Pattern, str]] = [
    (re.compile(r"model\.embed_tokens\.weight"), "embed.weight"),
    (re.compile(r"model\.norm\.weight"), "norm.weight"),
    (re.compile(r"lm_head\.weight"), "output.weight"),
    (re.compile(_LAYER + r"input_layernorm\.weight"), "layers.{0}.attn_norm.weight"),
    (re.compile(_LAYER + r"post_attention_layernorm\.weight"), "layers.{0}.ffn_norm.weight"),
    (re.compile(_LAYER + r"self_attn\.(q_proj|k_proj|v_proj|o_proj|q_norm|k_norm)\.(weight|bias)"), "layers.{0}.attn.{1}.{2}"),
    (re.compile(_LAYER + r"mlp\.shared_expert_gate\.weight"), "layers.{0}.ffn.shared_gate.weight"),
    (re.compile(_LAYER + r"(?:mlp|block_sparse_moe)\.gate\.weight"), "layers.{0}.ffn.router.weight"),
    (re.compile(_LAYER + r"(?:mlp|block_sparse_moe)\.experts\.(gate_up_proj|down_proj)"), "layers.{0}.ffn.experts.{1}"),
]
_EXPERT = re.compile(_LAYER + r"(?:mlp|block_sparse_moe)\.experts\.(\d+)\.(w1|w2|w3|gate_proj|up_proj|down_proj)\.weight")
# a plain SwiGLU: the dense FFN of a dense layer, or the shared experts of an MoE layer
_SWIGLU = re.compile(_LAYER + r"mlp\.(shared_experts?\.)?(gate_proj|up_proj|down_proj)\.weight")
_GATE, _UP, _DOWN = ("w1", "gate_proj"), ("w3", "up_proj"), ("w2", "down_proj")


def _target(name: str, params: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """The (view of the) hepta parameter a Hugging Face tensor fills, or None if it has none."""
    match = _EXPERT.fullmatch(name)
    if match:
        layer, expert, which = match.group(1), int(match.group(2)), match.group(3)
        experts = f"layers.{layer}.ffn.experts."
        if which in _DOWN:
            return params[experts + "down_proj"][expert]
        gate_up = params[experts + "gate_up_proj"][expert]
        half = gate_up.shape[0] // 2
        return gate_up[:half] if which in _GATE else gate_up[half:]
    match = _SWIGLU.fullmatch(name)
    if match:
        layer, shared, which = match.groups()
        ffn = f"layers.{layer}.ffn." + ("shared_experts." if shared else "")
        if which == "down_proj":
            return params.get(ffn + "down_proj.weight")
        gate_up = params.get(ffn + "gate_up_proj.weight")
        if gate_up is None:
            return None
        half = gate_up.shape[0] // 2
        return gate_up[:half] if which == "gate_proj" else gate_up[half:]
    for pattern, template in _RULES:
        match = pattern.fullmatch(name)
        if match:
            key = template.format(*match.groups())
            return params.get(key)
    return None


PICKLE_INDEX_FILE = "pytorch_model.bin.index.json"


def _weight_files(folder: Path, allow_pickle: bool) -> list[Path]:
    """safetensors shards (from the index, else *.safetensors); pickle files only when allowed."""
    for index, pattern in ((folder / INDEX_FILE, None), (None, "*.safetensors"),
                           (folder / PICKLE_INDEX_FILE, None), (None, "*.bin")):
        if index is not None and index.is_file():
            files = _files_of_index(index)
        elif pattern is not None:
            files = sorted(folder.glob(pattern))
        else:
            continue
        if files:
            if files[0].suffix == ".bin" and not allow_pickle:
                raise HeptaError(f"{folder} holds only pickle weights (.bin), which can run code when read; "
                                 "convert them to safetensors, or pass allow_pickle=True (--allow-pickle) to read "
                                 "them with torch.load(weights_only=True)")
            return files
    raise HeptaError(f"{folder} holds no *.safetensors weights")


def _files_of_index(index: Path) -> list[Path]:
    try:
        return sorted({index.parent / f for f in json.loads(index.read_text())["weight_map"].values()})
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise HeptaError(f"{index} is not a valid shard index ({e}); restore it") from e


def _tensors(file: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs of one weights file, one tensor in memory at a time.

    A safetensors file is reopened per tensor: the mapping is dropped after each copy, so its
    pages never add up in the process's resident memory (a large single-file checkpoint would
    otherwise be resident twice: once mapped, once in the model).
    """
    if file.suffix == ".bin":
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        yield from state.items()
        return
    with safe_open(str(file), framework="pt") as shard:
        names = list(shard.keys())
    for name in names:
        with safe_open(str(file), framework="pt") as shard:
            tensor = shard.get_tensor(name)
        yield name, tensor


def load_hf(folder: str | Path, allow_pickle: bool = False) -> Transformer:
    folder = Path(folder)
    hf = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    cfg = config_from_hf(hf)
    with torch.device("meta"):
        model = Transformer(cfg)
    model.to_empty(device="cpu")  # one allocation of every parameter, filled below
    if cfg.tie_embeddings:
        model.output.weight = model.embed.weight
    with torch.no_grad():
        for buffer in model.buffers():  # routing bias and load counters start at zero
            buffer.zero_()
    params = dict(model.named_parameters(remove_duplicate=True))
    filled = {name: 0 for name in params}
    owner = {id(t): name for name, t in params.items()}
    with torch.no_grad():
        for file in _weight_files(folder, allow_pickle):
            if not file.is_file():
                raise HeptaError(f"{file} is listed in the index but missing; the checkpoint is incomplete")
            try:
                for name, tensor in _tensors(file):
                    if cfg.tie_embeddings and name == "lm_head.weight":
                        continue  # the same matrix as the embedding
                    target = _target(name, params)
                    if target is None:
                        if name.endswith("rotary_emb.inv_freq"):
                            continue  # a cache some exports include, recomputed by hepta
                        raise HeptaError(f"tensor {name!r} in {file.name} has no place in a {hf['model_type']} "
                                         "model of this config; is config.json from the same model?")
                    if tuple(tensor.shape) != tuple(target.shape):
                        raise HeptaError(f"tensor {name!r} in {file.name} has shape {tuple(tensor.shape)}, "
                                         f"config.json implies {tuple(target.shape)}")
                    target.copy_(tensor)
                    del tensor
                    base = target._base if target._base is not None else target
                    filled[owner[id(base)]] += target.numel()
            except (SafetensorError, pickle.UnpicklingError, RuntimeError, EOFError) as e:
                raise HeptaError(f"{file} is corrupt or truncated ({type(e).__name__}: {e}); "
                                 "restore it from the original download") from e
    missing = [name for name, count in filled.items() if count != params[name].numel()]
    if missing:
        raise HeptaError(f"{folder} lacks weights for {missing[:3]}{' ...' if len(missing) > 3 else ''}; "
                         "the checkpoint is incomplete (hepta never initialises a missing weight at random)")
    return model.eval()
