"""Dry run: the real model, sharded by hepta's real FSDP2 + expert parallelism over a fake process
group the size of one planned EP x FSDP group, and one training step measured on rank 0.

Nothing real is allocated. The model is built on the meta device, and `parallelize` (the call
`hepta train` makes under torchrun) shards it over `dist.init_process_group("fake")`, which
accepts any world size and never communicates. The local shards are then materialised as
fake tensors, and one forward, backward and AdamW step of a micro-batch of seq_len tokens
runs under FakeTensorMode with torch's FSDP memory tracker, which records the peak bytes by
kind (sharded and unsharded parameters, gradients, optimizer state, activations, temporaries,
collective buffers). The routed load is balanced (`fake_routing`), as the analytic plan assumes,
and the model's attention modules run a flash kernel as on GPUs (`fake_attention`).
Rank 0 is measured: uneven shards round up on the first ranks, so it is the busiest.

Tensor parallelism is represented by the model one TP rank holds (`tp_local_config`). Sharding
thousands of ranks costs seconds per block, so the run builds the model's first blocks: its
leading dense blocks and two MoE blocks (two blocks for a dense model), and once more with one
block fewer. The difference is what each further block adds at the peak (its sharded state
and the block input activation checkpointing keeps), which scales the measurement to the
model's depth.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from hepta.config import ModelConfig
from hepta.errors import HeptaError
from hepta.scale.memory import FP32, STATE_BYTES_PER_PARAM, tp_local_config
from hepta.scale.planner import Plan

# One planned EP x FSDP group of a 1M+ GPU plan is 8-10k ranks; the fake mesh stays cheap well beyond.
MAX_FAKE_RANKS = 65536


@dataclass(frozen=True)
class DryRun:
    ranks: int
    ep: int
    sampled_layers: int
    peak_by_kind: dict  # the tracker's peak of the sampled model, bytes by kind
    measured_parameter_bytes: float  # rank 0's fp32 shards, scaled to all layers
    analytic_parameter_bytes: float
    measured_total_bytes: float  # the step's peak, scaled to all layers
    analytic_total_bytes: float
    seconds: float
    uneven: list[str]  # parameters of which rank 0 holds far more than an even share

    def as_dict(self) -> dict:
        return {"uneven_shards": self.uneven, "ranks": self.ranks, "ep": self.ep, "sampled_layers": self.sampled_layers,
                "note": f"{self.sampled_layers} blocks measured and scaled per block to the full depth",
                "peak_by_kind": self.peak_by_kind,
                "analytic": {"parameters": self.analytic_parameter_bytes, "total": self.analytic_total_bytes},
                "measured": {"parameters": self.measured_parameter_bytes, "total": self.measured_total_bytes},
                "parameter_ratio": self.measured_parameter_bytes / self.analytic_parameter_bytes,
                "total_ratio": self.measured_total_bytes / self.analytic_total_bytes,
                "seconds": self.seconds}


@dataclass(frozen=True)
class _Step:
    block_bytes: list[float]  # rank 0's fp32 parameter shards per block
    root_bytes: float
    peak: dict[str, float]
    uneven: list[str]
    kept_activations: float  # activation bytes alive between forward and backward

    @property
    def peak_total(self) -> float:
        return self.peak["Total"]


def _local_bytes(module) -> float:
    from torch.distributed.tensor import DTensor

    return float(sum((p.to_local() if isinstance(p, DTensor) else p).numel() * FP32 for p in module.parameters()))


def _uneven_shards(model) -> list[str]:
    """Parameters whose rank-0 shard is over twice an even split of the global tensor over its
    mesh, the most excess bytes first (small tensors split over more ranks than rows are harmless)."""
    from torch.distributed.tensor import DTensor

    found = []
    for name, p in model.named_parameters():
        if not isinstance(p, DTensor):
            continue
        local, ranks = p.to_local().numel(), p.device_mesh.size()
        excess = (local - p.numel() / ranks) * FP32
        if local * ranks > 2 * p.numel() and excess > 2**20:
            found.append((excess, f"{name} {tuple(p.to_local().shape)} of {tuple(p.shape)} over {ranks} ranks "
                                  f"({excess / 1e9:.2f} GB over an even share)"))
    return [text for _, text in sorted(found, reverse=True)]


def _measure_step(cfg: ModelConfig, mesh, ep: int, seq_len: int, checkpointing: bool) -> _Step:
    import torch
    import torch.nn.functional as F
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker

    from hepta.model.transformer import Transformer
    from hepta.train.dryrun.fake_attention import use_flash_attention
    from hepta.train.dryrun.fake_routing import BalancedRouting
    from hepta.train.parallel import parallelize

    with torch.device("meta"):
        model = Transformer(cfg, experts_implementation="grouped_mm")  # the GPU kernel: its saved tensors count
    use_flash_attention(model)
    parallelize(model, mesh, ep=ep, activation_checkpointing=checkpointing, mixed_precision=True)
    block_bytes = [_local_bytes(block) for block in model.layers]
    root_bytes = _local_bytes(model) - sum(block_bytes)
    uneven = _uneven_shards(model)

    with FakeTensorMode(allow_non_fake_inputs=True):
        model.to_empty(device="cpu")
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        for p in model.parameters():  # a previous step's optimizer state, as in steady training
            p.grad = torch.zeros_like(p)
        optimizer.step()
        optimizer.zero_grad()
        ids = torch.randint(0, cfg.vocab_size, (1, seq_len))
        tracker = FSDPMemTracker(model, optimizer)
        tracker.track_inputs((ids,))
        with tracker, BalancedRouting():
            logits = model(ids)
            loss = F.cross_entropy(logits.float().flatten(0, 1), ids.flatten())  # as the training loop
            (after_forward,) = tracker.get_tracker_snapshot("current").values()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        (peak,) = tracker.get_tracker_snapshot("peak").values()
    kept = float(sum(v for k, v in after_forward.items() if getattr(k, "value", k) == "Activation"))
    return _Step(block_bytes, root_bytes, {str(getattr(k, "value", k)): float(v) for k, v in peak.items()}, uneven,
                 kept)


def dry_run(plan: Plan) -> DryRun:
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore

    from hepta.train.parallel import ParallelLayout, build_mesh

    layout, cfg, seq = plan.fit.layout, plan.request.cfg, plan.request.sequence_length
    if layout.pp != 1:
        raise HeptaError(f"the dry run measures layouts without pipeline stages; pin --pp 1 "
                         f"(the plan chose pp {layout.pp})")
    if layout.fsdp > MAX_FAKE_RANKS:
        raise HeptaError(f"the planned EP x FSDP group of {layout.fsdp} ranks is above the dry run's "
                         f"{MAX_FAKE_RANKS}; pin a smaller group with --fsdp")
    if dist.is_initialized():
        raise HeptaError("the dry run starts its own fake process group; run it outside torchrun")
    local = tp_local_config(cfg, layout.tp)
    kinds = [local.is_moe_layer(i) for i in range(local.num_layers)]
    last_kind = kinds[-1]  # the kind most of the depth is (MoE after the leading dense blocks)
    same_kind = [i for i, moe in enumerate(kinds) if moe == last_kind]
    depth = max(same_kind[1], max((i for i, moe in enumerate(kinds) if moe != last_kind), default=0)) + 1
    assert all(kinds[i] == last_kind for i in range(depth, local.num_layers)), \
        "the presets put every block after the sampled ones in the last sampled block's kind"
    sample = lambda n: local.with_changes({  # noqa: E731
        "num_layers": n, "moe.num_dense_layers": min(n, local.moe.num_dense_layers),
        "moe.dense_layers": tuple(i for i in local.moe.dense_layers if i < n)})

    start = time.perf_counter()
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=layout.fsdp)
    try:
        mesh = build_mesh(ParallelLayout.choose(layout.fsdp, local.moe.num_experts if local.has_moe else 0,
                                                dp_shard=layout.fsdp, ep=layout.ep), "cpu")
        full = _measure_step(sample(depth), mesh, layout.ep, seq, plan.fit.checkpointing)
        shorter = _measure_step(sample(depth - 1), mesh, layout.ep, seq, plan.fit.checkpointing)
    finally:
        dist.destroy_process_group()
    further = local.num_layers - depth
    per_block = full.block_bytes[-1]
    parameters = full.root_bytes + sum(full.block_bytes) + further * per_block
    # what one more block adds at the peak: its sharded state (fp32 weight, gradient, two AdamW
    # moments) and the activations it keeps from forward to backward (the difference of the two
    # runs after forward); the peak comes after forward, when every block's are alive
    kept_activations = full.kept_activations - shorter.kept_activations
    total = full.peak_total + further * (per_block / FP32 * STATE_BYTES_PER_PARAM + kept_activations)
    return DryRun(layout.fsdp, layout.ep, depth, full.peak, parameters, plan.fit.memory.parameters,
                  total, plan.fit.memory.total, time.perf_counter() - start, full.uneven)
