"""Every parameter a config's model holds, by name and shape, and the exact counts summed from them.

`param_shapes` is the one description of a model's shape: `count_params` sums it, and
`Transformer` asserts after construction that its parameters are exactly these (same names, same
shapes), so the analytic count and the built model cannot drift apart.

Dims: V vocabulary, D model dim, H query heads, G KV heads, Dh head dim, E routed experts,
F expert hidden, S shared-expert hidden, Q query rank, C KV latent rank, P/R per-head key dims
without/with RoPE, Dv value head dim.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterator

from hepta.config.model_config import ModelConfig

COMPONENTS = ("embedding", "attention", "norms", "dense_ffn", "router", "routed_experts", "shared_experts", "output")


@dataclass(frozen=True)
class ParamShape:
    name: str  # as in the built model's named_parameters()
    shape: tuple[int, ...]
    component: str  # one of COMPONENTS

    @property
    def numel(self) -> int:
        n = 1
        for size in self.shape:
            n *= size
        return n


def _attention(cfg: ModelConfig, layer_idx: int, prefix: str) -> Iterator[ParamShape]:
    a, D = cfg.attention, cfg.dim

    def param(name: str, *shape: int) -> ParamShape:
        return ParamShape(prefix + name, shape, "attention")

    if layer_idx in a.linear_layers:  # Gated DeltaNet
        (channels, _), (Hv, Dk, Dv) = a.linear_state_shapes
        yield from (param("in_proj_qkv.weight", channels, D), param("in_proj_z.weight", Hv * Dv, D),
                    param("in_proj_b.weight", Hv, D), param("in_proj_a.weight", Hv, D),
                    param("conv1d.weight", channels, 1, a.linear_conv_kernel), param("dt_bias", Hv),
                    param("A_log", Hv), param("norm.weight", Dv), param("out_proj.weight", D, Hv * Dv))
        return
    H = a.num_heads
    if a.kind == "mla":
        C, R, Q = a.kv_lora_rank, a.qk_rope_head_dim, a.q_lora_rank
        if Q is None:
            yield param("q_proj.weight", H * a.qk_head_dim, D)
        else:  # D -> Q -> norm -> H * (P + R)
            yield from (param("q_a_proj.weight", Q, D), param("q_a_layernorm.weight", Q),
                        param("q_b_proj.weight", H * a.qk_head_dim, Q))
        yield from (param("kv_a_proj_with_mqa.weight", C + R, D), param("kv_a_layernorm.weight", C),
                    param("kv_b_proj.weight", H * (a.qk_nope_head_dim + a.v_head_dim), C),
                    param("o_proj.weight", D, H * a.v_head_dim))
        return
    G, Dh = a.num_kv_heads, a.head_dim
    for proj, heads in (("q_proj", 2 * H if a.gated else H), ("k_proj", G), ("v_proj", G)):
        yield param(f"{proj}.weight", heads * Dh, D)
        if a.qkv_bias:
            yield param(f"{proj}.bias", heads * Dh)
    yield param("o_proj.weight", D, H * Dh)
    if a.o_bias:
        yield param("o_proj.bias", D)
    if a.qk_norm:  # per head over Dh, or (OLMoE) over all heads' concatenated projections
        yield param("q_norm.weight", Dh if a.qk_norm_per_head else H * Dh)
        yield param("k_norm.weight", Dh if a.qk_norm_per_head else G * Dh)
    if a.sinks:
        yield param("sinks", H)


def _swiglu(prefix: str, D: int, hidden: int, component: str) -> Iterator[ParamShape]:
    yield ParamShape(prefix + "gate_up_proj.weight", (2 * hidden, D), component)
    yield ParamShape(prefix + "down_proj.weight", (D, hidden), component)


def _ffn(cfg: ModelConfig, layer_idx: int, prefix: str) -> Iterator[ParamShape]:
    moe, D = cfg.moe, cfg.dim
    if not cfg.is_moe_layer(layer_idx):
        yield from _swiglu(prefix, D, moe.dense_hidden_dim, "dense_ffn")
        return
    E, F, S = moe.num_experts, moe.expert_hidden_dim, moe.shared_hidden_dim
    yield ParamShape(prefix + "router.weight", (E, D), "router")
    if cfg.router.logit_bias:
        yield ParamShape(prefix + "router.bias", (E,), "router")
    yield ParamShape(prefix + "experts.gate_up_proj", (E, 2 * F, D), "routed_experts")
    yield ParamShape(prefix + "experts.down_proj", (E, D, F), "routed_experts")
    if moe.expert_proj_bias:
        yield ParamShape(prefix + "experts.gate_up_bias", (E, 2 * F), "routed_experts")
        yield ParamShape(prefix + "experts.down_bias", (E, D), "routed_experts")
    if S:
        yield from _swiglu(prefix + "shared_experts.", D, S, "shared_experts")
        if moe.shared_expert_gate:
            yield ParamShape(prefix + "shared_gate.weight", (1, D), "shared_experts")


def layer_param_shapes(cfg: ModelConfig, layer_idx: int) -> Iterator[ParamShape]:
    """The parameters of block `layer_idx`: its two norms, attention and feed-forward (dense or MoE)."""
    prefix = f"layers.{layer_idx}."
    yield ParamShape(prefix + "attn_norm.weight", (cfg.dim,), "norms")
    yield from _attention(cfg, layer_idx, prefix + "attn.")
    yield ParamShape(prefix + "ffn_norm.weight", (cfg.dim,), "norms")
    yield from _ffn(cfg, layer_idx, prefix + "ffn.")


def outer_param_shapes(cfg: ModelConfig) -> Iterator[ParamShape]:
    """The parameters outside the blocks: embedding, final norm and (unless tied) the output matrix."""
    V, D = cfg.vocab_size, cfg.dim
    yield ParamShape("embed.weight", (V, D), "embedding")
    yield ParamShape("norm.weight", (D,), "norms")
    if not cfg.tie_embeddings:
        yield ParamShape("output.weight", (V, D), "output")


def param_shapes(cfg: ModelConfig) -> Iterator[ParamShape]:
    """Each parameter of `build_model(cfg)` once (a tied output matrix is the embedding's)."""
    yield from outer_param_shapes(cfg)
    for i in range(cfg.num_layers):
        yield from layer_param_shapes(cfg, i)


@dataclass(frozen=True)
class ParamCount:
    total: int
    active: int
    components: dict[str, int] = field(default_factory=dict)  # total per component

    @property
    def active_fraction(self) -> float:
        return self.active / self.total


@lru_cache(maxsize=64)  # the planner asks for the same config's count many times
def _component_totals(cfg: ModelConfig) -> tuple[tuple[str, int], ...]:
    components = dict.fromkeys(COMPONENTS, 0)
    for p in param_shapes(cfg):
        components[p.component] += p.numel
    return tuple(components.items())


def count_params(cfg: ModelConfig) -> ParamCount:
    """Exact parameter count of `build_model(cfg)`, and how many of them one token uses.

    Active = everything except the routed experts a token is not sent to (the embedding
    and output matrices count as active, as in Mixtral's and DeepSeek's published figures).
    """
    components = dict(_component_totals(cfg))
    total = sum(components.values())
    E, K = cfg.moe.num_experts, cfg.moe.top_k
    inactive = components["routed_experts"] * (E - K) // E
    return ParamCount(total=total, active=total - inactive, components=components)
