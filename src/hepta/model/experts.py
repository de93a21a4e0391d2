"""Routed SwiGLU experts over stacked 3-D weights, with the token dispatch and the weighted
combine done inside the expert loop.

Dims: N tokens, M routed token copies (N tokens x K choices, fewer if a capacity drops some),
sorted by expert so that each expert's copies form one contiguous group of c rows; D model
dim; F expert hidden dim; E experts.

Weights use the stacked layout of Hugging Face transformers (>= 5):
    gate_up_proj [E, 2F, D]  (gate rows first, then up rows)
    down_proj    [E, D, F]
so FSDP and expert parallelism shard the leading E dim without reshaping, and checkpoints
map one to one.

What the layer computes, for each routed copy m of token n = token_M[m] sent to expert e:
    out[n] += weight_M[m] * down_e(silu(gate_e(x[n])) * up_e(x[n]))

On CPU the fused kernel below is the fast path. Per expert it gathers its c token rows,
runs gate/up matmul, activation, down matmul, scales by the gate weights and adds the rows
into the output while the [c, 2F] block is still in cache; nothing of size [M, D] is ever
materialised (a separate gather, expert pass, weight multiply and scatter each write and
re-read M*D values, which for fine-grained experts costs as much as the small matmuls).
Every intermediate lives in scratch buffers reused across experts, because on CPU a fresh
allocation costs page faults at first touch. On GPUs `torch._grouped_mm` does the experts in
one kernel, and the unfused path below is used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_silu_out = torch._C._nn.silu  # F.silu without an `out=`; this is its kernel
_silu_backward_out = torch.ops.aten.silu_backward.grad_input  # grad * d silu(x)/dx, one pass


class _FusedMoEExperts(torch.autograd.Function):
    """out_ND = sum over copies m of weight_M[m] * expert(x_ND[token_M[m]]), grouped by counts."""

    @staticmethod
    def forward(ctx, x_ND, weight_M, gate_up_E2FD, down_EDF, token_M, counts: list[int]):
        N, D = x_ND.shape
        M, Fh = token_M.shape[0], down_EDF.shape[2]
        c_max = max(counts, default=0)
        # Scaling the activation [c, F] instead of the output [c, D] by the gate weight is the
        # same product, on the smaller of the two.
        scale_act = Fh <= D
        out_ND = x_ND.new_zeros(N, D)
        h_M2F = x_ND.new_empty(M, 2 * Fh)  # pre-activations, kept for backward
        x_cD = x_ND.new_empty(c_max, D)
        act_cF = x_ND.new_empty(c_max, Fh)
        y_cD = x_ND.new_empty(c_max, D)
        w_M1 = weight_M.unsqueeze(1)
        start = 0
        for e, c in enumerate(counts):
            if c == 0:
                continue
            end = start + c
            token, h, w = token_M[start:end], h_M2F[start:end], w_M1[start:end]
            x, act, y = x_cD[:c], act_cF[:c], y_cD[:c]
            torch.index_select(x_ND, 0, token, out=x)
            torch.mm(x, gate_up_E2FD[e].t(), out=h)
            _silu_out(h[:, :Fh], out=act)
            act.mul_(h[:, Fh:])
            if scale_act:
                act.mul_(w)
            torch.mm(act, down_EDF[e].t(), out=y)
            if not scale_act:
                y.mul_(w)
            out_ND.index_add_(0, token, y)
            start = end
        ctx.save_for_backward(x_ND, weight_M, gate_up_E2FD, down_EDF, token_M, h_M2F)
        ctx.counts = counts
        return out_ND

    @staticmethod
    def backward(ctx, grad_ND):
        x_ND, weight_M, gate_up_E2FD, down_EDF, token_M, h_M2F = ctx.saved_tensors
        counts = ctx.counts
        grad_ND = grad_ND.contiguous()
        N, D = x_ND.shape
        Fh = down_EDF.shape[2]
        c_max = max(counts, default=0)
        scale_act = Fh <= D
        needs_x, needs_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x_ND = torch.zeros_like(x_ND) if needs_x else None
        grad_w_M = torch.empty_like(weight_M)
        # Every expert with tokens overwrites its whole slice; only idle experts need zeros.
        grad_gate_up = torch.empty_like(gate_up_E2FD)
        grad_down = torch.empty_like(down_EDF)
        x_cD = x_ND.new_empty(c_max, D)
        g_cD = x_ND.new_empty(c_max, D)
        silu_cF = x_ND.new_empty(c_max, Fh)
        act_cF = x_ND.new_empty(c_max, Fh)
        grad_act_cF = x_ND.new_empty(c_max, Fh)
        tmp_cF = x_ND.new_empty(c_max, Fh)
        grad_h_c2F = x_ND.new_empty(c_max, 2 * Fh)
        w_M1 = weight_M.unsqueeze(1)
        start = 0
        for e, c in enumerate(counts):
            if c == 0:
                grad_gate_up[e].zero_()
                grad_down[e].zero_()
                continue
            end = start + c
            token, h, w = token_M[start:end], h_M2F[start:end], w_M1[start:end]
            gate, up = h[:, :Fh], h[:, Fh:]
            x, g, silu, act = x_cD[:c], g_cD[:c], silu_cF[:c], act_cF[:c]
            grad_act, tmp, grad_h = grad_act_cF[:c], tmp_cF[:c], grad_h_c2F[:c]
            torch.index_select(x_ND, 0, token, out=x)
            torch.index_select(grad_ND, 0, token, out=g)
            _silu_out(gate, out=silu)
            torch.mul(silu, up, out=act)
            # Gradient of the expert output before the gate weight scales it: g @ down_e.
            torch.mm(g, down_EDF[e], out=grad_act)
            if needs_w:  # d out / d weight_m = <g_m, y_m> = <g_m @ down_e, act_m>
                torch.mul(grad_act, act, out=tmp)
                torch.sum(tmp, dim=1, out=grad_w_M[start:end])
            if scale_act:
                act.mul_(w)
            else:
                g.mul_(w)
            torch.mm(g.t(), act, out=grad_down[e])
            grad_act.mul_(w)
            torch.mul(grad_act, silu, out=grad_h[:, Fh:])
            torch.mul(grad_act, up, out=tmp)
            _silu_backward_out(tmp, gate, grad_input=grad_h[:, :Fh])
            torch.mm(grad_h.t(), x, out=grad_gate_up[e])
            if needs_x:
                torch.mm(grad_h, gate_up_E2FD[e], out=x)  # x is no longer needed: reuse it
                grad_x_ND.index_add_(0, token, x)
            start = end
        return grad_x_ND, grad_w_M if needs_w else None, grad_gate_up, grad_down, None, None


def moe_experts_fused(x_ND, weight_M, gate_up_E2FD, down_EDF, token_M, counts: list[int]) -> torch.Tensor:
    return _FusedMoEExperts.apply(x_ND, weight_M, gate_up_E2FD, down_EDF, token_M, counts)


def moe_experts_grouped_mm(x_ND, weight_M, gate_up_E2FD, down_EDF, token_M, counts: list[int]) -> torch.Tensor:
    """Gather, one grouped GEMM per projection (`torch._grouped_mm`, the fast path on GPUs), combine."""
    offsets = torch.tensor(counts, device=x_ND.device).cumsum(0).to(torch.int32)
    x_MD = x_ND[token_M]
    gate, up = torch._grouped_mm(x_MD, gate_up_E2FD.transpose(1, 2), offs=offsets).chunk(2, dim=-1)
    y_MD = torch._grouped_mm(F.silu(gate) * up, down_EDF.transpose(1, 2), offs=offsets)
    y_MD = y_MD * weight_M.unsqueeze(1)
    return torch.zeros_like(x_ND).index_add_(0, token_M, y_MD)


class GroupedExperts(nn.Module):
    def __init__(self, num_experts: int, dim: int, hidden_dim: int):
        super().__init__()
        self.gate_up_proj = nn.Parameter(torch.empty(num_experts, 2 * hidden_dim, dim))
        self.down_proj = nn.Parameter(torch.empty(num_experts, dim, hidden_dim))
        self.implementation = "auto"  # "auto" | "fused" | "grouped_mm"

    def forward(self, x_ND: torch.Tensor, weight_M: torch.Tensor, token_M: torch.Tensor,
                counts: list[int]) -> torch.Tensor:
        """Weighted sum of the experts' outputs per token: [N, D].

        token_M lists the routed copies grouped by expert (counts[e] copies for expert e, in
        expert order) and weight_M their gate weights.
        """
        # Autocast does not reach inside a custom autograd Function, so cast here explicitly.
        device_type = x_ND.device.type
        dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else x_ND.dtype
        with torch.autocast(device_type, enabled=False):
            args = (x_ND.to(dtype), weight_M.to(dtype), self.gate_up_proj.to(dtype), self.down_proj.to(dtype),
                    token_M, counts)
            impl = self.implementation
            if impl == "auto":
                impl = "grouped_mm" if x_ND.is_cuda else "fused"
            if impl == "grouped_mm":
                return moe_experts_grouped_mm(*args)
            return moe_experts_fused(*args)

    def reset_parameters(self, std: float = 0.02) -> None:
        nn.init.normal_(self.gate_up_proj, std=std)
        nn.init.normal_(self.down_proj, std=std)
