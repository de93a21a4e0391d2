"""The parallel layout of a run and its DeviceMesh.

The mesh of a run has two axes, outermost first:
    dp_replicate  copies of the fully sharded model (HSDP across groups; 1 = plain FSDP)
    dp_shard      the FSDP group of the dense parameters
and `parallelize` splits dp_shard further, for the routed experts only, into
    efsdp x ep    FSDP shards of the experts x expert parallelism (each ep rank owns E / ep experts)
Flattening everything gives dp, the data-parallel group (batch split, loss and load reductions).

Expert parallelism borrows its ranks from the FSDP shard group, as torchtitan does: the dense
parameters are sharded over all of dp_shard, the experts are split across ep and sharded over
the rest. ep is innermost, so an expert-parallel group is a run of consecutive ranks, which
torchrun places on one node while the group fits in it: the all-to-all then stays on the
fastest links.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from hepta.errors import HeptaError
from hepta.scale.memory import divisors

MESH_AXES = ("dp_replicate", "dp_shard")
EXPERT_AXES = ("efsdp", "ep")


@dataclass(frozen=True)
class ParallelLayout:
    world_size: int
    dp_shard: int  # ranks one FSDP shard group spans
    ep: int  # expert-parallel degree (divides dp_shard and num_experts)

    @property
    def dp_replicate(self) -> int:
        return self.world_size // self.dp_shard

    @property
    def efsdp(self) -> int:
        return self.dp_shard // self.ep

    @classmethod
    def choose(cls, world_size: int, num_experts: int, *, dp_shard: int | None = None,
               ep: int | None = None) -> ParallelLayout:
        """The layout for `world_size` ranks, filling in what is not given.

        dp_shard defaults to the whole world (fully sharded, the least memory per rank).
        ep defaults to the largest degree that divides both dp_shard and num_experts: every
        MoE step all-gathers each rank's experts under FSDP, E x 3 x D x F weights per layer,
        while expert parallelism moves only the routed tokens, N x K x D activations per layer
        and direction; for MoE shapes the weights are the larger by far, so the most expert
        parallelism the shapes allow moves the fewest bytes. A model without MoE layers
        (num_experts 0) gets ep 1.
        """
        if world_size < 1:
            raise HeptaError(f"the world size must be at least 1, got {world_size}")
        if dp_shard is None:
            dp_shard = world_size
        if dp_shard < 1 or world_size % dp_shard:
            raise HeptaError(f"--dp-shard {dp_shard} does not divide the {world_size} ranks; choose one of "
                             f"{divisors(world_size)}")
        if ep is None:
            ep = math.gcd(dp_shard, num_experts) if num_experts > 0 else 1
        if ep < 1 or dp_shard % ep:
            raise HeptaError(f"--ep {ep} does not divide the FSDP shard group of {dp_shard} ranks; choose one of "
                             f"{divisors(dp_shard)}")
        if ep > 1 and num_experts % ep:
            fitting = [d for d in divisors(dp_shard) if num_experts % d == 0]
            raise HeptaError(f"--ep {ep} does not divide the model's {num_experts} experts; choose one of {fitting}")
        return cls(world_size, dp_shard, ep)

    def describe(self) -> str:
        return (f"{self.world_size} ranks: dp_replicate {self.dp_replicate} x dp_shard {self.dp_shard} "
                f"(experts: ep {self.ep} x efsdp {self.efsdp})")


def build_mesh(layout: ParallelLayout, device_type: str = "cpu") -> DeviceMesh:
    """The (dp_replicate, dp_shard) mesh of the layout.

    Needs an initialised default process group of layout.world_size ranks (a fake one is fine).
    """
    return init_device_mesh(device_type, (layout.dp_replicate, layout.dp_shard), mesh_dim_names=MESH_AXES)


def expert_mesh(mesh: DeviceMesh, ep: int) -> DeviceMesh:
    """The (dp_replicate, efsdp, ep) view of a build_mesh mesh (the same ranks, dp_shard split)."""
    dp_shard = mesh["dp_shard"].size()
    assert dp_shard % ep == 0, "ParallelLayout.choose checks that ep divides dp_shard"
    return mesh._unflatten("dp_shard", (dp_shard // ep, ep), EXPERT_AXES)


def dp_mesh(mesh: DeviceMesh) -> DeviceMesh:
    """All ranks of a build_mesh mesh as one axis, dp."""
    return mesh._flatten("dp")
