"""Gradient-norm clipping over parameters that live on different meshes.

Under FSDP + expert parallelism the dense gradients are DTensors on the dp_shard axis and the
expert gradients DTensors on (efsdp, ep); torch's clip_grad_norm_ cannot combine norms across
meshes. Each rank sums the squares of its local shards, and one all-reduce over all ranks
adds them; a shard replicated over some mesh axes is counted once by dividing by its copies.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor, Replicate


def _copies(tensor: DTensor) -> int:
    return math.prod(tensor.device_mesh.size(i) for i, p in enumerate(tensor.placements) if isinstance(p, Replicate))


@torch.no_grad()
def clip_grad_norm(params: list[nn.Parameter], max_norm: float, group: dist.ProcessGroup | None) -> float:
    """Scale the gradients so that their global L2 norm is at most max_norm; return the norm before."""
    grads = [p.grad for p in params if p.grad is not None]
    if group is None:
        return torch.nn.utils.clip_grad_norm_(params, max_norm).item()
    squares = torch.zeros((), dtype=torch.float64, device=grads[0].device if grads else "cpu")
    for g in grads:
        if isinstance(g, DTensor):
            squares += g.to_local().double().square().sum() / _copies(g)
        else:  # not sharded: the same gradient on every rank of the group
            squares += g.double().square().sum() / dist.get_world_size(group)
    dist.all_reduce(squares, group=group)
    norm = squares.sqrt().item()
    scale = max_norm / (norm + 1e-6)
    if scale < 1:
        for g in grads:
            (g.to_local() if isinstance(g, DTensor) else g).mul_(scale)
    return norm
