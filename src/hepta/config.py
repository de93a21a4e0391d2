"""Model configuration, named presets and exact parameter accounting.

One frozen `ModelConfig` describes every hepta model, from the laptop-sized `tiny` to the
7-trillion-parameter `grok5-7t`. `count_params` computes total and active parameters
analytically; it must equal what `build_model` creates, parameter for parameter.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from hepta.errors import HeptaError

ROUTER_SCORINGS = ("softmax", "sigmoid")
ATTENTIONS = ("gqa", "mla")
ROPE_TYPES = ("default", "linear", "yarn")


@dataclass(frozen=True)
class ModelConfig:
    # --- transformer ---
    vocab_size: int = 4096
    dim: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 64
    rope_theta: float = 10000.0
    max_seq_len: int = 1024
    qk_norm: bool = True
    qk_norm_per_head: bool = True  # False: one norm over all heads' q (and k), as OLMoE does
    tie_embeddings: bool = False
    norm_eps: float = 1e-6
    # --- RoPE context extension (as Hugging Face's rope_parameters) ---
    rope_type: str = "default"  # "linear" divides the frequencies by rope_factor; "yarn" as below
    rope_factor: float = 1.0  # extended context / original context
    rope_original_max_len: int = 4096  # yarn: the pretraining context
    rope_beta_fast: float = 32.0  # yarn: dims turning more often than this over the context keep their frequency,
    rope_beta_slow: float = 1.0  # ... dims turning less often are interpolated, with a ramp between
    rope_truncate: bool = True  # yarn: round the ramp bounds to whole dims
    rope_mscale: float = 0.0  # yarn (DeepSeek): cos/sin factor mscale(f, this) / mscale(f, all_dim); 0 = unset
    rope_mscale_all_dim: float = 0.0  # yarn (DeepSeek): MLA softmax scale times mscale(f, this)^2; 0 = unset
    rope_attention_factor: float | None = None  # yarn: explicit cos/sin factor; None = derived from rope_factor
    # --- multi-head latent attention (DeepSeek-V2/V3), when attention == "mla" ---
    attention: str = "gqa"  # "gqa": num_kv_heads x head_dim keys and values; "mla": from a cached latent
    q_lora_rank: int | None = None  # low-rank query width; None = one full-rank q_proj
    kv_lora_rank: int = 512  # the cached latent per token ...
    qk_rope_head_dim: int = 64  # ... plus one rotary key shared by all heads
    qk_nope_head_dim: int = 128  # per-head key dims without RoPE
    v_head_dim: int = 128
    # --- mixture of experts ---
    num_experts: int = 8  # routed experts per MoE layer
    top_k: int = 2
    expert_hidden_dim: int = 256
    num_shared_experts: int = 0  # each of width expert_hidden_dim, used by every token
    num_dense_layers: int = 0  # the first k layers use a dense SwiGLU instead of MoE
    dense_hidden_dim: int = 1024
    moe_layer_step: int = 1  # after the first dense layers, every n-th layer is MoE (Qwen's decoder_sparse_step)
    dense_layers: tuple[int, ...] = ()  # further layers forced dense (Qwen's mlp_only_layers)
    shared_expert_hidden_dim: int | None = None  # None: num_shared_experts * expert_hidden_dim
    shared_expert_gate: bool = False  # scale the shared experts by sigmoid(w . x) per token (Qwen2-MoE)
    qkv_bias: bool = False
    router_scoring: str = "softmax"
    norm_topk_prob: bool = True  # renormalise the top-k gate weights to sum to 1
    route_scale: float = 1.0  # multiplies the gate weights (DeepSeek's routed_scaling_factor)
    num_expert_groups: int = 1  # group-limited routing: experts split into groups ...
    num_limited_groups: int = 1  # ... and only the best groups are eligible per token
    aux_loss_coef: float = 0.0  # load-balancing loss (Switch/GShard form)
    z_loss_coef: float = 0.0  # router z-loss (ST-MoE)
    bias_update_rate: float = 0.0  # aux-loss-free balancing step (DeepSeek-V3); 0 disables
    capacity_factor: float | None = None  # None = dropless

    def __post_init__(self) -> None:
        if isinstance(self.dense_layers, list):  # from JSON
            object.__setattr__(self, "dense_layers", tuple(self.dense_layers))

        def require(ok: bool, name: str, allowed: str) -> None:
            if not ok:
                raise ValueError(f"ModelConfig.{name}={getattr(self, name)!r} is invalid: {allowed}")

        for f in dataclasses.fields(self):  # types first: JSON and --set hand in 2.0 for 2, 1 for true
            value = getattr(self, f.name)
            if f.type == "int":
                require(isinstance(value, int) and not isinstance(value, bool), f.name, "it must be an integer")
            elif f.type == "bool":
                require(isinstance(value, bool), f.name, "it must be true or false")
            elif f.type == "int | None":
                require(value is None or isinstance(value, int) and not isinstance(value, bool), f.name,
                        "it must be an integer or null")
            elif f.type.startswith("float"):
                require(value is None and "None" in f.type or isinstance(value, (int, float)) and not isinstance(value, bool),
                        f.name, "it must be a number")
        for name in ("vocab_size", "dim", "num_layers", "num_heads", "num_kv_heads", "head_dim", "max_seq_len"):
            require(getattr(self, name) > 0, name, "it must be a positive integer")
        require(self.head_dim % 2 == 0, "head_dim", "RoPE needs an even head dimension")
        require(self.rope_type in ROPE_TYPES, "rope_type", f"use one of {ROPE_TYPES}")
        require(self.rope_factor > 0, "rope_factor", "it must be positive")
        require(self.rope_original_max_len > 0, "rope_original_max_len", "it must be a positive integer")
        require(self.rope_attention_factor is None or self.rope_attention_factor > 0, "rope_attention_factor",
                "use null to derive it from rope_factor, or a positive number")
        require(self.attention in ATTENTIONS, "attention", f"use one of {ATTENTIONS}")
        if self.attention == "mla":
            require(self.q_lora_rank is None or self.q_lora_rank > 0, "q_lora_rank", "use null or a positive integer")
            for name in ("kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim"):
                require(getattr(self, name) > 0, name, "it must be a positive integer with attention='mla'")
            require(self.qk_rope_head_dim % 2 == 0, "qk_rope_head_dim", "RoPE needs an even dimension")
            require(not self.qk_norm, "qk_norm", "MLA normalises its latents instead; set it to false")
            require(not self.qkv_bias, "qkv_bias", "MLA projections have no bias; set it to false")
        require(self.num_heads % self.num_kv_heads == 0, "num_kv_heads",
                f"it must divide num_heads={self.num_heads}")
        require(self.rope_theta > 0, "rope_theta", "it must be positive")
        require(self.norm_eps > 0, "norm_eps", "it must be positive")
        require(0 <= self.num_dense_layers <= self.num_layers, "num_dense_layers",
                f"it must be between 0 and num_layers={self.num_layers}")
        require(self.moe_layer_step >= 1, "moe_layer_step", "it must be 1 or more")
        require(all(isinstance(i, int) and 0 <= i < self.num_layers for i in self.dense_layers), "dense_layers",
                f"it must list layer indices below num_layers={self.num_layers}")
        require(self.shared_expert_hidden_dim is None or self.shared_expert_hidden_dim > 0,
                "shared_expert_hidden_dim", "it must be positive or null")
        require(self.num_moe_layers == self.num_layers or self.dense_hidden_dim > 0, "dense_hidden_dim",
                "dense layers need a positive hidden size")
        if not self.has_moe:
            return
        require(self.num_experts > 0, "num_experts", "it must be positive when any layer is MoE")
        require(1 <= self.top_k <= self.num_experts, "top_k", f"it must be between 1 and num_experts={self.num_experts}")
        require(self.expert_hidden_dim > 0, "expert_hidden_dim", "it must be positive")
        require(self.num_shared_experts >= 0, "num_shared_experts", "it must be 0 or more")
        require(self.router_scoring in ROUTER_SCORINGS, "router_scoring", f"use one of {ROUTER_SCORINGS}")
        require(self.route_scale > 0, "route_scale", "it must be positive")
        require(self.num_expert_groups >= 1 and self.num_experts % self.num_expert_groups == 0,
                "num_expert_groups", f"it must divide num_experts={self.num_experts}")
        require(1 <= self.num_limited_groups <= self.num_expert_groups, "num_limited_groups",
                f"it must be between 1 and num_expert_groups={self.num_expert_groups}")
        require(self.top_k <= self.num_limited_groups * self.num_experts // self.num_expert_groups, "top_k",
                "the eligible groups must hold at least top_k experts")
        for name in ("aux_loss_coef", "z_loss_coef", "bias_update_rate"):
            require(getattr(self, name) >= 0, name, "it must be 0 or more")
        require(self.capacity_factor is None or self.capacity_factor > 0, "capacity_factor",
                "use None for dropless routing or a positive factor")

    # --- derived ---
    @property
    def has_moe(self) -> bool:
        return self.num_moe_layers > 0

    @property
    def num_moe_layers(self) -> int:
        return sum(self.is_moe_layer(i) for i in range(self.num_layers))

    @property
    def rope_dim(self) -> int:
        """Rotary dims per head: all of head_dim, or MLA's shared rope part."""
        return self.qk_rope_head_dim if self.attention == "mla" else self.head_dim

    @property
    def kv_cache_token_shapes(self) -> tuple[tuple[int, ...], ...]:
        """What decoding caches per token and layer: keys and values [G, Dh] each, or MLA's normed
        latent [C] and rotated shared rope key [R]. The cache, the model and the planner read it here."""
        if self.attention == "mla":
            return (self.kv_lora_rank,), (self.qk_rope_head_dim,)
        return (self.num_kv_heads, self.head_dim), (self.num_kv_heads, self.head_dim)

    def is_moe_layer(self, layer_idx: int) -> bool:
        return (layer_idx >= self.num_dense_layers and layer_idx not in self.dense_layers
                and (layer_idx + 1) % self.moe_layer_step == 0)

    @property
    def shared_hidden_dim(self) -> int:
        """Width of the one SwiGLU that holds all shared experts (0: none)."""
        if self.shared_expert_hidden_dim is not None:
            return self.shared_expert_hidden_dim
        return self.num_shared_experts * self.expert_hidden_dim

    def replace(self, **changes) -> "ModelConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown ModelConfig field(s) {sorted(unknown)}; known fields: "
                             f"{[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **changes)

    # --- serialisation ---
    def to_dict(self) -> dict:
        return {"model_type": "hepta", **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        data = {k: v for k, v in data.items() if k != "model_type"}
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"config.json has unknown field(s) {sorted(unknown)}; is it a hepta config?")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        from hepta.fileio import atomic_write_text
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")


# ---------------------------------------------------------------------------------------
# Parameter accounting
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamCount:
    total: int
    active: int
    components: dict[str, int] = field(default_factory=dict)  # total per component

    @property
    def active_fraction(self) -> float:
        return self.active / self.total


def count_params(cfg: ModelConfig) -> ParamCount:
    """Exact parameter count of `build_model(cfg)`, and how many of them one token uses.

    Active = everything except the routed experts a token is not sent to (the embedding
    and output matrices count as active, as in Mixtral's and DeepSeek's published figures).
    """
    d, hd = cfg.dim, cfg.head_dim
    attention = d * hd * (cfg.num_heads + 2 * cfg.num_kv_heads) + cfg.num_heads * hd * d
    attention += hd * (cfg.num_heads + 2 * cfg.num_kv_heads) if cfg.qkv_bias else 0
    if cfg.attention == "mla":
        H, Q, C = cfg.num_heads, cfg.q_lora_rank, cfg.kv_lora_rank
        qk = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim
        attention = d * H * qk if Q is None else d * Q + Q + Q * H * qk  # q_proj, or q_a_proj + norm + q_b_proj
        attention += d * (C + cfg.qk_rope_head_dim) + C  # kv_a_proj_with_mqa, kv_a_layernorm
        attention += C * H * (cfg.qk_nope_head_dim + cfg.v_head_dim) + H * cfg.v_head_dim * d  # kv_b_proj, o_proj
    elif cfg.qk_norm:
        attention += 2 * hd if cfg.qk_norm_per_head else (cfg.num_heads + cfg.num_kv_heads) * hd
    swiglu = lambda hidden: 3 * d * hidden  # noqa: E731  (gate, up, down)
    c = {
        "embedding": cfg.vocab_size * d,
        "attention": cfg.num_layers * attention,
        "norms": (2 * cfg.num_layers + 1) * d,
        "dense_ffn": (cfg.num_layers - cfg.num_moe_layers) * swiglu(cfg.dense_hidden_dim),
        "router": cfg.num_moe_layers * cfg.num_experts * d if cfg.has_moe else 0,
        "routed_experts": cfg.num_moe_layers * cfg.num_experts * swiglu(cfg.expert_hidden_dim) if cfg.has_moe else 0,
        "shared_experts": cfg.num_moe_layers * (swiglu(cfg.shared_hidden_dim)
                                                + (d if cfg.shared_expert_gate and cfg.shared_hidden_dim else 0)),
        "output": 0 if cfg.tie_embeddings else cfg.vocab_size * d,
    }
    total = sum(c.values())
    inactive = c["routed_experts"] * (cfg.num_experts - cfg.top_k) // cfg.num_experts if cfg.has_moe else 0
    return ParamCount(total=total, active=total - inactive, components=c)


# ---------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------

_PRESETS: dict[str, Callable[[], ModelConfig]] = {}


def preset(name: str):
    def register(fn: Callable[[], ModelConfig]):
        _PRESETS[name] = fn
        return fn
    return register


def preset_names() -> list[str]:
    return list(_PRESETS)


def get_preset(name: str) -> ModelConfig:
    if name not in _PRESETS:
        raise HeptaError(f"unknown preset {name!r}; choose one of: {', '.join(_PRESETS)}")
    return _PRESETS[name]()


@preset("tiny")
def tiny() -> ModelConfig:
    """Fine-grained experts plus a shared expert; trains on 2 CPU cores in minutes."""
    return ModelConfig(
        vocab_size=4096, dim=192, num_layers=4, num_heads=6, num_kv_heads=2, head_dim=32,
        max_seq_len=512, qk_norm=True,
        num_experts=16, top_k=2, expert_hidden_dim=128, num_shared_experts=1,
        num_dense_layers=1, dense_hidden_dim=512,
        router_scoring="sigmoid", norm_topk_prob=True, route_scale=1.0,
        # runs last only hundreds of steps, so balancing must act within tens of them
        aux_loss_coef=1e-2, z_loss_coef=1e-4, bias_update_rate=1e-2,
    )


@preset("small")
def small() -> ModelConfig:
    """~200M total / ~50M active: a model for a single workstation GPU."""
    return ModelConfig(
        vocab_size=32768, dim=768, num_layers=12, num_heads=12, num_kv_heads=4, head_dim=64,
        max_seq_len=4096, qk_norm=True,
        num_experts=32, top_k=4, expert_hidden_dim=384, num_shared_experts=1,
        num_dense_layers=1, dense_hidden_dim=2048,
        router_scoring="sigmoid", aux_loss_coef=1e-3, z_loss_coef=1e-4, bias_update_rate=1e-3,
    )


@preset("mixtral-8x7b")
def mixtral_8x7b() -> ModelConfig:
    """Mixtral 8x7B: 46.7B total, 12.9B active."""
    return ModelConfig(
        vocab_size=32000, dim=4096, num_layers=32, num_heads=32, num_kv_heads=8, head_dim=128,
        rope_theta=1e6, max_seq_len=32768, qk_norm=False, norm_eps=1e-5,
        num_experts=8, top_k=2, expert_hidden_dim=14336,
        router_scoring="softmax", norm_topk_prob=True, aux_loss_coef=0.02,
    )


@preset("grok-1")
def grok_1() -> ModelConfig:
    """Grok-1 as released: 64 layers, d 6144, 48/8 heads, 8 experts top-2, ~314B."""
    return ModelConfig(
        vocab_size=131072, dim=6144, num_layers=64, num_heads=48, num_kv_heads=8, head_dim=128,
        max_seq_len=8192, qk_norm=False, tie_embeddings=True,
        num_experts=8, top_k=2, expert_hidden_dim=32768,
        router_scoring="softmax", norm_topk_prob=False,
    )


@preset("deepseek-v3")
def deepseek_v3() -> ModelConfig:
    """DeepSeek-V3 without its multi-token-prediction module: 671B total, 37.6B active.

    Multi-head latent attention caches 512 + 64 values per token and layer; 256 fine-grained
    routed experts (top-8 within the best 4 of 8 groups) plus one shared expert; the first 3
    layers dense; YaRN extends the 4K pretraining context 40x.
    """
    return ModelConfig(
        vocab_size=129280, dim=7168, num_layers=61, num_heads=128, num_kv_heads=128, head_dim=64,
        max_seq_len=163840, qk_norm=False,
        attention="mla", q_lora_rank=1536, kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=128,
        v_head_dim=128,
        rope_type="yarn", rope_factor=40.0, rope_original_max_len=4096, rope_mscale=1.0, rope_mscale_all_dim=1.0,
        num_experts=256, top_k=8, expert_hidden_dim=2048, num_shared_experts=1,
        num_dense_layers=3, dense_hidden_dim=18432,
        router_scoring="sigmoid", norm_topk_prob=True, route_scale=2.5,
        num_expert_groups=8, num_limited_groups=4,
        aux_loss_coef=1e-4, bias_update_rate=1e-3,
    )


@preset("grok5-7t")
def grok5_7t() -> ModelConfig:
    """A 7.0T-parameter sparse MoE with 31% of its parameters active per token.

    Design reasoning:
    - "70% inactive" is a much denser MoE than DeepSeek-V3 (5.5% active) or Kimi K2 (3%):
      each token runs ~2.2T parameters. We get there with coarse routing (top-8 of 32 routed
      experts = 25% of routed weights) plus two always-on shared experts that carry common
      knowledge (DeepSeekMoE); attention and embeddings add the rest: (8+2)/(32+2) = 29%
      of the FFN weights, 31% of all weights.
    - d_model 24576 (4x Grok-1) and 96 layers (1.5x): per-layer matmuls large enough for
      tensor parallelism of 8 inside an NVLink domain without starving the GEMMs.
    - 192 query heads of 128 with 16 KV heads (GQA 12:1) keep the KV cache at
      2*96*16*128 values per token, so long-video contexts fit on an inference replica.
    - 32 routed experts divide evenly over EP degrees 2-32; expert hidden 29440 (a multiple
      of 128 for tensor cores) makes each expert a 2.2B-parameter block that shards cleanly.
    - Sigmoid scoring with aux-loss-free bias balancing (DeepSeek-V3) avoids the quality cost
      of a strong auxiliary loss; a tiny aux loss stays as a guard against collapse.
    - The first 3 layers are dense (SwiGLU, 4x d) since early-layer routing specialises
      poorly and dense layers stabilise early training.
    - Vocab 131072 as in Grok-1, with room for the image and audio code blocks.
    """
    return ModelConfig(
        vocab_size=131072, dim=24576, num_layers=96, num_heads=192, num_kv_heads=16, head_dim=128,
        rope_theta=1e6, max_seq_len=131072, qk_norm=True,
        num_experts=32, top_k=8, expert_hidden_dim=29440, num_shared_experts=2,
        num_dense_layers=3, dense_hidden_dim=98304,
        router_scoring="sigmoid", norm_topk_prob=True, route_scale=2.5,
        aux_loss_coef=1e-4, z_loss_coef=1e-5, bias_update_rate=1e-3,
    )


@preset("llama3-405b")
def llama3_405b() -> ModelConfig:
    """Llama 3.1 405B as published (Meta, "The Llama 3 Herd of Models", 2024, table 3): a dense model.

    126 layers, d 16384, 128 query / 8 KV heads of 128, SwiGLU hidden 53248, vocab 128256,
    RoPE theta 500000, 8192-token pretraining context; 405.9B parameters. Every layer is dense,
    which is how `ModelConfig` expresses a model without experts (num_dense_layers = num_layers).
    """
    return ModelConfig(
        vocab_size=128256, dim=16384, num_layers=126, num_heads=128, num_kv_heads=8, head_dim=128,
        rope_theta=500000.0, max_seq_len=8192, qk_norm=False, norm_eps=1e-5,
        num_dense_layers=126, dense_hidden_dim=53248,
    )
