"""Dry run: the real model, sharded by hepta's real FSDP2 + expert parallelism over a fake process
group the size of one planned EP x FSDP group, measured per rank.

Nothing is allocated: the model is built on the meta device, and `parallelize` (the same call
`hepta train` makes under torchrun) shards it over `dist.init_process_group("fake")`, which
accepts any world size and never communicates. The local shard of every parameter on rank 0
(the busiest: uneven shards round up on the first ranks) is what that rank would hold as fp32
master weights. Tensor parallelism is represented by the model one TP rank holds
(`tp_local_config`). Sharding thousands of ranks takes a couple of seconds per block, so the
run builds the first blocks of each kind (the leading dense blocks and two MoE blocks) and
scales each kind's measured bytes to the model's depth; the root (embedding, norm, output) is
measured as is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from hepta.errors import HeptaError
from hepta.scale.memory import FP32, tp_local_config
from hepta.scale.planner import Plan

# Above this many ranks the fake mesh and FSDP's bookkeeping stop being cheap; one planned
# EP x FSDP group of a 1M+ GPU plan is 8-10k ranks.
MAX_FAKE_RANKS = 65536


@dataclass(frozen=True)
class DryRun:
    ranks: int
    ep: int
    sampled_layers: int
    bytes_per_dense_block: float
    bytes_per_moe_block: float
    root_bytes: float
    measured_parameter_bytes: float  # scaled to all layers
    analytic_parameter_bytes: float
    seconds: float

    @property
    def ratio(self) -> float:
        return self.measured_parameter_bytes / self.analytic_parameter_bytes

    def as_dict(self) -> dict:
        return {"ranks": self.ranks, "ep": self.ep, "sampled_layers": self.sampled_layers,
                "bytes_per_dense_block": self.bytes_per_dense_block, "bytes_per_moe_block": self.bytes_per_moe_block,
                "root_bytes": self.root_bytes,
                "note": f"{self.sampled_layers} blocks sharded and scaled per block to the full depth",
                "analytic": {"parameters": self.analytic_parameter_bytes},
                "measured": {"parameters": self.measured_parameter_bytes},
                "ratio": self.ratio, "seconds": self.seconds}


def _local_bytes(module) -> float:
    from torch.distributed.tensor import DTensor

    return float(sum((p.to_local() if isinstance(p, DTensor) else p).numel() * FP32 for p in module.parameters()))


def dry_run(plan: Plan) -> DryRun:
    import torch
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore

    from hepta.model.moe import MoE
    from hepta.model.transformer import Transformer
    from hepta.train.parallel import ParallelLayout, build_mesh, parallelize

    layout, cfg = plan.fit.layout, plan.request.cfg
    if layout.pp != 1:
        raise HeptaError(f"the dry run shards one pipeline stage's model only with pp 1; pin --pp 1 "
                         f"(the plan chose pp {layout.pp})")
    if layout.fsdp > MAX_FAKE_RANKS:
        raise HeptaError(f"the planned EP x FSDP group of {layout.fsdp} ranks is above the dry run's "
                         f"{MAX_FAKE_RANKS}; pin a smaller group with --fsdp")
    if dist.is_initialized():
        raise HeptaError("the dry run starts its own fake process group; run it outside torchrun")
    local = tp_local_config(cfg, layout.tp)
    moe_indices = [i for i in range(local.num_layers) if local.is_moe_layer(i)]
    dense_indices = [i for i in range(local.num_layers) if not local.is_moe_layer(i)]
    depth = max(moe_indices[:2] + dense_indices[:1]) + 1  # the first dense and the first two MoE blocks
    sample = local.replace(num_layers=depth, dense_layers=tuple(i for i in local.dense_layers if i < depth))

    start = time.perf_counter()
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=layout.fsdp)
    try:
        mesh = build_mesh(ParallelLayout.choose(layout.fsdp, local.num_experts if local.has_moe else 0,
                                                dp_shard=layout.fsdp, ep=layout.ep), "cpu")
        with torch.device("meta"):
            model = Transformer(sample)
        parallelize(model, mesh, ep=layout.ep, activation_checkpointing=plan.fit.checkpointing,
                    mixed_precision=True)
        blocks = {"moe": [], "dense": []}
        for block in model.layers:
            blocks["moe" if isinstance(block.ffn, MoE) else "dense"].append(_local_bytes(block))
        root = _local_bytes(model) - sum(map(sum, blocks.values()))
    finally:
        dist.destroy_process_group()
    per_moe = max(blocks["moe"], default=0.0)
    per_dense = max(blocks["dense"], default=0.0)
    measured = root + per_moe * local.num_moe_layers + per_dense * (local.num_layers - local.num_moe_layers)
    return DryRun(layout.fsdp, layout.ep, depth, per_dense, per_moe, root, measured,
                  plan.fit.memory.parameters, time.perf_counter() - start)
