"""Write hepta models as Hugging Face folders (Mixtral, OLMoE, Qwen2-MoE, Qwen3-MoE, DeepSeek-V3, gpt-oss, Qwen3.5-MoE)
that transformers opens.

Dims: E experts, F expert hidden dim, D model dim.

The folder holds config.json in the target's own fields and the weights in the classic
per-expert layout that transformers' save_pretrained writes (`experts.{e}.w1/w2/w3` for
Mixtral, `experts.{e}.gate_proj/up_proj/down_proj` for OLMoE), sharded with an index above
a size limit. hepta's stacked `gate_up_proj [E, 2F, D]` is cut into gate rows and up rows
per expert. A config the target cannot express is refused before anything is written:
silently dropping a feature would give a model that loads and then computes something else.
Training-only coefficients without a counterpart in the target (z_loss_coef,
bias_update_rate) do not change the forward pass and are not carried over.

The folder is built beside the target under a temporary name and renamed into place, so a
crash never leaves a folder at the target path that looks complete and is not.

DeepSeek-V3 (multi-head latent attention) is written with rope_interleave=true, as released
checkpoints are: the loader reordered the rope rows of q_proj/q_b_proj and kv_a_proj_with_mqa
to hepta's rotate-half layout, and the writer puts them back into interleaved pairs. Its
aux-loss-free routing bias (router.expert_bias) is written as e_score_correction_bias.

gpt-oss is written unquantized (in the model's dtype), its experts fused in transformers' layout
with gate and up interleaved (`gpt_oss.folder_expert_layouts`). Qwen3.5-MoE is written as its
language model alone (`qwen3_5_moe_text`, which transformers opens as Qwen3_5MoeForCausalLM).
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import save_file

from hepta.checkpoint import DEFAULT_MAX_SHARD_BYTES, INDEX_FILE, WEIGHTS_FILE, shard_groups
from hepta.config import ModelConfig
from hepta.errors import HeptaError
from hepta.fileio import fsync_dir
from hepta.interop import gpt_oss
from hepta.model import Transformer
from hepta.model.mla import deinterleave_rope_rows

TARGET_TYPES = ("mixtral", "olmoe", "qwen2_moe", "qwen3_moe", "deepseek_v3", "gpt_oss", "qwen3_5_moe_text")

_ARCHITECTURES = {"mixtral": "MixtralForCausalLM", "olmoe": "OlmoeForCausalLM", "qwen2_moe": "Qwen2MoeForCausalLM",
                  "qwen3_moe": "Qwen3MoeForCausalLM", "deepseek_v3": "DeepseekV3ForCausalLM",
                  "gpt_oss": "GptOssForCausalLM", "qwen3_5_moe_text": "Qwen3_5MoeForCausalLM"}
_MOE = {"mixtral": "block_sparse_moe", "olmoe": "mlp", "qwen2_moe": "mlp", "qwen3_moe": "mlp", "deepseek_v3": "mlp",
        "gpt_oss": "mlp", "qwen3_5_moe_text": "mlp"}
_SWIGLU_NAMES = ("gate_proj", "up_proj", "down_proj")
_EXPERT_NAMES = {"mixtral": ("w1", "w3", "w2"), "olmoe": _SWIGLU_NAMES, "qwen2_moe": _SWIGLU_NAMES,
                 "qwen3_moe": _SWIGLU_NAMES, "deepseek_v3": _SWIGLU_NAMES,
                 "qwen3_5_moe_text": _SWIGLU_NAMES}  # gate, up, down
_MLA_PROJS = ("q_a_proj", "q_a_layernorm", "q_b_proj", "q_proj", "kv_a_proj_with_mqa", "kv_a_layernorm", "kv_b_proj",
              "o_proj")


# ModelConfig fields that `check_representable` checks, `hf_config` maps, or this module knows not to change the
# forward pass
# (training-only coefficients; dense_hidden_dim and the shared-expert gate without such layers;
# expert groups without group limiting; the MLA dims with attention.kind="gqa"; the rope
# fields other than rope.type with rope.type="default"; head_dim and num_kv_heads with MLA).
_CHECKED_FIELDS = {
    "vocab_size", "dim", "num_layers", "max_seq_len", "tie_embeddings", "norm_eps",
    "attention.kind", "attention.num_heads", "attention.num_kv_heads", "attention.head_dim", "attention.qk_norm",
    "attention.qk_norm_per_head", "attention.qkv_bias", "attention.q_lora_rank", "attention.kv_lora_rank",
    "attention.qk_rope_head_dim", "attention.qk_nope_head_dim", "attention.v_head_dim",
    "rope.theta", "rope.type", "rope.factor", "rope.original_max_len", "rope.beta_fast", "rope.beta_slow",
    "rope.truncate", "rope.mscale", "rope.mscale_all_dim", "rope.attention_factor",
    "moe.num_experts", "moe.top_k", "moe.expert_hidden_dim", "moe.num_shared_experts", "moe.shared_expert_hidden_dim",
    "moe.shared_expert_gate", "moe.num_dense_layers", "moe.layer_step", "moe.dense_layers", "moe.dense_hidden_dim",
    "router.scoring", "router.norm_topk_prob", "router.route_scale", "router.num_expert_groups",
    "router.num_limited_groups", "router.aux_loss_coef", "router.z_loss_coef", "router.bias_update_rate",
    "router.capacity_factor",
}
# what gpt_oss writes beyond those (every other type refuses these away from their defaults)
_GPT_OSS_FIELDS = {"attention.o_bias", "attention.sinks", "attention.sliding_window", "attention.sliding_window_layers",
                   "moe.expert_proj_bias", "moe.expert_activation", "moe.swiglu_alpha", "moe.swiglu_limit",
                   "router.logit_bias"}
# and what qwen3_5_moe_text writes
_QWEN3_5_FIELDS = {"zero_centered_norms", "attention.gated", "attention.rotary_dim", "attention.o_bias",
                   "attention.linear_layers", "attention.linear_num_key_heads", "attention.linear_num_value_heads",
                   "attention.linear_key_head_dim", "attention.linear_value_head_dim", "attention.linear_conv_kernel"}


def infer_type(cfg: ModelConfig) -> str:
    """deepseek_v3 for latent attention, gpt_oss for attention sinks, qwen3_5_moe_text for linear-attention layers
    or gated attention, qwen2_moe for a gated shared expert, olmoe for one QK-norm over all heads, qwen3_moe for a
    QK-norm per head, mixtral for none."""
    if cfg.attention.kind == "mla":
        return "deepseek_v3"
    if cfg.attention.sinks:
        return "gpt_oss"
    if cfg.attention.linear_layers or cfg.attention.gated:
        return "qwen3_5_moe_text"
    if cfg.moe.shared_expert_gate:
        return "qwen2_moe"
    if not cfg.attention.qk_norm:
        return "mixtral"
    return "qwen3_moe" if cfg.attention.qk_norm_per_head else "olmoe"


def check_representable(cfg: ModelConfig, model_type: str) -> None:
    """Raise a HeptaError naming the first field of `cfg` that `model_type` cannot express."""
    if model_type not in TARGET_TYPES:
        raise HeptaError(f"model_type {model_type!r} cannot be written; hepta writes: {', '.join(TARGET_TYPES)}")

    def refuse(field: str, supported: str) -> None:
        raise HeptaError(f"{field}={cfg.get(field)!r} cannot be written as {model_type}, "
                         f"which supports only {supported}")

    if model_type == "deepseek_v3":
        _check_deepseek(cfg, refuse)
        _check_unknown_fields(cfg, refuse)
        return
    if model_type == "gpt_oss":
        _check_gpt_oss(cfg, refuse)
        _check_unknown_fields(cfg, refuse, also_checked=_GPT_OSS_FIELDS)
        return
    if model_type == "qwen3_5_moe_text":
        _check_qwen3_5(cfg, refuse)
        _check_unknown_fields(cfg, refuse, also_checked=_QWEN3_5_FIELDS)
        return
    if cfg.attention.kind != "gqa":
        refuse("attention.kind", "'gqa' (multi-head latent attention is written as deepseek_v3)")
    if cfg.rope.type != "default":
        refuse("rope.type", "'default' (RoPE scaling is written only for deepseek_v3)")
    if model_type == "qwen2_moe":
        # dense layers, sparse steps and QKV bias map onto Qwen's own fields; the shared expert must
        # be there with its sigmoid gate
        if not (cfg.moe.shared_hidden_dim and cfg.moe.shared_expert_gate):
            refuse("moe.shared_expert_gate",
                   "True with a shared expert (shared_expert_hidden_dim or num_shared_experts)")
        if cfg.attention.qk_norm:
            refuse("attention.qk_norm", "False (no QK-norm)")
    elif model_type == "qwen3_moe":
        # dense layers and sparse steps map onto the same fields as Qwen2-MoE; no shared expert, no bias
        if not (cfg.attention.qk_norm and cfg.attention.qk_norm_per_head):
            refuse("attention.qk_norm_per_head", "True with qk_norm=True (a QK-norm per head)")
        if cfg.moe.num_shared_experts or cfg.moe.shared_hidden_dim:
            refuse("moe.num_shared_experts", "0 (routed experts only)")
        if cfg.attention.qkv_bias:
            refuse("attention.qkv_bias", "False (no attention biases)")
    else:
        for field, every_layer_moe in (("moe.num_dense_layers", 0), ("moe.dense_layers", ()), ("moe.layer_step", 1)):
            if cfg.get(field) != every_layer_moe:
                refuse(field, f"{every_layer_moe!r} (every layer MoE)")
        if cfg.moe.num_shared_experts:
            refuse("moe.num_shared_experts", "0 (routed experts only)")
        if cfg.moe.shared_hidden_dim:
            refuse("moe.shared_expert_hidden_dim", "None (no shared experts)")
        if cfg.attention.qkv_bias:
            refuse("attention.qkv_bias", "False (no attention biases)")
    if cfg.router.scoring != "softmax":
        refuse("router.scoring", "'softmax'")
    if cfg.router.route_scale != 1.0:
        refuse("router.route_scale", "1.0")
    if cfg.router.num_limited_groups < cfg.router.num_expert_groups:
        refuse("router.num_limited_groups", "num_limited_groups == num_expert_groups (no group-limited routing)")
    if cfg.router.capacity_factor is not None:
        refuse("router.capacity_factor", "None (dropless routing)")
    if model_type == "mixtral":
        if cfg.attention.qk_norm:
            refuse("attention.qk_norm", "False (no QK-norm)")
        if not cfg.router.norm_topk_prob:
            refuse("router.norm_topk_prob", "True (top-k gate weights renormalised)")
    elif model_type == "olmoe":
        if not cfg.attention.qk_norm:
            refuse("attention.qk_norm", "True (with qk_norm_per_head=False)")
        if cfg.attention.qk_norm_per_head:
            refuse("attention.qk_norm_per_head", "False (one QK-norm over all heads)")
        if cfg.attention.num_heads * cfg.attention.head_dim != cfg.dim:
            refuse("attention.head_dim",
                   f"dim // num_heads = {cfg.dim // cfg.attention.num_heads} (its QK-norm is as wide as dim)")
    _check_unknown_fields(cfg, refuse)


def _check_deepseek(cfg: ModelConfig, refuse) -> None:
    """DeepSeek-V3: MLA, sigmoid routing with optional group limits, first-k dense layers, plain shared experts."""
    if cfg.attention.kind != "mla":
        refuse("attention.kind", "'mla' (multi-head latent attention)")
    if cfg.attention.qk_norm:
        refuse("attention.qk_norm", "False (no QK-norm)")
    if cfg.attention.qkv_bias:
        refuse("attention.qkv_bias", "False (no attention biases)")
    for field, value in (("moe.dense_layers", ()), ("moe.layer_step", 1)):
        if cfg.get(field) != value:
            refuse(field, f"{value!r} (dense layers only as the first num_dense_layers)")
    if cfg.moe.shared_expert_gate:
        refuse("moe.shared_expert_gate", "False (ungated shared experts)")
    shared, F = cfg.moe.shared_hidden_dim, cfg.moe.expert_hidden_dim
    if not shared or shared % F:
        field = ("moe.shared_expert_hidden_dim" if cfg.moe.shared_expert_hidden_dim is not None
                 else "moe.num_shared_experts")
        refuse(field, f"shared experts a whole multiple (>= 1) of expert_hidden_dim={F} wide")
    if cfg.router.scoring != "sigmoid":
        refuse("router.scoring", "'sigmoid'")
    if cfg.router.num_expert_groups < 1 or cfg.moe.num_experts % cfg.router.num_expert_groups:
        refuse("router.num_expert_groups", "a divisor of num_experts")
    if cfg.moe.num_experts // cfg.router.num_expert_groups < 2:
        refuse("router.num_expert_groups", "groups of at least 2 experts (a group scores by its top-2 experts)")
    if cfg.router.capacity_factor is not None:
        refuse("router.capacity_factor", "None (dropless routing)")
    if cfg.rope.type == "linear" and cfg.rope.mscale_all_dim:
        refuse("rope.mscale_all_dim", "0 with rope.type='linear' (mscale is written for yarn only)")


def _check_gpt_oss(cfg: ModelConfig, refuse) -> None:
    """gpt-oss: sinks, biases on attention (all four or none), router and experts, the clamped SwiGLU, every layer
    MoE with routed experts only, softmax over the top-k."""
    a = cfg.attention
    if a.kind != "gqa":
        refuse("attention.kind", "'gqa'")
    if a.qk_norm:
        refuse("attention.qk_norm", "False (no QK-norm)")
    if a.qkv_bias != a.o_bias:
        refuse("attention.o_bias", f"{a.qkv_bias} (the same as attention.qkv_bias: one attention_bias for all four)")
    for field, value in (("attention.sinks", True), ("moe.expert_proj_bias", True), ("router.logit_bias", True),
                         ("moe.expert_activation", "clamped_swiglu"), ("router.scoring", "softmax"),
                         ("router.norm_topk_prob", True), ("router.route_scale", 1.0), ("moe.num_dense_layers", 0),
                         ("moe.dense_layers", ()), ("moe.layer_step", 1), ("moe.num_shared_experts", 0),
                         ("moe.shared_expert_hidden_dim", None), ("router.capacity_factor", None)):
        if cfg.get(field) != value:
            refuse(field, repr(value))
    if cfg.router.num_limited_groups < cfg.router.num_expert_groups:
        refuse("router.num_limited_groups", "num_limited_groups == num_expert_groups (no group-limited routing)")
    if cfg.rope.type == "yarn" and (cfg.rope.mscale or cfg.rope.mscale_all_dim):
        refuse("rope.mscale", "0 (DeepSeek's mscale is written for deepseek_v3 only)")


def _check_qwen3_5(cfg: ModelConfig, refuse) -> None:
    """Qwen3.5-MoE: zero-centred norms, gated attention with a QK-norm per head (one attention_bias for all four
    projections), every layer MoE with a sigmoid-gated shared expert, softmax over the renormalised top-k."""
    a = cfg.attention
    for field, value in (("attention.kind", "gqa"), ("zero_centered_norms", True), ("attention.gated", True),
                         ("attention.qk_norm", True), ("attention.qk_norm_per_head", True),
                         ("moe.shared_expert_gate", True), ("router.scoring", "softmax"),
                         ("router.norm_topk_prob", True), ("router.route_scale", 1.0), ("moe.num_dense_layers", 0),
                         ("moe.dense_layers", ()), ("moe.layer_step", 1), ("router.capacity_factor", None)):
        if cfg.get(field) != value:
            refuse(field, repr(value))
    if a.qkv_bias != a.o_bias:
        refuse("attention.o_bias", f"{a.qkv_bias} (the same as attention.qkv_bias: one attention_bias for all four)")
    if not cfg.moe.shared_hidden_dim:
        refuse("moe.shared_expert_hidden_dim", "a shared expert (every Qwen3.5-MoE layer has one)")
    if cfg.router.num_limited_groups < cfg.router.num_expert_groups:
        refuse("router.num_limited_groups", "num_limited_groups == num_expert_groups (no group-limited routing)")
    if cfg.rope.type == "yarn" and (cfg.rope.mscale or cfg.rope.mscale_all_dim):
        refuse("rope.mscale", "0 (DeepSeek's mscale is written for deepseek_v3 only)")


def _check_unknown_fields(cfg: ModelConfig, refuse, also_checked: set[str] = frozenset()) -> None:
    # A field added to ModelConfig after this writer changes the model in ways it cannot know:
    # refuse it unless it is at its default.
    defaults = ModelConfig()
    for name in cfg.field_names():
        if name not in _CHECKED_FIELDS and name not in also_checked and cfg.get(name) != defaults.get(name):
            refuse(name, f"{defaults.get(name)!r} (this writer does not map {name})")


def hf_config(cfg: ModelConfig, model_type: str, dtype: torch.dtype = torch.float32) -> dict:
    """config.json of the Hugging Face folder (assumes `check_representable` passed)."""
    hf = {
        "architectures": [_ARCHITECTURES[model_type]],
        "model_type": model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.moe.expert_hidden_dim,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.attention.num_heads,
        "num_key_value_heads": cfg.attention.num_kv_heads,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_parameters": {"rope_type": "default", "rope_theta": float(cfg.rope.theta)},
        "tie_word_embeddings": cfg.tie_embeddings,
        "num_experts_per_tok": cfg.moe.top_k,
        "router_aux_loss_coef": cfg.router.aux_loss_coef,
        "output_router_logits": False,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "use_cache": True,
        # hepta's ModelConfig holds no special token ids; the tokenizer files carry them
        "bos_token_id": None, "eos_token_id": None, "pad_token_id": None,
        "dtype": str(dtype).removeprefix("torch."),
    }
    if model_type == "mixtral":
        hf.update(head_dim=cfg.attention.head_dim, num_local_experts=cfg.moe.num_experts, router_jitter_noise=0.0,
                  sliding_window=None)
    elif model_type == "qwen2_moe":
        dense = sorted(set(range(cfg.moe.num_dense_layers)) | set(cfg.moe.dense_layers))
        hf.update(head_dim=cfg.attention.head_dim, intermediate_size=cfg.moe.dense_hidden_dim,
                  moe_intermediate_size=cfg.moe.expert_hidden_dim,
                  shared_expert_intermediate_size=cfg.moe.shared_hidden_dim, num_experts=cfg.moe.num_experts,
                  norm_topk_prob=cfg.router.norm_topk_prob, qkv_bias=cfg.attention.qkv_bias,
                  decoder_sparse_step=cfg.moe.layer_step, mlp_only_layers=dense, use_sliding_window=False,
                  sliding_window=None)
    elif model_type == "qwen3_moe":
        dense = sorted(set(range(cfg.moe.num_dense_layers)) | set(cfg.moe.dense_layers))
        hf.update(head_dim=cfg.attention.head_dim, intermediate_size=cfg.moe.dense_hidden_dim,
                  moe_intermediate_size=cfg.moe.expert_hidden_dim, num_experts=cfg.moe.num_experts,
                  norm_topk_prob=cfg.router.norm_topk_prob, attention_bias=False,
                  decoder_sparse_step=cfg.moe.layer_step, mlp_only_layers=dense, use_sliding_window=False,
                  sliding_window=None)
    elif model_type == "deepseek_v3":
        a, moe, router = cfg.attention, cfg.moe, cfg.router
        hf.update(intermediate_size=moe.dense_hidden_dim, moe_intermediate_size=moe.expert_hidden_dim,
                  num_key_value_heads=a.num_heads, head_dim=a.qk_rope_head_dim,
                  n_routed_experts=moe.num_experts, n_shared_experts=moe.shared_hidden_dim // moe.expert_hidden_dim,
                  first_k_dense_replace=moe.num_dense_layers, routed_scaling_factor=float(router.route_scale),
                  norm_topk_prob=router.norm_topk_prob, n_group=router.num_expert_groups,
                  topk_group=router.num_limited_groups, q_lora_rank=a.q_lora_rank, kv_lora_rank=a.kv_lora_rank,
                  qk_rope_head_dim=a.qk_rope_head_dim, qk_nope_head_dim=a.qk_nope_head_dim, v_head_dim=a.v_head_dim,
                  rope_interleave=True, attention_bias=False, rope_parameters=_rope_parameters(cfg),
                  num_nextn_predict_layers=0)
    elif model_type == "gpt_oss":
        a, moe = cfg.attention, cfg.moe
        hf.update(head_dim=a.head_dim, num_local_experts=moe.num_experts, attention_bias=a.qkv_bias,
                  sliding_window=a.sliding_window,
                  layer_types=["sliding_attention" if a.window(i) else "full_attention" for i in range(cfg.num_layers)],
                  swiglu_alpha=float(moe.swiglu_alpha), swiglu_limit=float(moe.swiglu_limit),
                  rope_parameters=_rope_parameters(cfg))
    elif model_type == "qwen3_5_moe_text":
        a, moe = cfg.attention, cfg.moe
        del hf["intermediate_size"]  # every layer is MoE; the config has only the experts' widths
        hf.update(head_dim=a.head_dim, num_experts=moe.num_experts, moe_intermediate_size=moe.expert_hidden_dim,
                  shared_expert_intermediate_size=moe.shared_hidden_dim, attention_bias=a.qkv_bias,
                  layer_types=["linear_attention" if i in a.linear_layers else "full_attention"
                               for i in range(cfg.num_layers)],
                  linear_num_key_heads=a.linear_num_key_heads, linear_num_value_heads=a.linear_num_value_heads,
                  linear_key_head_dim=a.linear_key_head_dim, linear_value_head_dim=a.linear_value_head_dim,
                  linear_conv_kernel_dim=a.linear_conv_kernel,
                  rope_parameters={**_rope_parameters(cfg), "partial_rotary_factor": a.rope_dim / a.head_dim})
    else:
        hf.update(num_experts=cfg.moe.num_experts, norm_topk_prob=cfg.router.norm_topk_prob, attention_bias=False,
                  clip_qkv=None)
    return hf


def _rope_parameters(cfg: ModelConfig) -> dict:
    """rope_parameters of transformers 5 for hepta's rope fields (as `hf_load._rope` reads them)."""
    rope = {"rope_type": cfg.rope.type, "rope_theta": float(cfg.rope.theta)}
    if cfg.rope.type == "linear":
        rope.update(factor=float(cfg.rope.factor))
    elif cfg.rope.type == "yarn":
        rope.update(factor=float(cfg.rope.factor), original_max_position_embeddings=cfg.rope.original_max_len,
                    beta_fast=float(cfg.rope.beta_fast), beta_slow=float(cfg.rope.beta_slow),
                    truncate=cfg.rope.truncate, mscale=float(cfg.rope.mscale),
                    mscale_all_dim=float(cfg.rope.mscale_all_dim))
        if cfg.rope.attention_factor is not None:
            rope.update(attention_factor=float(cfg.rope.attention_factor))
    return rope


def _tensor_plan(model: Transformer, model_type: str) -> list[tuple[str, torch.Tensor]]:
    """(HF name, hepta tensor or view) in HF order; views are copied only when their shard is written."""
    cfg = model.config
    plan = [("model.embed_tokens.weight", model.embed.weight)]
    for i, layer in enumerate(model.layers):
        prefix = f"model.layers.{i}."
        plan += [(prefix + "input_layernorm.weight", layer.attn_norm.weight),
                 (prefix + "post_attention_layernorm.weight", layer.ffn_norm.weight)]
        attn = layer.attn
        if model_type == "deepseek_v3":
            plan += _mla_plan(prefix + "self_attn.", attn, cfg)
        if i in cfg.attention.linear_layers:  # Gated DeltaNet, under Qwen3.5's own names
            plan += [(prefix + "linear_attn." + name, param) for name, param in attn.named_parameters()]
        for proj in (() if model_type == "deepseek_v3" or i in cfg.attention.linear_layers
                     else ("q_proj", "k_proj", "v_proj", "o_proj")):
            plan.append((prefix + f"self_attn.{proj}.weight", getattr(attn, proj).weight))
            if getattr(attn, proj).bias is not None:
                plan.append((prefix + f"self_attn.{proj}.bias", getattr(attn, proj).bias))
        if getattr(attn, "q_norm", None) is not None:
            plan += [(prefix + "self_attn.q_norm.weight", attn.q_norm.weight),
                     (prefix + "self_attn.k_norm.weight", attn.k_norm.weight)]
        moe = prefix + _MOE[model_type] + "."
        if model_type == "gpt_oss":
            plan += [(prefix + "self_attn.sinks", attn.sinks), (moe + "router.weight", layer.ffn.router.weight),
                     (moe + "router.bias", layer.ffn.router.bias)]
            plan += [(moe + "experts." + suffix, _Deferred(param, layout))
                     for suffix, param, layout in gpt_oss.folder_expert_layouts(layer.ffn.experts)]
            continue
        if not cfg.is_moe_layer(i):  # a dense layer (Qwen2-MoE and Qwen3-MoE write these)
            plan += _swiglu_plan(moe, layer.ffn)
            continue
        plan.append((moe + "gate.weight", layer.ffn.router.weight))
        if model_type == "deepseek_v3":
            plan.append((moe + "gate.e_score_correction_bias", layer.ffn.router.expert_bias))
            plan += _swiglu_plan(moe + "shared_experts.", layer.ffn.shared_experts)
        elif layer.ffn.shared_experts is not None:
            plan += _swiglu_plan(moe + "shared_expert.", layer.ffn.shared_experts)
            plan.append((moe + "shared_expert_gate.weight", layer.ffn.shared_gate.weight))
        gate_up_E2FD, down_EDF = layer.ffn.experts.gate_up_proj, layer.ffn.experts.down_proj
        gate_name, up_name, down_name = _EXPERT_NAMES[model_type]
        F = cfg.moe.expert_hidden_dim
        for e in range(cfg.moe.num_experts):
            plan += [(moe + f"experts.{e}.{gate_name}.weight", gate_up_E2FD[e, :F]),
                     (moe + f"experts.{e}.{up_name}.weight", gate_up_E2FD[e, F:]),
                     (moe + f"experts.{e}.{down_name}.weight", down_EDF[e])]
    plan.append(("model.norm.weight", model.norm.weight))
    if not cfg.tie_embeddings:
        plan.append(("lm_head.weight", model.output.weight))
    return plan


def _mla_plan(prefix: str, attn, cfg: ModelConfig) -> list[tuple[str, torch.Tensor]]:
    """The latent-attention projections, with the rope rows of the queries and the shared key put back
    into DeepSeek's interleaved pairs (rope_interleave=true)."""
    R = cfg.attention.qk_rope_head_dim
    plan = []
    for proj in _MLA_PROJS:
        module = getattr(attn, proj, None)
        if module is None:
            continue  # q_proj, or q_a_proj/q_a_layernorm/q_b_proj
        weight = module.weight
        if proj in ("q_proj", "q_b_proj"):
            P = cfg.attention.qk_nope_head_dim
            weight = _interleave_rope_rows(weight, P + R, P, R)
        elif proj == "kv_a_proj_with_mqa":
            weight = _interleave_rope_rows(weight, cfg.attention.kv_lora_rank + R, cfg.attention.kv_lora_rank, R)
        plan.append((prefix + proj + ".weight", weight))
    return plan


@dataclasses.dataclass(frozen=True)
class _Deferred:
    """`layout(weight)`, a rearranged copy formed only when its shard is written (a plan entry holds no copy)."""

    weight: torch.Tensor
    layout: Callable[[torch.Tensor], torch.Tensor]

    def numel(self) -> int:
        return self.weight.numel()

    def element_size(self) -> int:
        return self.weight.element_size()

    def detach(self) -> torch.Tensor:
        return self.layout(self.weight.detach())


def _interleave_rope_rows(weight: torch.Tensor, head_width: int, nope_dim: int, rope_dim: int) -> _Deferred:
    """The inverse of `deinterleave_rope_rows`: rotate-half rope rows back to interleaved pairs."""
    order = deinterleave_rope_rows(torch.arange(weight.shape[0]), head_width, nope_dim, rope_dim)
    rows = torch.argsort(order)
    return _Deferred(weight, lambda w: w[rows.to(w.device)])


def _swiglu_plan(prefix: str, swiglu) -> list[tuple[str, torch.Tensor]]:
    """gate_proj / up_proj / down_proj of a hepta SwiGLU, whose gate_up_proj holds gate rows then up rows."""
    F = swiglu.hidden_dim
    gate_up = swiglu.gate_up_proj.weight
    return [(prefix + "gate_proj.weight", gate_up[:F]), (prefix + "up_proj.weight", gate_up[F:]),
            (prefix + "down_proj.weight", swiglu.down_proj.weight)]


def _write_weights(plan: list[tuple[str, torch.Tensor]], folder: Path, max_shard_bytes: int) -> None:
    shards = shard_groups(plan, max_shard_bytes)
    metadata = {"format": "pt"}
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        name = WEIGHTS_FILE if len(shards) == 1 else f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        # one shard's tensors are copied out at a time, so the process never holds the model twice
        tensors = {key: t.detach().to("cpu").contiguous().clone() for key, t in shard}
        save_file(tensors, str(folder / name), metadata=metadata)
        del tensors
        weight_map.update({key: name for key, _ in shard})
    if len(shards) > 1:
        total = sum(t.numel() * t.element_size() for _, t in plan)
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


def _check_target(target: Path, overwrite: bool) -> None:
    if target.exists() and not target.is_dir():
        raise HeptaError(f"{target} exists and is not a folder; choose another output path")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise HeptaError(f"{target} exists and is not empty; choose a new or empty output folder")


def save_hf(model: Transformer, path: str | Path, model_type: str | None = None, *, overwrite: bool = False,
         max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> Path:
    """Write `model` as a Hugging Face folder of `model_type` (None: inferred from its attention and QK-norm).

    Refuses a config the target cannot express, and an existing non-empty `path` unless
    `overwrite`. Returns the folder.
    """
    cfg = model.config
    model_type = model_type or infer_type(cfg)
    check_representable(cfg, model_type)
    for i, moe in enumerate(model.moe_layers()):
        if model_type != "deepseek_v3" and moe.router.expert_bias.any():
            raise HeptaError(f"layer {i} has a nonzero router expert_bias (aux-loss-free balancing), which "
                             f"{model_type} cannot hold; only models trained with bias_update_rate=0 can be written")
    target = Path(path)
    _check_target(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    tmp.mkdir()  # plain mkdir: the folder gets the user's usual permissions, as do the files below
    try:
        dtype = model.embed.weight.dtype
        (tmp / "config.json").write_text(json.dumps(hf_config(cfg, model_type, dtype), indent=2) + "\n",
                                         encoding="utf-8")
        _write_weights(_tensor_plan(model, model_type), tmp, max_shard_bytes)
        file_mode = _file_mode()
        for file in tmp.iterdir():
            os.chmod(file, file_mode)  # safetensors may create its files private (0600)
            with open(file, "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(tmp)
        _move_into_place(tmp, target, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _file_mode() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _move_into_place(tmp: Path, target: Path, overwrite: bool) -> None:
    """Rename the finished folder to `target`: the rename is the commit."""
    old = None
    if target.is_dir() and any(target.iterdir()):
        _check_target(target, overwrite)  # something may have appeared while we wrote
        old = target.with_name(f".{target.name}.{secrets.token_hex(4)}.old")
        os.replace(target, old)
    os.replace(tmp, target)  # onto a missing or empty folder
    fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
