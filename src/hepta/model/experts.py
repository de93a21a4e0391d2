"""Routed SwiGLU experts over stacked 3-D weights, computed group by group.

Dims: M routed token copies (N tokens x K choices), sorted by expert so that each expert's
tokens form one contiguous group; D model dim; F expert hidden dim; E experts.

Weights use the stacked layout of Hugging Face transformers (>= 5):
    gate_up_proj [E, 2F, D]  (gate rows first, then up rows)
    down_proj    [E, D, F]
so FSDP and expert parallelism shard the leading E dim without reshaping, and checkpoints
map one to one.

On CPU the fused per-expert kernel below is the fast path: each expert's gate/up matmul,
activation, and down matmul run back to back while its [tokens, 2F] block is still in
cache, and every result is written in place into one preallocated buffer. A plain autograd
version (split, matmul, cat) spends ~40% of its time in `cat`/`stack` of the per-expert
pieces and in page-faulting fresh allocations. On GPUs `torch._grouped_mm` does the same job
in one kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _GroupedSwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_MD, gate_up_E2FD, down_EDF, counts: list[int]):
        M, F2 = x_MD.shape[0], gate_up_E2FD.shape[1]
        Fh = F2 // 2
        h_M2F = x_MD.new_empty(M, F2)  # pre-activation, kept for backward
        y_MD = x_MD.new_empty(M, down_EDF.shape[1])
        start = 0
        for e, count in enumerate(counts):
            if count == 0:
                continue
            rows = slice(start, start + count)
            h = h_M2F[rows]
            torch.mm(x_MD[rows], gate_up_E2FD[e].t(), out=h)
            act = F.silu(h[:, :Fh]) * h[:, Fh:]
            torch.mm(act, down_EDF[e].t(), out=y_MD[rows])
            start += count
        ctx.save_for_backward(x_MD, h_M2F, gate_up_E2FD, down_EDF)
        ctx.counts = counts
        return y_MD

    @staticmethod
    def backward(ctx, grad_y_MD):
        x_MD, h_M2F, gate_up_E2FD, down_EDF = ctx.saved_tensors
        grad_y_MD = grad_y_MD.contiguous()
        Fh = h_M2F.shape[1] // 2
        grad_x_MD = torch.empty_like(x_MD) if ctx.needs_input_grad[0] else None
        grad_gate_up = torch.zeros_like(gate_up_E2FD)
        grad_down = torch.zeros_like(down_EDF)
        start = 0
        for e, count in enumerate(ctx.counts):
            if count == 0:
                continue
            rows = slice(start, start + count)
            gate, up = h_M2F[rows, :Fh], h_M2F[rows, Fh:]
            sig = torch.sigmoid(gate)
            silu = gate * sig
            grad_y = grad_y_MD[rows]
            torch.mm(grad_y.t(), silu * up, out=grad_down[e])
            grad_act = grad_y @ down_EDF[e]  # [c, F]
            grad_h = torch.empty_like(h_M2F[rows])
            torch.mul(grad_act, silu, out=grad_h[:, Fh:])
            # d silu(g)/dg = sig * (1 + g * (1 - sig))
            torch.mul(grad_act * up, sig * (1 + gate * (1 - sig)), out=grad_h[:, :Fh])
            torch.mm(grad_h.t(), x_MD[rows], out=grad_gate_up[e])
            if grad_x_MD is not None:
                torch.mm(grad_h, gate_up_E2FD[e], out=grad_x_MD[rows])
            start += count
        return grad_x_MD, grad_gate_up, grad_down, None


def grouped_swiglu_loop(x_MD, gate_up_E2FD, down_EDF, counts: list[int]) -> torch.Tensor:
    return _GroupedSwiGLU.apply(x_MD, gate_up_E2FD, down_EDF, counts)


def grouped_swiglu_grouped_mm(x_MD, gate_up_E2FD, down_EDF, counts: list[int]) -> torch.Tensor:
    """One grouped GEMM per projection (`torch._grouped_mm`, the fast path on GPUs)."""
    offsets = torch.tensor(counts, device=x_MD.device).cumsum(0).to(torch.int32)
    gate, up = torch._grouped_mm(x_MD, gate_up_E2FD.transpose(1, 2), offs=offsets).chunk(2, dim=-1)
    return torch._grouped_mm(F.silu(gate) * up, down_EDF.transpose(1, 2), offs=offsets)


class GroupedExperts(nn.Module):
    def __init__(self, num_experts: int, dim: int, hidden_dim: int):
        super().__init__()
        self.gate_up_proj = nn.Parameter(torch.empty(num_experts, 2 * hidden_dim, dim))
        self.down_proj = nn.Parameter(torch.empty(num_experts, dim, hidden_dim))
        self.implementation = "auto"  # "auto" | "loop" | "grouped_mm"

    def forward(self, x_MD: torch.Tensor, counts: list[int]) -> torch.Tensor:
        # Autocast does not reach inside a custom autograd Function, so cast here explicitly.
        device_type = x_MD.device.type
        dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else x_MD.dtype
        with torch.autocast(device_type, enabled=False):
            args = (x_MD.to(dtype), self.gate_up_proj.to(dtype), self.down_proj.to(dtype), counts)
            impl = self.implementation
            if impl == "auto":
                impl = "grouped_mm" if x_MD.is_cuda else "loop"
            if impl == "grouped_mm":
                return grouped_swiglu_grouped_mm(*args)
            return grouped_swiglu_loop(*args)

    def reset_parameters(self, std: float = 0.02) -> None:
        nn.init.normal_(self.gate_up_proj, std=std)
        nn.init.normal_(self.down_proj, std=std)
