"""Expert parallelism: each rank of the `ep` axis owns num_experts / ep consecutive experts, and
the routed token copies travel to their experts and back with all-to-all.

Dims: N local tokens, D model dim, F expert hidden dim, E experts, El = E / ep local experts,
M routed copies sent from this rank (grouped by global expert), R copies received here.

Applied to the unchanged model: the stacked expert weights become DTensors sharded on dim 0
over the ep axis (so checkpoints keep their global [E, ...] shape and reshard to any layout),
and each `GroupedExperts` gets the forward below in place of the local one. The router,
the dispatch order and the weighted combine of `MoE` stay as they are: the experts receive
(x_ND, weight_M, token_M, counts) with copies grouped by global expert, which makes the copies
for each destination rank one contiguous run.
"""

from __future__ import annotations

import torch
from torch.distributed._functional_collectives import all_to_all_single, all_to_all_single_autograd
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Shard
from torch import nn

from hepta.model.experts import GroupedExperts, moe_experts_fused, moe_experts_grouped_mm
from hepta.model.transformer import Transformer


class ExpertParallelGroupedExperts(GroupedExperts):
    """GroupedExperts whose weights hold only this rank's experts; tokens come and go by all-to-all."""

    ep_mesh: DeviceMesh

    def forward(self, x_ND: torch.Tensor, weight_M: torch.Tensor, token_M: torch.Tensor,
                counts: list[int]) -> torch.Tensor:
        group = self.ep_mesh.get_group()
        ep = self.ep_mesh.size()
        E = len(counts)
        El = E // ep
        device_type = x_ND.device.type
        dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else x_ND.dtype

        counts_E = torch.tensor(counts, dtype=torch.int64, device=x_ND.device)
        with torch.no_grad():  # how many copies each source rank sends to each of my experts: [ep, El]
            received_counts = torch.ops._c10d_functional.wait_tensor(
                all_to_all_single(counts_E, None, None, group)).view(ep, El)
        send_splits = [sum(counts[r * El:(r + 1) * El]) for r in range(ep)]
        received_counts_cpu = received_counts.cpu()
        receive_splits = received_counts_cpu.sum(dim=1).tolist()

        x_MD = x_ND.to(dtype)[token_M]
        x_RD = all_to_all_single_autograd(x_MD, receive_splits, send_splits, group)
        # Arrivals are ordered by source rank, then local expert; the expert kernel gathers them
        # grouped by expert and adds each result back at its arrival row, so one stable sort of
        # the arrivals by expert is all the regrouping needed.
        local_expert_R = torch.arange(El, device=x_ND.device).repeat(ep).repeat_interleave(
            received_counts.flatten(), output_size=sum(receive_splits))
        order_R = local_expert_R.argsort(stable=True)
        local_counts = received_counts_cpu.sum(dim=0).tolist()

        gate_up, down = self.gate_up_proj, self.down_proj
        if isinstance(gate_up, DTensor):  # FSDP hands the ep-sharded DTensor; compute on the local experts
            gate_up, down = gate_up.to_local(), down.to_local()
        ones_R = x_RD.new_ones(x_RD.shape[0])  # gate weights are applied at the source, after the return trip
        with torch.autocast(device_type, enabled=False):
            impl = self.implementation
            if impl == "auto":
                impl = "grouped_mm" if x_ND.is_cuda else "fused"
            experts = moe_experts_grouped_mm if impl == "grouped_mm" else moe_experts_fused
            y_RD = experts(x_RD, ones_R, gate_up.to(dtype), down.to(dtype), order_R, local_counts)
            y_MD = all_to_all_single_autograd(y_RD, send_splits, receive_splits, group)
            y_MD = y_MD * weight_M.to(dtype).unsqueeze(1)
            return x_ND.new_zeros(x_ND.shape, dtype=dtype).index_add_(0, token_M, y_MD)


def apply_expert_parallel(model: Transformer, ep_mesh: DeviceMesh) -> None:
    """Shard every MoE layer's routed experts over `ep_mesh` (1-D) and switch them to all-to-all.

    No communication: each rank keeps its own slice of the weights it already holds (all ranks
    hold the same initial weights, or meta tensors), wrapped as a DTensor without a check.
    """
    ep, rank = ep_mesh.size(), ep_mesh.get_local_rank()
    for moe in model.moe_layers():
        experts = moe.experts
        assert type(experts) is GroupedExperts, "expert parallelism is applied once, to plain GroupedExperts"
        num_experts = experts.gate_up_proj.shape[0]
        assert num_experts % ep == 0, "the layout checks that ep divides num_experts"
        El = num_experts // ep
        for name, param in list(experts.named_parameters(recurse=False)):
            local = param.detach()[rank * El:(rank + 1) * El]
            dtensor = DTensor.from_local(local.clone() if local.device.type != "meta" else local, ep_mesh,
                                         [Shard(0)], run_check=False)
            experts.register_parameter(name, nn.Parameter(dtensor, requires_grad=param.requires_grad))
        experts.__class__ = ExpertParallelGroupedExperts
        experts.ep_mesh = ep_mesh
