"""Open Hugging Face MoE checkpoints (Mixtral, OLMoE, Qwen2-MoE, Qwen3-MoE, DeepSeek-V3, gpt-oss, Qwen3.5-MoE,
Qwen3-VL-MoE, Qwen3-Omni-MoE's thinker) as hepta models.

The folder's config.json is mapped onto one `ModelConfig`; weights stream shard by shard
into a model whose parameters were allocated once, each tensor copied into place and then
dropped, so the process never holds the weights twice. Per-expert tensors of the classic
layout (`experts.{e}.w1/w2/w3` or `gate_proj/up_proj/down_proj`) are written straight into
hepta's stacked `[E, ...]` parameters; the fused layout (`experts.gate_up_proj`) maps as is.
Every parameter must be filled completely: a missing weight is an error, never random init.
gpt-oss's own layouts and its MXFP4 experts are `gpt_oss.py`'s. Of a Qwen3.5-MoE folder (the
multimodal `qwen3_5_moe` as released, or the text-only `qwen3_5_moe_text`) the language model is
read; its vision tower and multi-token-prediction weights are left on disk. Of a Qwen3-VL-MoE
folder the language model is read here and the vision tower by `qwen3_vl.load_vision_tower`; of a
Qwen3-Omni-MoE folder the thinker's language model (its audio tower: `qwen3_omni_audio.py`).
"""

from __future__ import annotations

import json
import math
import pickle
import re
from pathlib import Path
from typing import Iterator

import torch
from safetensors import SafetensorError, safe_open

from hepta.checkpoint import INDEX_FILE, index_files
from hepta.config import ROPE_TYPES, ModelConfig
from hepta.errors import HeptaError
from hepta.interop import gpt_oss, qwen3_omni_audio, qwen3_vl
from hepta.model import Transformer
from hepta.model.mla import deinterleave_rope_rows

SUPPORTED_TYPES = ("mixtral", "olmoe", "qwen2_moe", "qwen3_moe", "deepseek_v3", "gpt_oss", "qwen3_5_moe",
                   "qwen3_5_moe_text", "qwen3_vl_moe", *qwen3_omni_audio.TYPES)
QWEN3_5 = ("qwen3_5_moe", "qwen3_5_moe_text")


def _rope(hf: dict) -> dict:
    """ModelConfig's rope fields (dotted names) from `rope_parameters` (transformers 5) or `rope_scaling`
    (older files)."""
    key = "rope_parameters" if hf.get("rope_parameters") else "rope_scaling"
    rope = hf.get(key) or {}
    rope_type = rope.get("rope_type", rope.get("type")) or "default"
    if rope_type not in ROPE_TYPES:
        raise HeptaError(f"{key}.rope_type={rope_type!r} in config.json is not supported; "
                         f"supported: {', '.join(ROPE_TYPES)}")
    fields = {"rope.theta": float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))), "rope.type": rope_type}
    if rope_type == "linear":
        fields.update({"rope.factor": float(rope["factor"])})
    elif rope_type == "yarn":
        original = rope.get("original_max_position_embeddings")
        if not original:
            raise HeptaError(f"{key} of type yarn lacks original_max_position_embeddings; add the pretraining "
                             "context length to config.json")
        factor = rope.get("factor") or hf["max_position_embeddings"] / original
        fields.update({"rope.factor": float(factor), "rope.original_max_len": int(original),
                       "rope.beta_fast": float(rope.get("beta_fast") or 32),
                       "rope.beta_slow": float(rope.get("beta_slow") or 1),
                       "rope.truncate": bool(rope.get("truncate", True)), "rope.mscale": float(rope.get("mscale") or 0),
                       "rope.mscale_all_dim": float(rope.get("mscale_all_dim") or 0),
                       "rope.attention_factor": rope.get("attention_factor")})
    return fields


def config_from_hf(hf: dict) -> ModelConfig:
    try:
        return _config_from_hf(hf)
    except KeyError as e:
        raise HeptaError(f"config.json of this {hf.get('model_type')} model lacks the field {e.args[0]!r}; "
                         "restore the folder's original config.json") from e


def text_config(hf: dict) -> dict:
    """The language model's config: multimodal Qwen3.5-MoE and Qwen3-VL-MoE config.json files nest it in
    text_config."""
    if hf.get("model_type") == qwen3_vl.TYPE:
        return qwen3_vl.text_config(hf)
    if hf.get("model_type") in qwen3_omni_audio.TYPES:
        return qwen3_omni_audio.text_config(hf)
    if hf.get("model_type") != "qwen3_5_moe":
        return hf
    text = dict(hf["text_config"])
    return {**text, "model_type": "qwen3_5_moe",
            "tie_word_embeddings": hf.get("tie_word_embeddings", text.get("tie_word_embeddings", False)),
            "quantization_config": hf.get("quantization_config")}


def _config_from_hf(hf: dict) -> ModelConfig:
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_TYPES:
        raise HeptaError(f"model_type {model_type!r} is not supported; hepta loads: {', '.join(SUPPORTED_TYPES)}")
    hf = text_config(hf)
    if model_type in QWEN3_5:  # every layer is MoE: the experts' width is the only FFN width
        hf = {**hf, "intermediate_size": hf["moe_intermediate_size"]}
    if model_type == "gpt_oss":
        if hf.get("quantization_config"):
            gpt_oss.check_quantization(hf["quantization_config"])
        if not (hf.get("rope_parameters") or hf.get("rope_scaling") or "rope_theta" in hf):
            hf = {**hf, "rope_parameters": gpt_oss.DEFAULT_ROPE}
    elif hf.get("sliding_window") and hf.get("use_sliding_window", True):
        raise HeptaError(f"sliding_window={hf['sliding_window']} is not supported; set it to null in config.json "
                         "to attend over the full context")
    elif hf.get("quantization_config"):
        quant = hf["quantization_config"]
        method = quant.get("quant_method", "?") if isinstance(quant, dict) else "?"
        raise HeptaError(f"quantization_config (quant_method {method!r}) is not supported; hepta reads unquantized "
                         "weights, so use a bf16 or fp32 version of the checkpoint")
    if hf.get("clip_qkv"):
        raise HeptaError(f"clip_qkv={hf['clip_qkv']} is not supported; models trained with it need it at inference")
    if hf.get("hidden_act", "silu") != "silu":
        raise HeptaError(f"hidden_act={hf['hidden_act']!r} is not supported; hepta experts use silu (SwiGLU)")
    heads = hf["num_attention_heads"]
    common = {
        "vocab_size": hf["vocab_size"], "dim": hf["hidden_size"], "num_layers": hf["num_hidden_layers"],
        "attention.num_heads": heads, "attention.num_kv_heads": hf.get("num_key_value_heads") or heads,
        "attention.head_dim": hf.get("head_dim") or hf["hidden_size"] // heads,
        **_rope(hf), "max_seq_len": hf.get("max_position_embeddings", 4096),
        "tie_embeddings": bool(hf.get("tie_word_embeddings", False)), "norm_eps": hf.get("rms_norm_eps", 1e-6),
        "moe.top_k": hf["num_experts_per_tok"], "moe.expert_hidden_dim": hf["intermediate_size"],
        "router.scoring": "softmax", "router.aux_loss_coef": hf.get("router_aux_loss_coef", 0.0),
    }
    if model_type == "gpt_oss":
        return ModelConfig().with_changes({**common, **gpt_oss.config_changes(hf)})
    if model_type in QWEN3_5:
        return ModelConfig().with_changes({**common, **_qwen3_5_changes(hf)})
    if model_type == qwen3_vl.TYPE:
        return ModelConfig().with_changes({**common, **qwen3_vl.config_changes(hf)})
    if model_type == "mixtral":
        return ModelConfig().with_changes({**common, "attention.qk_norm": False,
                                           "moe.num_experts": hf["num_local_experts"], "router.norm_topk_prob": True})
    if model_type == "deepseek_v3":
        if hf.get("attention_bias"):
            raise HeptaError("attention_bias=true is not supported for deepseek_v3; hepta's MLA projections "
                             "have no bias")
        # defaults are those of transformers' DeepseekV3Config
        return ModelConfig().with_changes({
            **common, "attention.num_kv_heads": heads, "moe.expert_hidden_dim": hf["moe_intermediate_size"],
            "router.scoring": "sigmoid",
            "attention.qk_norm": False, "attention.kind": "mla", "attention.q_lora_rank": hf.get("q_lora_rank"),
            "attention.kv_lora_rank": hf["kv_lora_rank"], "attention.qk_rope_head_dim": hf["qk_rope_head_dim"],
            "attention.qk_nope_head_dim": hf["qk_nope_head_dim"], "attention.v_head_dim": hf["v_head_dim"],
            "moe.num_experts": hf["n_routed_experts"], "moe.num_shared_experts": hf.get("n_shared_experts", 1),
            "moe.num_dense_layers": hf.get("first_k_dense_replace", 3),
            "moe.dense_hidden_dim": hf["intermediate_size"],
            "router.norm_topk_prob": bool(hf.get("norm_topk_prob", True)),
            "router.route_scale": float(hf.get("routed_scaling_factor", 2.5)),
            "router.num_expert_groups": hf.get("n_group", 8), "router.num_limited_groups": hf.get("topk_group", 4)})
    if model_type == "qwen2_moe":
        shared = hf.get("shared_expert_intermediate_size") or 0
        return ModelConfig().with_changes({
            **common, "moe.expert_hidden_dim": hf["moe_intermediate_size"],
            "attention.qk_norm": False, "attention.qkv_bias": bool(hf.get("qkv_bias", True)),
            "moe.num_experts": hf["num_experts"], "router.norm_topk_prob": bool(hf.get("norm_topk_prob", False)),
            "moe.num_shared_experts": 1 if shared else 0, "moe.shared_expert_hidden_dim": shared or None,
            "moe.shared_expert_gate": bool(shared), "moe.dense_hidden_dim": hf["intermediate_size"],
            "moe.layer_step": hf.get("decoder_sparse_step", 1),
            "moe.dense_layers": tuple(hf.get("mlp_only_layers") or ())})
    if model_type in ("qwen3_moe", *qwen3_omni_audio.TYPES):  # Qwen3-Omni's thinker decodes as Qwen3-MoE does
        if hf.get("attention_bias"):
            raise HeptaError("attention_bias=true is not supported for qwen3_moe (it puts a bias on o_proj too); "
                             "released Qwen3-MoE checkpoints have none")
        # QK-norm per head over head_dim, no shared expert; dense layers as Qwen2-MoE places them
        return ModelConfig().with_changes({
            **common, "moe.expert_hidden_dim": hf["moe_intermediate_size"],
            "attention.qk_norm": True, "attention.qk_norm_per_head": True,
            # released configs say num_experts; transformers 5 writes it as num_local_experts
            "moe.num_experts": hf["num_experts" if "num_experts" in hf else "num_local_experts"],
            "router.norm_topk_prob": bool(hf.get("norm_topk_prob", False)),
            "moe.dense_hidden_dim": hf["intermediate_size"], "moe.layer_step": hf.get("decoder_sparse_step", 1),
            "moe.dense_layers": tuple(hf.get("mlp_only_layers") or ())})
    return ModelConfig().with_changes({**common, "attention.qk_norm": True, "attention.qk_norm_per_head": False,
                                       "moe.num_experts": hf["num_experts"],
                                       "router.norm_topk_prob": bool(hf.get("norm_topk_prob", False))})


def _qwen3_5_changes(hf: dict) -> dict:
    """Qwen3.5-MoE: Gated DeltaNet layers beside gated softmax attention with partial RoPE, zero-centred norms,
    routed experts plus a gated shared expert in every layer."""
    layers = hf["num_hidden_layers"]
    interval = hf.get("full_attention_interval", 4)
    layer_types = hf.get("layer_types") or ["full_attention" if (i + 1) % interval == 0 else "linear_attention"
                                            for i in range(layers)]
    unknown = set(layer_types) - {"full_attention", "linear_attention"}
    if unknown:
        raise HeptaError(f"layer_types in config.json holds {sorted(unknown)}; Qwen3.5 layers are "
                         "'full_attention' or 'linear_attention'")
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    head_dim = hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"]
    bias = bool(hf.get("attention_bias", False))
    shared = hf.get("shared_expert_intermediate_size") or 0
    return {
        "zero_centered_norms": True, "attention.qk_norm": True, "attention.qk_norm_per_head": True,
        "attention.gated": True, "attention.qkv_bias": bias, "attention.o_bias": bias,
        # text positions are the same in mrope's three sections, so mrope reduces to plain RoPE here
        "attention.rotary_dim": int(head_dim * float(rope.get("partial_rotary_factor",
                                                              hf.get("partial_rotary_factor", 0.25)))),
        "attention.linear_layers": tuple(i for i, kind in enumerate(layer_types) if kind == "linear_attention"),
        "attention.linear_num_key_heads": hf["linear_num_key_heads"],
        "attention.linear_num_value_heads": hf["linear_num_value_heads"],
        "attention.linear_key_head_dim": hf["linear_key_head_dim"],
        "attention.linear_value_head_dim": hf["linear_value_head_dim"],
        "attention.linear_conv_kernel": hf.get("linear_conv_kernel_dim", 4),
        "moe.num_experts": hf["num_experts"], "router.norm_topk_prob": True,
        "moe.num_shared_experts": 1 if shared else 0, "moe.shared_expert_hidden_dim": shared or None,
        "moe.shared_expert_gate": bool(shared),
    }


# HF name -> (hepta parameter, expert index or None, which half of gate_up or None)
_LAYER = r"model\.layers\.(\d+)\."
_RULES: list[tuple[re.Pattern, str]] = [
    (re.compile(r"model\.embed_tokens\.weight"), "embed.weight"),
    (re.compile(r"model\.norm\.weight"), "norm.weight"),
    (re.compile(r"lm_head\.weight"), "output.weight"),
    (re.compile(_LAYER + r"input_layernorm\.weight"), "layers.{0}.attn_norm.weight"),
    (re.compile(_LAYER + r"post_attention_layernorm\.weight"), "layers.{0}.ffn_norm.weight"),
    (re.compile(_LAYER + r"self_attn\.(q_proj|k_proj|v_proj|o_proj|q_norm|k_norm)\.(weight|bias)"), "layers.{0}.attn.{1}.{2}"),
    (re.compile(_LAYER + r"self_attn\.(q_a_proj|q_a_layernorm|q_b_proj|kv_a_proj_with_mqa|kv_a_layernorm|kv_b_proj)"
                r"\.weight"), "layers.{0}.attn.{1}.weight"),  # multi-head latent attention
    (re.compile(_LAYER + r"self_attn\.sinks"), "layers.{0}.attn.sinks"),
    (re.compile(_LAYER + r"linear_attn\.(in_proj_qkv|in_proj_z|in_proj_b|in_proj_a|conv1d|norm|out_proj)\.weight"),
     "layers.{0}.attn.{1}.weight"),  # Gated DeltaNet
    (re.compile(_LAYER + r"linear_attn\.(dt_bias|A_log)"), "layers.{0}.attn.{1}"),
    (re.compile(_LAYER + r"mlp\.router\.(weight|bias)"), "layers.{0}.ffn.router.{1}"),  # gpt-oss
    (re.compile(_LAYER + r"mlp\.gate\.e_score_correction_bias"), "layers.{0}.ffn.router.expert_bias"),
    (re.compile(_LAYER + r"mlp\.shared_expert_gate\.weight"), "layers.{0}.ffn.shared_gate.weight"),
    (re.compile(_LAYER + r"(?:mlp|block_sparse_moe)\.gate\.weight"), "layers.{0}.ffn.router.weight"),
    (re.compile(_LAYER + r"(?:mlp|block_sparse_moe)\.experts\.(gate_up_proj|down_proj)"), "layers.{0}.ffn.experts.{1}"),
]
_EXPERT = re.compile(_LAYER + r"(?:mlp|block_sparse_moe)\.experts\.(\d+)\.(w1|w2|w3|gate_proj|up_proj|down_proj)\.weight")
# a plain SwiGLU: the dense FFN of a dense layer, or the shared experts of an MoE layer
_SWIGLU = re.compile(_LAYER + r"mlp\.(shared_experts?\.)?(gate_proj|up_proj|down_proj)\.weight")
_GATE, _UP, _DOWN = ("w1", "gate_proj"), ("w3", "up_proj"), ("w2", "down_proj")
_GPT_OSS_EXPERTS = re.compile(_LAYER + r"mlp\.experts\.(gate_up_proj|down_proj|gate_up_proj_bias|down_proj_bias)")
_MLA_ROPE_ROWS = re.compile(_LAYER + r"self_attn\.(q_proj|q_b_proj|kv_a_proj_with_mqa)\.weight")


def _rope_rows_to_half_layout(name: str, tensor: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """DeepSeek stores the rope rows of q and of the shared key as interleaved pairs (rope_interleave);
    hepta's RoPE rotates halves, so those rows are reordered once here (same attention scores)."""
    match = _MLA_ROPE_ROWS.fullmatch(name)
    if match is None:
        return tensor
    R = cfg.attention.qk_rope_head_dim
    if match.group(2) == "kv_a_proj_with_mqa":
        return deinterleave_rope_rows(tensor, cfg.attention.kv_lora_rank + R, cfg.attention.kv_lora_rank, R)
    return deinterleave_rope_rows(tensor, cfg.attention.qk_nope_head_dim + R, cfg.attention.qk_nope_head_dim, R)


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
            files = index_files(index)
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


def _tensors(file: Path) -> Iterator[tuple[str, torch.Tensor | _Rows]]:
    """(name, tensor) pairs of one weights file, one tensor in memory at a time.

    A safetensors file is reopened per tensor: the mapping is dropped after each copy, so its
    pages never add up in the process's resident memory (a large single-file checkpoint would
    otherwise be resident twice: once mapped, once in the model).
    """
    if file.suffix == ".bin":
        try:
            state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "zipfile" not in str(e):
                raise
            state = torch.load(file, map_location="cpu", weights_only=True)  # the pre-1.6 torch format
        yield from state.items()
        return
    with safe_open(str(file), framework="pt") as shard:
        names = list(shard.keys())
    for name in names:
        with safe_open(str(file), framework="pt") as shard:
            stored = shard.get_slice(name)
            shape = tuple(stored.get_shape())
            row_bytes = math.prod(shape[1:]) * _DTYPE_BYTES.get(stored.get_dtype(), 4) if shape else 0
            if len(shape) >= 3 and shape[0] > 1 and shape[0] * row_bytes > _READ_BYTES:
                yield name, _Rows(file, name, shape, max(1, _READ_BYTES // row_bytes))
                continue
            tensor = shard.get_tensor(name)
        yield name, tensor


# A tensor above this size (a layer's fused experts) is read this many bytes of its first dim at a time
_READ_BYTES = 8 << 20
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


class _Rows:
    """A large tensor of a safetensors file, read a few rows of its first dim at a time. The file is
    reopened for each read and the rows dropped once copied, so only those rows' pages are ever
    resident beside the model (a tensor from the file is backed by its mapping: reading it whole
    would keep all its pages resident until it is dropped)."""

    def __init__(self, file: Path, name: str, shape: tuple[int, ...], rows_per_read: int):
        self.file, self.name, self.shape, self.rows_per_read = file, name, shape, rows_per_read

    def parts(self) -> Iterator[tuple[int, torch.Tensor]]:
        for start in range(0, self.shape[0], self.rows_per_read):
            with safe_open(str(self.file), framework="pt") as shard:
                rows = shard.get_slice(self.name)[start:start + self.rows_per_read]
            yield start, rows


def _whole(tensor: torch.Tensor | _Rows) -> torch.Tensor:
    if not isinstance(tensor, _Rows):
        return tensor
    with safe_open(str(tensor.file), framework="pt") as shard:
        return shard.get_tensor(tensor.name)


def _copy_into(target: torch.Tensor, source: torch.Tensor | _Rows, transpose: bool = False) -> None:
    """Copies the folder's tensor into hepta's parameter (or a view of it of the same size, whose shape the
    source is reshaped to: gpt-oss's interleaved experts); `transpose` swaps its last two dims first."""
    if isinstance(source, _Rows):
        for start, rows in source.parts():
            _copy_into(target[start:start + rows.shape[0]], rows, transpose)
        return
    source = source.transpose(1, 2) if transpose else source.reshape(target.shape)
    if target.is_contiguous() or target.dim() < 3:
        target.copy_(source)
    else:  # a strided view: by expert, so that any scratch copy torch makes is one expert's, not the layer's
        for target_e, source_e in zip(target, source):
            target_e.copy_(source_e)


def load_tower(folder: Path, tower: torch.nn.Module, prefixes: tuple[str, ...], what: str) -> torch.nn.Module:
    """Fill `tower` (a vision or audio encoder built from the folder's config) with the folder's tensors under the
    first of `prefixes` each name starts with, the prefix stripped; every weight must fit. Returns it in eval mode."""
    state = {}
    for file in _weight_files(folder, allow_pickle=False):
        with safe_open(str(file), framework="pt") as shard:
            for name in shard.keys():
                prefix = next((p for p in prefixes if name.startswith(p)), None)
                if prefix is not None:
                    state[name.removeprefix(prefix)] = shard.get_tensor(name)
    missing, unexpected = tower.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise HeptaError(f"{folder}'s {what} weights do not fit its config (missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]}); is config.json from the same model?")
    return tower.eval()


def checkpoint_dtype(hf: dict) -> torch.dtype:
    """The dtype the folder's weights are stored in (config `dtype`, or the older `torch_dtype`)."""
    name = hf.get("dtype") or hf.get("torch_dtype") or "float32"
    dtype = getattr(torch, str(name).removeprefix("torch."), None)
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else torch.float32


def load_hf(folder: str | Path, allow_pickle: bool = False, dtype: torch.dtype | None = None) -> Transformer:
    """`dtype` None keeps the checkpoint's dtype, so a bf16 model is not held at twice its size."""
    folder = Path(folder)
    hf = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    cfg = config_from_hf(hf)
    with torch.device("meta"):
        model = Transformer(cfg).to(dtype or checkpoint_dtype(hf))
    for module in model.modules():  # routing bias and load counters stay fp32, as the router computes
        for key, buffer in module._buffers.items():
            if buffer is not None:
                module._buffers[key] = buffer.float()
    model.to_empty(device="cpu")  # one allocation of every parameter, filled below
    if cfg.tie_embeddings:
        model.output.weight = model.embed.weight
    with torch.no_grad():
        for buffer in model.buffers():  # routing bias and load counters start at zero
            buffer.zero_()
    params = dict(model.named_parameters(remove_duplicate=True))
    targets = {**dict(model.named_buffers()), **params}  # buffers (the routing bias) are optional
    interleaved_rope = cfg.attention.kind == "mla" and hf.get("rope_interleave", True)
    filled = {name: 0 for name in params}
    owner = {id(t): name for name, t in params.items()}
    mxfp4_parts: dict[str, dict[str, torch.Tensor]] = {}  # an MXFP4 matrix's blocks or scales, until both are read
    files = _weight_files(folder, allow_pickle)
    transposed_experts = hf["model_type"] == qwen3_vl.TYPE and qwen3_vl.experts_transposed(files, cfg)
    with torch.no_grad():
        for file in files:
            if not file.is_file():
                raise HeptaError(f"{file} is listed in the index but missing; the checkpoint is incomplete")
            try:
                for name, tensor in _tensors(file):
                    if cfg.tie_embeddings and name == "lm_head.weight":
                        continue  # the same matrix as the embedding
                    layer = re.match(_LAYER, name)
                    if hf["model_type"] == "deepseek_v3" and layer and int(layer.group(1)) >= cfg.num_layers:
                        continue  # the multi-token-prediction module, which hepta does not run
                    if hf["model_type"] in qwen3_omni_audio.TYPES:
                        name = qwen3_omni_audio.language_model_name(name)
                        if name is None:
                            continue  # the audio and vision towers (loaded apart, if at all), the talker
                    if hf["model_type"] in (*QWEN3_5, qwen3_vl.TYPE):
                        if name.startswith(("mtp.", qwen3_vl.VISION_PREFIX)):
                            continue  # multi-token prediction, and the vision tower (loaded apart, if at all)
                        name = name.replace("model.language_model.", "model.", 1)
                    dequantized = False
                    if hf["model_type"] == "gpt_oss" and name.endswith(gpt_oss.MXFP4_SUFFIXES):
                        base, part = name.rsplit("_", 1)
                        parts = mxfp4_parts.setdefault(base, {})
                        parts[part] = tensor
                        if len(parts) < 2:
                            continue
                        del mxfp4_parts[base]
                        name, dequantized = base, True
                        tensor = gpt_oss.dequantize_mxfp4(_whole(parts["blocks"]), _whole(parts["scales"]),
                                                          model.embed.weight.dtype)
                    experts = _GPT_OSS_EXPERTS.fullmatch(name) if hf["model_type"] == "gpt_oss" else None
                    if experts:
                        module = model.layers[int(experts.group(1))].ffn.experts
                        target, expected = gpt_oss.expert_target(experts.group(2), module, dequantized)
                    else:
                        target = _target(name, targets)
                        expected = None if target is None else tuple(target.shape)
                    transpose = transposed_experts and name.endswith(("experts.gate_up_proj", "experts.down_proj"))
                    if transpose and target is not None:  # released Qwen3-VL-MoE: [E, D, 2F] and [E, F, D]
                        expected = (expected[0], expected[2], expected[1])
                    if target is None:
                        if name.endswith("rotary_emb.inv_freq"):
                            continue  # a cache some exports include, recomputed by hepta
                        raise HeptaError(f"tensor {name!r} in {file.name} has no place in a {hf['model_type']} "
                                         "model of this config; is config.json from the same model?")
                    if tuple(tensor.shape) != expected:
                        raise HeptaError(f"tensor {name!r} in {file.name} has shape {tuple(tensor.shape)}, "
                                         f"config.json implies {expected}")
                    if interleaved_rope:
                        tensor = _rope_rows_to_half_layout(name, _whole(tensor), cfg)
                    _copy_into(target, tensor, transpose)
                    del tensor
                    base = target._base if target._base is not None else target
                    if id(base) in owner:
                        filled[owner[id(base)]] += target.numel()
            except (SafetensorError, pickle.UnpicklingError, RuntimeError, EOFError) as e:
                raise HeptaError(f"{file} is corrupt or truncated ({type(e).__name__}: {e}); "
                                 "restore it from the original download") from e
    if mxfp4_parts:
        name, parts = next(iter(mxfp4_parts.items()))
        raise HeptaError(f"{folder} holds {name}_{next(iter(parts))} without its "
                         f"{'scales' if 'blocks' in parts else 'blocks'}; the checkpoint is incomplete")
    missing = [name for name, count in filled.items() if count != params[name].numel()]
    if missing:
        raise HeptaError(f"{folder} lacks weights for {missing[:3]}{' ...' if len(missing) > 3 else ''}; "
                         "the checkpoint is incomplete (hepta never initialises a missing weight at random)")
    return model.eval()
