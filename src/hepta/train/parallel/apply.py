"""`parallelize`: expert parallelism, then activation checkpointing, then FSDP2, in the order
each expects (FSDP2 must see the expert DTensors and the checkpointed forwards)."""

from __future__ import annotations

from torch.distributed.device_mesh import DeviceMesh

from hepta.model.transformer import Transformer
from hepta.train.parallel.checkpointing import apply_activation_checkpointing
from hepta.train.parallel.expert_parallel import apply_expert_parallel
from hepta.train.parallel.fsdp import apply_fsdp
from hepta.train.parallel.mesh import MESH_AXES, expert_mesh


def parallelize(model: Transformer, mesh: DeviceMesh, *, ep: int, activation_checkpointing: bool = False,
                mixed_precision: bool = False) -> Transformer:
    """Apply FSDP2 + expert parallelism to `model` in place and return it.

    parallelize(model: Transformer, mesh: DeviceMesh, *, ep: int,
                activation_checkpointing: bool = False, mixed_precision: bool = False) -> Transformer

    mesh: the (dp_replicate, dp_shard) mesh of `build_mesh`.
    ep: expert-parallel degree, dividing dp_shard and num_experts (ParallelLayout.choose checks);
        the experts are split over ep consecutive ranks of dp_shard and FSDP-sharded over the
        rest. 1: the experts are FSDP-sharded only.
    activation_checkpointing: recompute each block in backward instead of keeping its activations.
    mixed_precision: bf16 parameters and compute, fp32 gradient reduction (FSDP2 policy).

    Nothing here communicates or reads parameter values: it works on a model on the meta
    device under a fake process group (backend "fake"), where the sharded parameters stay meta.
    Every rank must hold the same initial weights (same seed), or meta tensors.
    """
    assert mesh.mesh_dim_names == MESH_AXES, "use build_mesh"
    if ep > 1:
        apply_expert_parallel(model, expert_mesh(mesh, ep)["ep"])
    if activation_checkpointing:
        apply_activation_checkpointing(model)
    apply_fsdp(model, mesh, ep, mixed_precision=mixed_precision)
    return model
