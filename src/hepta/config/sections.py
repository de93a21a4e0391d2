"""The sections of a `ModelConfig`: attention, RoPE, mixture of experts, router, modality codes.

Each section is a frozen dataclass that checks its own fields (types from its annotations, then
ranges); rules that relate two sections (top_k against the expert groups, layer indices against
num_layers) are `ModelConfig`'s. A section's field is named `section.field` in config.json's
sections, in `hepta train --set` and in error messages.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, get_args

from hepta.config.typed import check_types, require

AttentionKind = Literal["gqa", "mla"]
ExpertActivation = Literal["swiglu", "clamped_swiglu"]
RopeType = Literal["default", "linear", "yarn"]
RouterScoring = Literal["softmax", "sigmoid"]
ATTENTIONS: tuple[str, ...] = get_args(AttentionKind)
ROPE_TYPES: tuple[str, ...] = get_args(RopeType)
ROUTER_SCORINGS: tuple[str, ...] = get_args(RouterScoring)


class Section:
    """Shared behaviour of the sections; subclasses set SECTION (their name in ModelConfig)."""

    SECTION = ""

    def replace(self, **changes):
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown field(s) {sorted(f'{self.SECTION}.{name}' for name in unknown)}; "
                             f"the {self.SECTION} section has {[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class AttentionConfig(Section):
    """Self-attention: grouped-query ("gqa") or multi-head latent attention ("mla", DeepSeek-V2/V3)."""

    SECTION = "attention"
    kind: AttentionKind = "gqa"  # "gqa": num_kv_heads x head_dim keys and values; "mla": from a cached latent
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 64
    qk_norm: bool = True
    qk_norm_per_head: bool = True  # False: one norm over all heads' q (and k), as OLMoE does
    qkv_bias: bool = False
    o_bias: bool = False  # a bias on the output projection too (gpt-oss)
    sinks: bool = False  # a learned logit per head that takes part of the softmax and adds no value (gpt-oss)
    sliding_window: int | None = None  # the layers in sliding_window_layers see only this many latest tokens ...
    sliding_window_layers: tuple[int, ...] = ()  # ... (themselves included); the other layers see all
    gated: bool = False  # q_proj also gives each head a sigmoid gate on its output (Qwen3.5)
    rotary_dim: int | None = None  # RoPE turns only the first rotary_dim dims of a head; None = all of head_dim
    # Gated DeltaNet linear attention (Qwen3.5) in these layers instead of softmax attention: a recurrent
    # state of key_head_dim x value_head_dim per value head, and a causal convolution of conv_kernel taps
    linear_layers: tuple[int, ...] = ()
    linear_num_key_heads: int = 16
    linear_num_value_heads: int = 32
    linear_key_head_dim: int = 128
    linear_value_head_dim: int = 128
    linear_conv_kernel: int = 4
    # multi-head latent attention, when kind == "mla"
    q_lora_rank: int | None = None  # low-rank query width; None = one full-rank q_proj
    kv_lora_rank: int = 512  # the cached latent per token ...
    qk_rope_head_dim: int = 64  # ... plus one rotary key shared by all heads
    qk_nope_head_dim: int = 128  # per-head key dims without RoPE
    v_head_dim: int = 128

    def __post_init__(self) -> None:
        check_types(self)
        for name in ("num_heads", "num_kv_heads", "head_dim"):
            require(getattr(self, name) > 0, self, name, "it must be a positive integer")
        require(self.head_dim % 2 == 0, self, "head_dim", "RoPE needs an even head dimension")
        require(self.num_heads % self.num_kv_heads == 0, self, "num_kv_heads",
                f"it must divide num_heads={self.num_heads}")
        if self.kind == "mla":
            require(self.q_lora_rank is None or self.q_lora_rank > 0, self, "q_lora_rank",
                    "use null or a positive integer")
            for name in ("kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim"):
                require(getattr(self, name) > 0, self, name, "it must be a positive integer with kind='mla'")
            require(self.qk_rope_head_dim % 2 == 0, self, "qk_rope_head_dim", "RoPE needs an even dimension")
            require(not self.qk_norm, self, "qk_norm", "MLA normalises its latents instead; set it to false")
            require(not self.qkv_bias, self, "qkv_bias", "MLA projections have no bias; set it to false")
            for name in ("o_bias", "sinks"):
                require(not getattr(self, name), self, name, "hepta's MLA does not implement it; set it to false")
            require(not self.sliding_window_layers, self, "sliding_window_layers",
                    "hepta's MLA attends over the full context; set it to []")
        require(self.sliding_window is None or self.sliding_window > 0, self, "sliding_window",
                "use null or a positive number of tokens")
        require(not self.sliding_window_layers or self.sliding_window is not None, self, "sliding_window",
                "sliding_window_layers lists layers, so give the window's length in tokens")
        require(all(i >= 0 for i in self.sliding_window_layers), self, "sliding_window_layers",
                "it must list layer indices from 0")
        require(self.rotary_dim is None or (0 < self.rotary_dim <= self.head_dim and self.rotary_dim % 2 == 0),
                self, "rotary_dim", f"use null, or an even number up to head_dim={self.head_dim}")
        require(all(i >= 0 for i in self.linear_layers), self, "linear_layers", "it must list layer indices from 0")
        if self.linear_layers:
            for name in ("linear_num_key_heads", "linear_num_value_heads", "linear_key_head_dim",
                         "linear_value_head_dim", "linear_conv_kernel"):
                require(getattr(self, name) > 0, self, name, "it must be a positive integer")
            require(self.linear_num_value_heads % self.linear_num_key_heads == 0, self, "linear_num_key_heads",
                    f"it must divide linear_num_value_heads={self.linear_num_value_heads}")
            require(self.kind == "gqa", self, "linear_layers", "linear attention goes beside grouped-query attention")

    def window(self, layer_idx: int) -> int | None:
        """The tokens layer `layer_idx` sees back from each query (itself included); None = all."""
        return self.sliding_window if layer_idx in self.sliding_window_layers else None

    @property
    def rope_dim(self) -> int:
        """Rotary dims per head: all of head_dim (or its first rotary_dim), or MLA's shared rope part."""
        return self.qk_rope_head_dim if self.kind == "mla" else self.rotary_dim or self.head_dim

    @property
    def linear_state_shapes(self) -> tuple[tuple[int, ...], ...]:
        """What a linear-attention layer keeps per sequence: the last conv_kernel - 1 inputs of its convolution,
        [channels, K - 1], and its recurrent state, [value heads, key head dim, value head dim]."""
        channels = 2 * self.linear_num_key_heads * self.linear_key_head_dim + self.linear_num_value_heads * \
            self.linear_value_head_dim
        return ((channels, self.linear_conv_kernel - 1),
                (self.linear_num_value_heads, self.linear_key_head_dim, self.linear_value_head_dim))

    @property
    def kv_cache_token_shapes(self) -> tuple[tuple[int, ...], ...]:
        """What decoding caches per token and layer: keys and values [G, Dh] each, or MLA's normed
        latent [C] and rotated shared rope key [R]. The cache, the model and the planner read it here."""
        if self.kind == "mla":
            return (self.kv_lora_rank,), (self.qk_rope_head_dim,)
        return (self.num_kv_heads, self.head_dim), (self.num_kv_heads, self.head_dim)

    @property
    def qk_head_dim(self) -> int:
        """MLA: per-head query and key width, the part without RoPE plus the rotary part."""
        return self.qk_nope_head_dim + self.qk_rope_head_dim


@dataclass(frozen=True)
class RopeConfig(Section):
    """Rotary position embedding and its context extension (as Hugging Face's rope_parameters)."""

    SECTION = "rope"
    theta: float = 10000.0
    type: RopeType = "default"  # "linear" divides the frequencies by factor; "yarn" as below
    factor: float = 1.0  # extended context / original context
    original_max_len: int = 4096  # yarn: the pretraining context
    beta_fast: float = 32.0  # yarn: dims turning more often than this over the context keep their frequency,
    beta_slow: float = 1.0  # ... dims turning less often are interpolated, with a ramp between
    truncate: bool = True  # yarn: round the ramp bounds to whole dims
    mscale: float = 0.0  # yarn (DeepSeek): cos/sin factor mscale(f, this) / mscale(f, all_dim); 0 = unset
    mscale_all_dim: float = 0.0  # yarn (DeepSeek): MLA softmax scale times mscale(f, this)^2; 0 = unset
    attention_factor: float | None = None  # yarn: explicit cos/sin factor; None = derived from factor
    # multimodal RoPE (Qwen3-VL): positions have time, height and width rows; of the rotary frequencies,
    # every third from the second turns with height and every third from the third with width, up to
    # 3 x mrope_section[1] and 3 x mrope_section[2]; the rest with time. () = one position row.
    mrope_section: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        check_types(self)
        require(self.theta > 0, self, "theta", "it must be positive")
        require(len(self.mrope_section) in (0, 3) and all(n > 0 for n in self.mrope_section), self, "mrope_section",
                "use [] or three positive counts of rotary frequencies (time, height, width)")
        require(self.factor > 0, self, "factor", "it must be positive")
        require(self.original_max_len > 0, self, "original_max_len", "it must be a positive integer")
        require(self.attention_factor is None or self.attention_factor > 0, self, "attention_factor",
                "use null to derive it from factor, or a positive number")


@dataclass(frozen=True)
class MoEConfig(Section):
    """The feed-forward layers: which are MoE, their routed and shared experts, and the dense ones' width."""

    SECTION = "moe"
    num_experts: int = 8  # routed experts per MoE layer
    top_k: int = 2
    expert_hidden_dim: int = 256
    num_shared_experts: int = 0  # each of width expert_hidden_dim, used by every token
    shared_expert_hidden_dim: int | None = None  # None: num_shared_experts * expert_hidden_dim
    shared_expert_gate: bool = False  # scale the shared experts by sigmoid(w . x) per token (Qwen2-MoE)
    num_dense_layers: int = 0  # the first k layers use a dense SwiGLU instead of MoE
    layer_step: int = 1  # after the first dense layers, every n-th layer is MoE (Qwen's decoder_sparse_step)
    dense_layers: tuple[int, ...] = ()  # further layers forced dense (Qwen's mlp_only_layers)
    dense_hidden_dim: int = 1024  # SwiGLU width of the dense layers
    expert_proj_bias: bool = False  # biases on the routed experts' projections (gpt-oss)
    # "swiglu": silu(gate) * up; "clamped_swiglu" (gpt-oss): gate and up clamped to swiglu_limit, then
    # gate * sigmoid(swiglu_alpha * gate) * (up + 1)
    expert_activation: ExpertActivation = "swiglu"
    swiglu_alpha: float = 1.702
    swiglu_limit: float = 7.0

    def __post_init__(self) -> None:
        check_types(self)
        require(self.num_experts > 0, self, "num_experts", "it must be positive")
        require(1 <= self.top_k <= self.num_experts, self, "top_k",
                f"it must be between 1 and num_experts={self.num_experts}")
        require(self.expert_hidden_dim > 0, self, "expert_hidden_dim", "it must be positive")
        require(self.num_shared_experts >= 0, self, "num_shared_experts", "it must be 0 or more")
        require(self.shared_expert_hidden_dim is None or self.shared_expert_hidden_dim > 0, self,
                "shared_expert_hidden_dim", "it must be positive or null")
        require(self.num_dense_layers >= 0, self, "num_dense_layers", "it must be 0 or more")
        require(self.layer_step >= 1, self, "layer_step", "it must be 1 or more")
        require(all(i >= 0 for i in self.dense_layers), self, "dense_layers", "it must list layer indices from 0")
        require(self.swiglu_limit > 0, self, "swiglu_limit", "it must be positive")

    @property
    def shared_hidden_dim(self) -> int:
        """Width of the one SwiGLU that holds all shared experts (0: none)."""
        if self.shared_expert_hidden_dim is not None:
            return self.shared_expert_hidden_dim
        return self.num_shared_experts * self.expert_hidden_dim


@dataclass(frozen=True)
class RouterConfig(Section):
    """How an MoE layer picks its top_k experts per token, and how their load is balanced."""

    SECTION = "router"
    scoring: RouterScoring = "softmax"
    norm_topk_prob: bool = True  # renormalise the top-k gate weights to sum to 1
    route_scale: float = 1.0  # multiplies the gate weights (DeepSeek's routed_scaling_factor)
    num_expert_groups: int = 1  # group-limited routing: experts split into groups ...
    num_limited_groups: int = 1  # ... and only the best groups are eligible per token
    aux_loss_coef: float = 0.0  # load-balancing loss (Switch/GShard form)
    z_loss_coef: float = 0.0  # router z-loss (ST-MoE)
    bias_update_rate: float = 0.0  # aux-loss-free balancing step (DeepSeek-V3); 0 disables
    capacity_factor: float | None = None  # None = dropless
    logit_bias: bool = False  # a learned bias on the router logits, for choice and gate weights alike (gpt-oss)

    def __post_init__(self) -> None:
        check_types(self)
        require(self.route_scale > 0, self, "route_scale", "it must be positive")
        require(self.num_expert_groups >= 1, self, "num_expert_groups", "it must be 1 or more")
        require(1 <= self.num_limited_groups <= self.num_expert_groups, self, "num_limited_groups",
                f"it must be between 1 and num_expert_groups={self.num_expert_groups}")
        for name in ("aux_loss_coef", "z_loss_coef", "bias_update_rate"):
            require(getattr(self, name) >= 0, self, name, "it must be 0 or more")
        require(self.capacity_factor is None or self.capacity_factor > 0, self, "capacity_factor",
                "use None for dropless routing or a positive factor")


@dataclass(frozen=True)
class CodesConfig(Section):
    """The modality code blocks of the vocabulary: how many of its ids are image codes and audio
    codes (appended after the text and special ids, `tokenizer.py`); 0 for a text model."""

    SECTION = "codes"
    image: int = 0
    audio: int = 0

    def __post_init__(self) -> None:
        check_types(self)
        for name in ("image", "audio"):
            require(getattr(self, name) >= 0, self, name, "it must be 0 or more")


SECTIONS: dict[str, type[Section]] = {cls.SECTION: cls for cls in (AttentionConfig, RopeConfig, MoEConfig, RouterConfig,
                                                                   CodesConfig)}
