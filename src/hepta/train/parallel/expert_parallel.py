"""Expert parallelism: each rank of the `ep` axis owns num_experts / ep consecutive experts, and
the routed token copies travel to their experts and back with all-to-all.

Dims: N local tokens, D model dim, E experts, El = E / ep local experts, M routed copies sent
from this rank (grouped by global expert), R copies received here.

Applied to the unchanged model, as torchtitan's `ExpertParallel`, through `distribute_module`:
- partition: the stacked expert weights become DTensors sharded on dim 0 over the ep axis, so
  checkpoints keep their global [E, ...] shape and reshard to any layout; `GroupedExperts`
  computes on the local experts of such weights.
- dispatch (before the experts' forward): the copies, grouped by global expert, go to the rank
  of their expert, one contiguous run per destination; the experts receive them with unit gate
  weights and counts for their local experts only.
- combine (after it): the expert outputs come back in the order they were sent, and
  `weighted_combine` applies the gate weights and sums the copies of each token.
The router and the dispatch order of `MoE` stay as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.distributed._functional_collectives import all_to_all_single, all_to_all_single_autograd
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Shard, distribute_module
from torch import nn

from hepta.model.experts import GroupedExperts, compute_dtype, weighted_combine
from hepta.model.transformer import Transformer


@dataclass
class _Dispatched:
    """What the combine needs of one forward's dispatch."""
    weight_M: torch.Tensor
    token_M: torch.Tensor
    num_tokens: int
    send_splits: list[int]
    receive_splits: list[int]


class ExpertParallel:
    """Dispatch and combine hooks of one `GroupedExperts` over a 1-D ep mesh.

    One instance per module: the dispatch of a forward hands the combine its splits and gate
    weights through the instance (a checkpointed block's recomputation runs both again, in order).
    """

    def __init__(self) -> None:
        self._dispatched: _Dispatched | None = None

    def apply(self, module: GroupedExperts, ep_mesh: DeviceMesh) -> GroupedExperts:
        return distribute_module(module, ep_mesh, partition_fn=self._partition, input_fn=self._dispatch,
                                 output_fn=self._combine)

    @staticmethod
    def _partition(name: str, module: nn.Module, ep_mesh: DeviceMesh) -> None:
        # No communication: each rank keeps its own slice of the weights it already holds (all
        # ranks hold the same initial weights, or meta tensors), wrapped without a check.
        ep, rank = ep_mesh.size(), ep_mesh.get_local_rank()
        for param_name, param in list(module.named_parameters(recurse=False)):
            El = param.shape[0] // ep
            local = param.detach()[rank * El:(rank + 1) * El]
            dtensor = DTensor.from_local(local.clone() if local.device.type != "meta" else local, ep_mesh,
                                         [Shard(0)], run_check=False)
            module.register_parameter(param_name, nn.Parameter(dtensor, requires_grad=param.requires_grad))

    def _dispatch(self, module: GroupedExperts, inputs: tuple, ep_mesh: DeviceMesh) -> tuple:
        x_ND, weight_M, token_M, counts = inputs
        group, ep = ep_mesh.get_group(), ep_mesh.size()
        El = len(counts) // ep

        counts_E = torch.tensor(counts, dtype=torch.int64, device=x_ND.device)
        with torch.no_grad():  # how many copies each source rank sends to each of my experts: [ep, El]
            received_counts = torch.ops._c10d_functional.wait_tensor(
                all_to_all_single(counts_E, None, None, group)).view(ep, El)
        send_splits = [sum(counts[r * El:(r + 1) * El]) for r in range(ep)]
        received_counts_cpu = received_counts.cpu()
        receive_splits = received_counts_cpu.sum(dim=1).tolist()

        x_MD = x_ND.to(compute_dtype(x_ND))[token_M]  # in the experts' dtype: half the bytes under bf16 autocast
        x_RD = all_to_all_single_autograd(x_MD, receive_splits, send_splits, group)
        # Arrivals are ordered by source rank, then local expert; the experts gather them grouped
        # by expert and add each result back at its arrival row, so one stable sort of the
        # arrivals by expert is all the regrouping needed.
        local_expert_R = torch.arange(El, device=x_ND.device).repeat(ep).repeat_interleave(
            received_counts.flatten(), output_size=sum(receive_splits))
        order_R = local_expert_R.argsort(stable=True)
        local_counts = received_counts_cpu.sum(dim=0).tolist()
        self._dispatched = _Dispatched(weight_M, token_M, x_ND.shape[0], send_splits, receive_splits)
        ones_R = x_RD.new_ones(x_RD.shape[0])  # the gate weights are applied at the source, after the return trip
        return x_RD, ones_R, order_R, local_counts

    def _combine(self, module: GroupedExperts, y_RD: torch.Tensor, ep_mesh: DeviceMesh) -> torch.Tensor:
        sent, self._dispatched = self._dispatched, None
        y_MD = all_to_all_single_autograd(y_RD, sent.send_splits, sent.receive_splits, ep_mesh.get_group())
        with torch.autocast(y_MD.device.type, enabled=False):  # in the experts' dtype, as without parallelism
            return weighted_combine(y_MD, sent.weight_M, sent.token_M, sent.num_tokens)


def apply_expert_parallel(model: Transformer, ep_mesh: DeviceMesh) -> None:
    """Shard every MoE layer's routed experts over `ep_mesh` (1-D) and route their tokens by all-to-all."""
    for moe in model.moe_layers():
        assert moe.experts.gate_up_proj.shape[0] % ep_mesh.size() == 0, "the layout checks that ep divides num_experts"
        ExpertParallel().apply(moe.experts, ep_mesh)
