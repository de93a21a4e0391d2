"""Parallel training on torch.distributed: DeviceMesh, FSDP2, expert parallelism, activation
checkpointing, applied to the unchanged `Transformer`.

    layout = ParallelLayout.choose(world_size, cfg.moe.num_experts, dp_shard=None, ep=None)
    mesh = build_mesh(layout, device_type)
    parallelize(model, mesh, ep=layout.ep, activation_checkpointing=False, mixed_precision=False)
"""

from hepta.train.parallel.apply import parallelize
from hepta.train.parallel.mesh import MESH_AXES, ParallelLayout, build_mesh, dp_mesh, expert_mesh

__all__ = ["MESH_AXES", "ParallelLayout", "build_mesh", "dp_mesh", "expert_mesh", "parallelize"]
