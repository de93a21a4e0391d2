"""FSDP2 (`fully_shard`) on every block and the root, with the routed experts as units of their own.

Dense parameters are sharded on dim 0 over dp_shard (replicated over dp_replicate: HSDP when
that axis is larger than 1). Routed experts are sharded over efsdp only, since the ep axis
already splits them, and on the first dim that divides evenly among the efsdp ranks:

  * dim 0 (whole experts per rank) when the local expert count divides: FSDP2 all-gathers a
    dim-0 shard straight into the unsharded tensor, while any other dim costs a copy out of
    the gather buffer. Measured on 2 gloo processes (benchmarks/dist_step.py), gathering the
    experts sharded on dim 0 takes 0.90x the time of dim 1 for `tiny` and 0.77x for `small`;
  * otherwise dim 1 (2F rows of gate_up_proj, D rows of down_proj), then dim 2: FSDP2 pads an
    uneven dim, and when there are fewer experts than ranks some ranks would hold only padding
    while others hold whole experts.

Gradients: FSDP averages over the ranks of its own mesh, but every rank's loss is a mean over
its own part of the global batch, so every gradient must be divided by the whole data-parallel
world; the experts' group spans fewer ranks, and its divide factor is set to the world size.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, Shard

from hepta.model.moe import MoE
from hepta.model.transformer import Transformer
from hepta.scale.memory import expert_shard_dim
from hepta.train.parallel.mesh import expert_mesh


def mixed_precision_policy(enabled: bool) -> MixedPrecisionPolicy:
    # bf16 parameters and compute, fp32 gradient reduction: summing many bf16 gradients loses
    # the small ones, and the optimizer keeps fp32 master weights in the shards anyway.
    if not enabled:
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


def apply_fsdp(model: Transformer, mesh: DeviceMesh, ep: int, *, mixed_precision: bool = False) -> None:
    """Shard `model` in place over a build_mesh mesh; the experts over its (dp_replicate, efsdp) part."""
    policy = mixed_precision_policy(mixed_precision)
    replicated = mesh["dp_replicate"].size() > 1
    dense_mesh = mesh if replicated else mesh["dp_shard"]
    experts_3d = expert_mesh(mesh, ep)
    experts_fsdp_mesh = experts_3d["dp_replicate", "efsdp"] if replicated else experts_3d["efsdp"]
    efsdp, world = experts_3d["efsdp"].size(), mesh.size()

    def expert_placement(param: nn.Parameter) -> Shard:
        local = param.to_local() if isinstance(param, DTensor) else param
        return Shard(expert_shard_dim(tuple(local.shape), efsdp))

    for block in model.layers:
        if isinstance(block.ffn, MoE):
            experts = block.ffn.experts
            fully_shard(experts, mesh=experts_fsdp_mesh, mp_policy=policy, shard_placement_fn=expert_placement)
            experts.set_gradient_divide_factor(float(world))
        fully_shard(block, mesh=dense_mesh, mp_policy=policy)
    # The root's parameters (embedding, final norm, output) are used at both ends of the step:
    # keeping them gathered after forward saves one all-gather per step for little memory.
    fully_shard(model, mesh=dense_mesh, mp_policy=policy, reshard_after_forward=False)
