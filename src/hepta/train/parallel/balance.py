"""Expert load statistics summed over the data-parallel ranks, so that every rank applies the
same aux-loss-free bias update (and routes alike) and the logs show the global batch's load."""

from __future__ import annotations

import torch
import torch.distributed as dist

from hepta.model.transformer import Transformer


@torch.no_grad()
def sync_expert_load(model: Transformer, group: dist.ProcessGroup | None) -> torch.Tensor:
    """Sum each MoE layer's load since the last bias update over `group`, in place; return it as [L_moe, E].

    One all-reduce for all layers. Without a group (one process) the local load is returned.
    """
    moes = model.moe_layers()
    if not moes:
        return torch.zeros(0, 0)
    load_LE = torch.stack([moe.load_since_update for moe in moes])
    if group is not None:
        dist.all_reduce(load_LE, group=group)
        for moe, load_E in zip(moes, load_LE):
            moe.load_since_update.copy_(load_E)
    return load_LE.cpu()


def use_global_load_in_aux_loss(model: Transformer, group: dist.ProcessGroup) -> None:
    """Make each router's aux loss use the expert load summed over `group`.

    The Switch loss E * sum_e f_e * P_e is linear in the router probabilities P, so with the
    global f and each rank's own P, the ranks' mean loss equals one process's loss on the
    global batch. f carries no gradient, so a plain all-reduce of a copy is enough.
    """

    def global_load(load_E: torch.Tensor) -> torch.Tensor:
        total_E = load_E.detach().clone()
        dist.all_reduce(total_E, group=group)
        return total_E

    for moe in model.moe_layers():
        moe.router.reduce_load = global_load
