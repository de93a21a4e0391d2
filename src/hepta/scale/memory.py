"""Per-GPU memory of training under a parallel layout, by component, from the model's shape.

Precision (FSDP2 with hepta's bf16 mixed-precision policy):
- sharded parameters are the fp32 master weights (4 B), their gradients fp32 (4 B), and
  AdamW keeps two fp32 moments (8 B): 16 B per parameter, divided over the shard group;
- FSDP units (each block's dense part, each MoE layer's experts, the root's embedding and
  output) are all-gathered in bf16 just before they run, with the next unit prefetched
  meanwhile; in backward a unit's unsharded bf16 gradient and the fp32 copy its
  reduce-scatter sends exist as well. The root stays gathered for the whole step
  (`reshard_after_forward=False`), and the output matrix's gradient waits for the root's
  reduce-scatter at the end of backward;
- activations are bf16 except where the model computes in fp32 (RMSNorm inputs, the router,
  the loss), counted as the model code saves them for backward, with flash attention (no
  S x S score matrix is stored).

Layout (degrees multiply to the GPU count): `tp` tensor parallel without sequence
parallelism (Megatron-style: each rank holds 1/tp of the heads, of every FFN and expert
width and of the vocabulary, and full-width norms, router and MLA latent projections: the
model `tp_local_config` describes), `pp` pipeline stages (1F1B: stage i holds pp - i
micro-batches in flight), and dp data parallel = dp_replicate x fsdp: parameters are sharded
over an `fsdp` group of ranks (the EP x FSDP group) and replicated across groups. Experts are
split over `ep` ranks inside the group (ep divides fsdp) and sharded over the other fsdp / ep,
so every parameter is sharded fsdp ways either way.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from hepta.config import ModelConfig, layer_param_shapes, outer_param_shapes

BF16, FP32, INT64 = 2, 4, 8
STATE_BYTES_PER_PARAM = FP32 + FP32 + 2 * FP32  # master weight, gradient, AdamW m and v


@dataclass(frozen=True)
class Layout:
    tp: int = 1
    pp: int = 1
    ep: int = 1
    fsdp: int = 1  # the EP x FSDP shard group
    dp_replicate: int = 1

    @property
    def dp(self) -> int:
        return self.fsdp * self.dp_replicate

    def as_dict(self) -> dict:
        return {"tp": self.tp, "ep": self.ep, "pp": self.pp, "dp": self.dp, "fsdp": self.fsdp,
                "dp_replicate": self.dp_replicate}

    def describe(self) -> str:
        return (f"tp {self.tp} x pp {self.pp} x dp {self.dp} (dp_replicate {self.dp_replicate} x fsdp {self.fsdp}, "
                f"ep {self.ep} inside fsdp)")


def divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def tp_divides(cfg: ModelConfig, tp: int) -> bool:
    widths = [cfg.attention.num_heads, cfg.vocab_size]
    widths += [cfg.attention.num_kv_heads] if cfg.attention.kind == "gqa" else []
    widths += [cfg.moe.dense_hidden_dim] if cfg.num_moe_layers < cfg.num_layers else []
    widths += [cfg.moe.expert_hidden_dim, cfg.moe.shared_hidden_dim] if cfg.has_moe else []
    return all(w % tp == 0 for w in widths)


@functools.lru_cache(maxsize=256)
def tp_local_config(cfg: ModelConfig, tp: int) -> ModelConfig:
    """The slice of the model one tensor-parallel rank holds, as a model of its own."""
    assert tp_divides(cfg, tp), "the planner only tries tp degrees that divide the widths"
    if tp == 1:
        return cfg
    shared = None if cfg.moe.shared_expert_hidden_dim is None else cfg.moe.shared_expert_hidden_dim // tp
    return cfg.with_changes({
        "vocab_size": cfg.vocab_size // tp, "attention.num_heads": cfg.attention.num_heads // tp,
        "attention.num_kv_heads": cfg.attention.num_kv_heads // tp or 1,
        "moe.dense_hidden_dim": cfg.moe.dense_hidden_dim // tp,
        "moe.expert_hidden_dim": cfg.moe.expert_hidden_dim // tp,
        "moe.shared_expert_hidden_dim": shared,
        # the vocabulary's code blocks are split with it (so the slice still holds room for text)
        "codes.image": cfg.codes.image // tp, "codes.audio": cfg.codes.audio // tp})


# --- parameters ------------------------------------------------------------------------


def _rows_columns(shape: tuple[int, ...]) -> tuple[int, int]:
    """A parameter as FSDP shards it: rows (dim 0) and everything after them (1 for a vector)."""
    return shape[0], math.prod(shape[1:])


@functools.lru_cache(maxsize=4096)
def block_tensors(cfg: ModelConfig, layer: int) -> tuple[tuple[int, int], ...]:
    """(rows, columns) of a block's parameters outside the routed experts (FSDP shards rows)."""
    return tuple(_rows_columns(p.shape) for p in layer_param_shapes(cfg, layer) if p.component != "routed_experts")


@functools.lru_cache(maxsize=4096)
def block_params(cfg: ModelConfig, layer: int) -> tuple[int, int]:
    """(dense part, routed experts) parameters of one transformer block."""
    shapes = list(layer_param_shapes(cfg, layer))
    experts = sum(p.numel for p in shapes if p.component == "routed_experts")
    return sum(p.numel for p in shapes) - experts, experts


def root_tensors(cfg: ModelConfig) -> list[tuple[int, int]]:
    return [_rows_columns(p.shape) for p in outer_param_shapes(cfg)]


def rank0_rows(tensors, ranks: int) -> int:
    """Parameters rank 0 holds when each tensor's rows are split into `ranks` chunks (torch.chunk:
    every chunk rounded up, so rank 0 always gets a full one)."""
    return sum(min(rows, -(-rows // ranks)) * cols for rows, cols in tensors)


def root_params(cfg: ModelConfig) -> int:
    """Embedding, final norm and output: the parameters outside the blocks."""
    return sum(rows * cols for rows, cols in root_tensors(cfg))


def stage_layers(cfg: ModelConfig, pp: int) -> list[range]:
    """Contiguous layer ranges of the pipeline stages, the first ones one layer longer if uneven."""
    base, extra = divmod(cfg.num_layers, pp)
    starts = [i * base + min(i, extra) for i in range(pp + 1)]
    return [range(starts[i], starts[i + 1]) for i in range(pp)]


def expert_shard_dim(shape: tuple[int, ...], shards: int) -> int:
    """The dim FSDP shards a stacked expert weight on: the first that splits evenly, else dim 0.

    FSDP2 shards unevenly only on dim 0; when no dim splits evenly, ranks past the rows get
    nothing and the first ranks hold whole experts, which the memory estimate then shows.
    """
    return next((d for d, size in enumerate(shape) if size % shards == 0), 0)


def expert_params_per_rank(cfg: ModelConfig, ep: int, efsdp: int) -> float:
    """Routed-expert parameters of one MoE layer on the busiest rank: E / ep experts, each weight
    sharded over efsdp ranks on `expert_shard_dim`, the first rank holding the rounded-up share."""
    El, D, F = cfg.moe.num_experts // ep, cfg.dim, cfg.moe.expert_hidden_dim
    total = 0.0
    for shape in ((El, 2 * F, D), (El, D, F)):  # gate_up_proj, down_proj
        dim = expert_shard_dim(shape, efsdp)
        total += -(-shape[dim] // efsdp) * math.prod(shape) / shape[dim]
    return total


def fsdp_units(cfg: ModelConfig, layers: range, ep: int) -> list[float]:
    """Parameters one GPU all-gathers per FSDP unit, in forward order: each block's dense part, its experts."""
    units = []
    for layer in layers:
        dense, experts = block_params(cfg, layer)
        units += [dense] + ([experts / ep] if experts else [])
    return units


# --- activations per token ------------------------------------------------------------------


def _norm_bytes(width: int) -> float:
    return FP32 * width + FP32  # RMSNorm keeps its fp32 input and rstd


def _swiglu_bytes(hidden: int) -> float:
    return BF16 * (2 * hidden + hidden + hidden)  # gate/up output, silu(gate), their product


def attention_activation_bytes(cfg: ModelConfig) -> float:
    """Bytes one token's attention sub-block keeps for backward (its norm included)."""
    d, H = cfg.dim, cfg.attention.num_heads
    norm = _norm_bytes(d) + BF16 * d  # and the bf16 output the projections keep
    if cfg.attention.kind == "mla":
        qk = cfg.attention.qk_nope_head_dim + cfg.attention.qk_rope_head_dim
        a = cfg.attention
        C, R, Dv, Q = a.kv_lora_rank, a.qk_rope_head_dim, a.v_head_dim, a.q_lora_rank or 0
        low_rank = (BF16 * Q + _norm_bytes(Q) + BF16 * Q if Q else 0) + BF16 * (C + R) + _norm_bytes(C) + BF16 * C
        heads = BF16 * H * qk + BF16 * H * (cfg.attention.qk_nope_head_dim + Dv)  # q_b and kv_b outputs
        sdpa = BF16 * H * 2 * qk + BF16 * H * Dv + FP32 * H  # concatenated q and k, output, logsumexp
        return norm + low_rank + heads + sdpa + BF16 * H * Dv  # o_proj's contiguous input
    G, Dh = cfg.attention.num_kv_heads, cfg.attention.head_dim
    if cfg.attention.qk_norm:
        per_head = cfg.attention.qk_norm_per_head
        qk_norm = _norm_bytes(Dh) * (H + G) if per_head else _norm_bytes(H * Dh) + _norm_bytes(G * Dh)
        qk_norm += BF16 * (H + G) * Dh  # the normalised q and k RoPE keeps
    else:
        qk_norm = 0
    sdpa = BF16 * (H + 2 * G) * Dh + BF16 * H * Dh + FP32 * H  # q, k, v after RoPE, output, logsumexp
    return norm + BF16 * (H + 2 * G) * Dh + qk_norm + sdpa + BF16 * H * Dh  # projections' outputs; o_proj input


def ffn_activation_bytes(cfg: ModelConfig, layer: int) -> float:
    """Bytes one token's FFN sub-block keeps for backward (its norm included)."""
    d = cfg.dim
    norm = _norm_bytes(d) + BF16 * d
    if not cfg.is_moe_layer(layer):
        return norm + _swiglu_bytes(cfg.moe.dense_hidden_dim)
    K, E = cfg.moe.top_k, cfg.moe.num_experts
    router = FP32 * d + 2 * FP32 * E + (INT64 + 2 * FP32) * K  # fp32 input, logits and scores; choices, gates
    routed = K * (BF16 * d + _swiglu_bytes(cfg.moe.expert_hidden_dim) + BF16 * d + INT64)  # rows in, expert, rows out
    shared = _swiglu_bytes(cfg.moe.shared_hidden_dim) if cfg.moe.shared_hidden_dim else 0
    return norm + router + routed + shared


@functools.lru_cache(maxsize=4096)
def layer_activation_bytes(cfg: ModelConfig, layer: int) -> float:
    return attention_activation_bytes(cfg) + ffn_activation_bytes(cfg, layer)


def loss_activation_bytes(cfg: ModelConfig) -> float:
    """Per token: final norm, bf16 logits, their fp32 copy and the fp32 log-softmax of the loss."""
    return _norm_bytes(cfg.dim) + BF16 * cfg.dim + (BF16 + FP32 + FP32) * cfg.vocab_size


# --- the whole GPU ------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainMemory:
    """Bytes per GPU on the busiest pipeline stage."""
    parameters: float  # sharded fp32 master weights
    gradients: float  # sharded fp32
    optimizer: float  # AdamW moments, fp32
    gathered: float  # unsharded bf16 units and gradients in flight
    activations: float

    @property
    def total(self) -> float:
        return self.parameters + self.gradients + self.optimizer + self.gathered + self.activations

    def as_dict(self) -> dict:
        return {"parameters": self.parameters, "gradients": self.gradients, "optimizer": self.optimizer,
                "gathered": self.gathered, "activations": self.activations, "total": self.total}


def stage_owned_params(local: ModelConfig, layout: Layout, stage: int) -> float:
    """Parameters rank 0 of a stage owns: rows of every dense tensor split over fsdp, experts as sharded."""
    layers = stage_layers(local, layout.pp)[stage]
    owned = sum(rank0_rows(block_tensors(local, layer), layout.fsdp) for layer in layers)
    root = root_tensors(local)
    owned += rank0_rows(root[:1] if stage == 0 else [], layout.fsdp)
    owned += rank0_rows(root[1:] if stage == layout.pp - 1 else [], layout.fsdp)
    moe_layers = sum(local.is_moe_layer(layer) for layer in layers)
    experts = expert_params_per_rank(local, layout.ep, layout.fsdp // layout.ep) if moe_layers else 0
    return owned + moe_layers * experts


def gathered_bytes(local: ModelConfig, layers: range, ep: int) -> float:
    """Peak of unsharded parameters and gradients: two consecutive units in bf16 (running and
    prefetched) with the running one's bf16 gradient and fp32 reduce-scatter copy, plus the
    root kept gathered and the output's gradient held until the end of backward."""
    units = fsdp_units(local, layers, ep)
    pairs = [BF16 * (a + b) + (BF16 + FP32) * a for a, b in zip(units, units[1:] + [0])]
    root = BF16 * root_params(local) + BF16 * local.vocab_size * local.dim * (not local.tie_embeddings)
    return max(pairs) + root


def activation_bytes(local: ModelConfig, layers: range, in_flight: int, tokens: int, checkpointing: bool,
                     with_loss: bool) -> float:
    """Activations of `in_flight` micro-batches of `tokens` tokens through `layers`.

    Without checkpointing every layer keeps what it saves; with per-block checkpointing only
    each block's bf16 input stays, and backward recomputes one block at a time.
    """
    if checkpointing:
        per_token = len(layers) * BF16 * local.dim * in_flight + max(layer_activation_bytes(local, l) for l in layers)
    else:
        per_token = sum(layer_activation_bytes(local, l) for l in layers) * in_flight
    return (per_token + (loss_activation_bytes(local) if with_loss else 0)) * tokens


@functools.lru_cache(maxsize=65536)
def train_memory(cfg: ModelConfig, layout: Layout, tokens: int, checkpointing: bool) -> TrainMemory:
    """Memory of the busiest GPU for micro-batches of `tokens` tokens (one sequence or more)."""
    local = tp_local_config(cfg, layout.tp)
    busiest = None
    for stage, layers in enumerate(stage_layers(local, layout.pp)):
        owned = stage_owned_params(local, layout, stage)
        memory = TrainMemory(
            parameters=owned * FP32, gradients=owned * FP32, optimizer=owned * 2 * FP32,
            gathered=gathered_bytes(local, layers, layout.ep),
            activations=activation_bytes(local, layers, layout.pp - stage, tokens, checkpointing,
                                         with_loss=stage == layout.pp - 1))
        if busiest is None or memory.total > busiest.total:
            busiest = memory
    return busiest
