"""The process group of a run launched by torchrun, and what each rank needs to know about it.

torchrun (or SLURM's srun with the same variables) sets RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT; a run without them, or with WORLD_SIZE=1, is one process and
uses no process group at all. Backend: nccl on GPUs (one per local rank), gloo on CPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh

from hepta.errors import HeptaError
from hepta.train.parallel.mesh import ParallelLayout, build_mesh, dp_mesh


@dataclass
class DistributedRun:
    rank: int
    world_size: int
    device: torch.device
    layout: ParallelLayout
    mesh: DeviceMesh  # (dp_replicate, dp_shard)
    dp_group: dist.ProcessGroup  # all ranks, flattened: batch split and the reductions of the logs
    owns_group: bool  # the process group was started here, so it is ended here

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        dist.barrier(group=self.dp_group)

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def world_size_from_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def start_distributed(num_experts: int, *, dp_shard: int | None, ep: int | None) -> DistributedRun | None:
    """Join the process group torchrun describes, or return None for a single process."""
    world_size = dist.get_world_size() if dist.is_initialized() else world_size_from_env()
    if world_size == 1:
        for flag, value in (("--ep", ep), ("--dp-shard", dp_shard)):
            if value is not None and value > 1:
                raise HeptaError(f"{flag} {value} needs several processes; launch with "
                                 f"torchrun --nproc-per-node {value} -m hepta train ...")
        return None
    layout = ParallelLayout.choose(world_size, num_experts, dp_shard=dp_shard, ep=ep)
    owns_group = not dist.is_initialized()
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        if owns_group:
            dist.init_process_group("nccl", device_id=device)
    else:
        device = torch.device("cpu")
        if owns_group:
            dist.init_process_group("gloo")
    mesh = build_mesh(layout, device.type)
    return DistributedRun(dist.get_rank(), world_size, device, layout, mesh, dp_mesh(mesh).get_group(), owns_group)
