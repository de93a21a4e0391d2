"""Routed SwiGLU experts over stacked 3-D weights, with the token dispatch and the weighted
combine done inside the expert loop.

Dims: N tokens, M routed token copies (N tokens x K choices, fewer if a capacity drops some),
sorted by expert so that each expert's copies form one contiguous group of c rows (`c` in the
loops over `counts`); R rows of the largest chunk of consecutive experts (the height of the
fused kernel's scratch buffers); D model dim; F expert hidden dim (its size is `Fh` in code,
`F` being torch.nn.functional); E experts.

Weights use the stacked layout of Hugging Face transformers (>= 5):
    gate_up_proj [E, 2F, D]  (gate rows first, then up rows)
    down_proj    [E, D, F]
so FSDP and expert parallelism shard the leading E dim without reshaping, and checkpoints
map one to one.

What the layer computes, for each routed copy m of token n = token_M[m] sent to expert e:
    out[n] += weight_M[m] * down_e(silu(gate_e(x[n])) * up_e(x[n]))

On CPU the fused kernel below is the fast path. It walks the experts in chunks of
consecutive experts; per chunk it gathers the token rows, runs each expert's gate/up matmul,
the activation, each expert's down matmul, scales by the gate weights and adds the rows into
the output while the chunk is still in cache. Nothing of size [M, D] is materialised: a
separate gather, expert pass, weight multiply and scatter each write and re-read M*D values,
which for fine-grained experts costs as much as a good part of the small matmuls. The
backward mirrors it and gets the gate weights' gradient from values it computes anyway, so
no expert output is kept for it. Intermediates live in scratch buffers reused across chunks,
because on CPU a fresh allocation costs page faults at first touch. On GPUs
`torch._grouped_mm` does the experts in one kernel, and the unfused path below is used; the
unfused paths end in `weighted_combine`, which expert parallelism also uses after the return trip.

Experts with biases or another activation than SwiGLU (gpt-oss: `clamped_swiglu`) take one
general path on every device: gather, one matmul per expert (grouped on GPUs), the activation,
biases added per row, combine, all differentiated by autograd. Otherwise the implementation is
chosen when the layer is built (`EXPERTS_IMPLEMENTATIONS`):
    "auto"        grouped_mm on GPUs; on CPU the fused kernel, or a plain loop for a few rows
    "fused"       the fused CPU kernel
    "grouped_mm"  `torch._grouped_mm`, then `weighted_combine`
Where a CPU engine switched the row sums on, a few tokens' experts take compiled row sums over their routed
copies instead (`GroupedExperts.few_tokens`, which `MoE` calls first).
"""

from __future__ import annotations

from typing import Callable, Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.tensor import DTensor

from hepta.model import expert_threads
from hepta.model.matvec import compiling, row_sum_applies, row_sum_matvec, run_fused

ExpertsImplementation = Literal["auto", "fused", "grouped_mm"]
EXPERTS_IMPLEMENTATIONS: tuple[str, ...] = get_args(ExpertsImplementation)

_silu_out = torch._C._nn.silu  # F.silu without an `out=`; this is its kernel
_silu_backward_out = torch.ops.aten.silu_backward.grad_input  # grad * d silu(x)/dx, one pass

# Elementwise work, gathers and scatters run on chunks of consecutive experts of about this
# many bytes of pre-activations (one core's L2): per expert they would be many small calls,
# each paying dispatch and a thread fork/join; over all M rows at once they would stream
# through memory instead of cache. The matmuls stay per expert.
_CHUNK_BYTES = 2 << 20


def _chunks(counts: list[int], min_rows: int) -> list[tuple[int, int, list[int], list[int]]]:
    """Runs of consecutive experts with at least `min_rows` routed rows (the last may have fewer),
    as (first row, end row, experts with rows, their row counts); idle experts are left out."""
    chunks, experts, sizes, start, rows = [], [], [], 0, 0
    for e, c in enumerate(counts):
        if c:
            experts.append(e)
            sizes.append(c)
            rows += c
        if experts and (rows >= min_rows or e == len(counts) - 1):
            chunks.append((start, start + rows, experts, sizes))
            experts, sizes, start, rows = [], [], start + rows, 0
    return chunks


def _forward_chunks(x_ND, w_M1, gate_up_ED2F, down_EFD, token_M, chunks, out_ND) -> list[torch.Tensor]:
    """Adds the chunks' weighted expert outputs into out_ND; returns their pre-activations [rows, 2F], which
    backward needs. Scratch buffers are the height of the largest chunk and reused across the chunks."""
    D, Fh = x_ND.shape[1], down_EFD[0].shape[0]
    R = max((end - start for start, end, _, _ in chunks), default=0)
    # Scaling the activation [R, F] instead of the output [R, D] by the gate weight is the
    # same product, on the smaller of the two.
    scale_act = Fh <= D
    x_RD, act_RF, y_RD = x_ND.new_empty(R, D), x_ND.new_empty(R, Fh), x_ND.new_empty(R, D)
    h_chunks = []
    for start, end, experts, sizes in chunks:
        token, w, n = token_M[start:end], w_M1[start:end], end - start
        x, act, y = x_RD[:n], act_RF[:n], y_RD[:n]
        h = x_ND.new_empty(n, 2 * Fh)
        h_chunks.append(h)
        torch.index_select(x_ND, 0, token, out=x)
        for e, x_e, h_e in zip(experts, x.split(sizes), h.split(sizes)):
            torch.mm(x_e, gate_up_ED2F[e], out=h_e)
        _silu_out(h[:, :Fh], out=act)
        act.mul_(h[:, Fh:])
        if scale_act:
            act.mul_(w)
        for e, act_e, y_e in zip(experts, act.split(sizes), y.split(sizes)):
            torch.mm(act_e, down_EFD[e], out=y_e)
        if not scale_act:
            y.mul_(w)
        out_ND.index_add_(0, token, y)
    return h_chunks


def _backward_chunks(grad_ND, x_ND, w_M1, gate_up_E2FD, down_EDF, token_M, chunks, h_chunks,
                     grad_x_ND, grad_w_M, grad_gate_up, grad_down) -> None:
    """The chunks' share of the gradients: their experts' weight gradients and their copies' gate-weight
    gradients are written (slices no other chunk touches); the input gradient is added into grad_x_ND (None where
    it is not needed), and likewise grad_w_M."""
    D, Fh = x_ND.shape[1], down_EDF.shape[2]
    R = max((end - start for start, end, _, _ in chunks), default=0)
    scale_act = Fh <= D
    gate_up_l, down_l = gate_up_E2FD.unbind(0), down_EDF.unbind(0)
    grad_gate_up_l, grad_down_l = grad_gate_up.unbind(0), grad_down.unbind(0)
    x_RD, g_RD = x_ND.new_empty(R, D), x_ND.new_empty(R, D)
    silu_RF, act_RF = x_ND.new_empty(R, Fh), x_ND.new_empty(R, Fh)
    grad_act_RF, tmp_RF = x_ND.new_empty(R, Fh), x_ND.new_empty(R, Fh)
    grad_h_R2F = x_ND.new_empty(R, 2 * Fh)
    for (start, end, experts, sizes), h in zip(chunks, h_chunks):
        token, w, n = token_M[start:end], w_M1[start:end], end - start
        gate, up = h[:, :Fh], h[:, Fh:]
        x, g, silu, act = x_RD[:n], g_RD[:n], silu_RF[:n], act_RF[:n]
        grad_act, tmp, grad_h = grad_act_RF[:n], tmp_RF[:n], grad_h_R2F[:n]
        torch.index_select(x_ND, 0, token, out=x)
        torch.index_select(grad_ND, 0, token, out=g)
        _silu_out(gate, out=silu)
        torch.mul(silu, up, out=act)
        # Gradient of the expert output before the gate weight scales it: g @ down_e.
        for e, g_e, grad_act_e in zip(experts, g.split(sizes), grad_act.split(sizes)):
            torch.mm(g_e, down_l[e], out=grad_act_e)
        if grad_w_M is not None:  # d out / d weight_m = <g_m, y_m> = <g_m @ down_e, act_m>
            torch.mul(grad_act, act, out=tmp)
            torch.sum(tmp, dim=1, out=grad_w_M[start:end])
        if scale_act:
            act.mul_(w)
        else:
            g.mul_(w)
        for e, gT_e, act_e in zip(experts, g.t().split(sizes, dim=1), act.split(sizes)):
            torch.mm(gT_e, act_e, out=grad_down_l[e])
        grad_act.mul_(w)
        torch.mul(grad_act, silu, out=grad_h[:, Fh:])
        torch.mul(grad_act, up, out=tmp)
        _silu_backward_out(tmp, gate, grad_input=grad_h[:, :Fh])
        for e, grad_hT_e, x_e in zip(experts, grad_h.t().split(sizes, dim=1), x.split(sizes)):
            torch.mm(grad_hT_e, x_e, out=grad_gate_up_l[e])
        if grad_x_ND is not None:  # x is no longer needed: it takes grad_h @ gate_up_e, row block by row block
            for e, grad_h_e, x_e in zip(experts, grad_h.split(sizes), x.split(sizes)):
                torch.mm(grad_h_e, gate_up_l[e], out=x_e)
            grad_x_ND.index_add_(0, token, x)


class _FusedMoEExperts(torch.autograd.Function):
    """out_ND = sum over copies m of weight_M[m] * expert(x_ND[token_M[m]]), grouped by counts.

    Per-expert views come from one `split`/`unbind` call each rather than from indexing inside
    the loop, which saves a few dispatches per matmul where experts are small. Where the chunks are
    many and small (`expert_threads.shares`), each core runs a share of them on one thread.
    """

    @staticmethod
    def forward(ctx, x_ND, weight_M, gate_up_E2FD, down_EDF, token_M, counts: list[int]):
        N, D = x_ND.shape
        Fh = down_EDF.shape[2]
        chunks = _chunks(counts, max(1, _CHUNK_BYTES // (2 * Fh * x_ND.element_size())))
        gate_up_ED2F = gate_up_E2FD.transpose(1, 2).unbind(0)
        down_EFD = down_EDF.transpose(1, 2).unbind(0)
        w_M1 = weight_M.unsqueeze(1)
        shares = expert_threads.shares(chunks, D, Fh)
        outs = [x_ND.new_zeros(N, D) for _ in shares]
        h_shares = expert_threads.run(_forward_chunks, [
            (x_ND, w_M1, gate_up_ED2F, down_EFD, token_M, share, out) for share, out in zip(shares, outs)])
        ctx.save_for_backward(x_ND, weight_M, gate_up_E2FD, down_EDF, token_M)
        ctx.counts, ctx.shares, ctx.h_shares = counts, shares, h_shares
        return expert_threads.total(outs)

    @staticmethod
    def backward(ctx, grad_ND):
        x_ND, weight_M, gate_up_E2FD, down_EDF, token_M = ctx.saved_tensors
        grad_ND = grad_ND.contiguous()
        needs_x, needs_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_w_M = torch.empty_like(weight_M) if needs_w else None
        # Every expert with tokens overwrites its whole slice; only idle experts need zeros.
        grad_gate_up = torch.empty_like(gate_up_E2FD)
        grad_down = torch.empty_like(down_EDF)
        for e, c in enumerate(ctx.counts):
            if c == 0:
                grad_gate_up[e].zero_()
                grad_down[e].zero_()
        grads_x = [x_ND.new_zeros(x_ND.shape) if needs_x else None for _ in ctx.shares]
        w_M1 = weight_M.unsqueeze(1)
        expert_threads.run(_backward_chunks, [
            (grad_ND, x_ND, w_M1, gate_up_E2FD, down_EDF, token_M, share, h, grad_x, grad_w_M, grad_gate_up,
             grad_down) for share, h, grad_x in zip(ctx.shares, ctx.h_shares, grads_x)])
        grad_x_ND = expert_threads.total(grads_x) if needs_x else None
        return grad_x_ND, grad_w_M, grad_gate_up, grad_down, None, None


def moe_experts_fused(x_ND, weight_M, gate_up_E2FD, down_EDF, token_M, counts: list[int]) -> torch.Tensor:
    return _FusedMoEExperts.apply(x_ND, weight_M, gate_up_E2FD, down_EDF, token_M, counts)


def moe_experts_grouped_mm(x_ND, weight_M, gate_up_E2FD, down_EDF, token_M, counts: list[int]) -> torch.Tensor:
    """Gather, one grouped GEMM per projection (`torch._grouped_mm`, the fast path on GPUs), combine."""
    offsets = torch.tensor(counts, device=x_ND.device).cumsum(0).to(torch.int32)
    x_MD = x_ND[token_M]
    gate, up = torch._grouped_mm(x_MD, gate_up_E2FD.transpose(1, 2), offs=offsets).chunk(2, dim=-1)
    y_MD = torch._grouped_mm(F.silu(gate) * up, down_EDF.transpose(1, 2), offs=offsets)
    return weighted_combine(y_MD, weight_M, token_M, x_ND.shape[0])


# Below this many routed copies (decoding: a few tokens times top-k), a plain loop over the
# experts that have rows beats the fused kernel, whose chunking and scratch buffers pay off only
# for many rows; it runs only where no gradient is needed.
_FEW_ROWS = 16


def moe_experts_few_rows(x_ND, weight_M, gate_up_E2FD, down_EDF, token_M, counts: list[int],
                         row_sum: bool = False) -> torch.Tensor:
    """Inference on a few routed copies: per active expert, two matmuls on its rows; one combine. With `row_sum`,
    an expert with a single row takes model/matvec.py's row-sum product instead of the BLAS's."""
    Fh = down_EDF.shape[2]
    x_MD = x_ND[token_M]
    y_MD = torch.empty_like(x_MD)
    start = 0
    for e, c in enumerate(counts):
        if c == 1 and row_sum:
            h = row_sum_matvec(x_MD[start], gate_up_E2FD[e])
            y_MD[start] = row_sum_matvec(_silu_out(h[:Fh]) * h[Fh:], down_EDF[e])
            start += 1
        elif c:
            h = x_MD[start:start + c] @ gate_up_E2FD[e].t()
            torch.mm(_silu_out(h[:, :Fh]) * h[:, Fh:], down_EDF[e].t(), out=y_MD[start:start + c])
            start += c
    return weighted_combine(y_MD, weight_M, token_M, x_ND.shape[0])


def _expert_outputs(x_MD, experts_M, gate_up_E2FD, down_EDF) -> torch.Tensor:
    """Each routed copy's SwiGLU expert output [M, D] in fp32 (x_MD may be one row for all copies). Compiled
    (`matvec.run_fused`), each projection is one loop over the copies that reads their experts' weights in place in
    the stacked tensors: no gather of them, no loop over experts on the host, no host sync."""
    Fh = down_EDF.shape[2]
    h_M2F = (gate_up_E2FD[experts_M].float() * x_MD.float()[:, None, :]).sum(-1)
    act_MF = F.silu(h_M2F[:, :Fh]) * h_M2F[:, Fh:]
    return (down_EDF[experts_M].float() * act_MF[:, None, :]).sum(-1)


def _one_token_experts(x_D, experts_K, weights_K, gate_up_E2FD, down_EDF) -> torch.Tensor:
    """One token's chosen experts, weighted and summed: [D]; compiled, one kernel."""
    y_KD = _expert_outputs(x_D[None], experts_K, gate_up_E2FD, down_EDF)
    return (y_KD * weights_K.float()[:, None]).sum(0).to(x_D.dtype)


def _token_copies(x_ND, experts_NK, weights_NK, gate_up_E2FD, down_EDF) -> torch.Tensor:
    """A few tokens' chosen experts (a batch of sequences decoding), weighted and summed per token: [N, D]. The
    copies are sorted by expert within the kernel, so that an expert's second and later copies find its weights in
    the cache: the bytes streamed from memory are about those of the distinct experts."""
    K = experts_NK.shape[1]
    order_M = experts_NK.flatten().argsort(stable=True)
    token_M = order_M // K
    y_MD = _expert_outputs(x_ND[token_M], experts_NK.flatten()[order_M], gate_up_E2FD, down_EDF)
    y_MD = y_MD * weights_NK.flatten()[order_M].float()[:, None]
    out_ND = torch.zeros(x_ND.shape, dtype=torch.float32, device=x_ND.device)
    return out_ND.index_add_(0, token_M, y_MD).to(x_ND.dtype)


# Up to this many routed copies per expert on average, row sums over the copies beat one BLAS product per expert
# on its rows, where a batch-1 step prefers row sums too (benchmarks/moe_decode.py, the 200M OLMoE shape on 2 EPYC
# cores: 2.2-2.8x from 1 to 16 tokens in fp32, 1.4-2.6x in bf16; at 32 tokens, 4 copies an expert, 1.28x and 0.96x).
COPIES_PER_EXPERT = 4


def experts_kernel(implementation: ExpertsImplementation, on_cuda: bool, rows: int, grad: bool) -> str:
    """The kernel the SwiGLU experts run: what `implementation` names, or for "auto" one grouped GEMM per
    projection on a GPU, the plain loop for a few routed copies without autograd (decoding) on a CPU, else the
    fused kernel."""
    if implementation != "auto":
        return implementation
    if on_cuda:
        return "grouped_mm"
    return "few_rows" if rows <= _FEW_ROWS and not grad else "fused"


def swiglu(h_M2F: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up, with gate the first half of each row and up the second."""
    gate, up = h_M2F.chunk(2, dim=-1)
    return F.silu(gate) * up


def clamped_swiglu(h_M2F: torch.Tensor, alpha: float, limit: float) -> torch.Tensor:
    """gpt-oss's SwiGLU: gate clamped from above and up on both sides at `limit`, then
    gate * sigmoid(alpha * gate) * (up + 1)."""
    gate, up = h_M2F.chunk(2, dim=-1)
    gate, up = gate.clamp(max=limit), up.clamp(min=-limit, max=limit)
    return gate * torch.sigmoid(alpha * gate) * (up + 1)


def _per_expert_mm(rows_MK: torch.Tensor, weights_ENK: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """rows @ weights[e].T for each expert's group of rows (grouped in one kernel on GPUs)."""
    if rows_MK.is_cuda:
        offsets = torch.tensor(counts, device=rows_MK.device).cumsum(0).to(torch.int32)
        return torch._grouped_mm(rows_MK, weights_ENK.transpose(1, 2), offs=offsets)
    parts = [rows_e @ weights_ENK[e].t() for e, rows_e in enumerate(rows_MK.split(counts)) if counts[e]]
    return torch.cat(parts) if parts else rows_MK.new_zeros(0, weights_ENK.shape[1])


def moe_experts_general(x_ND, weight_M, gate_up_E2FD, down_EDF, token_M, counts: list[int],
                        gate_up_bias_E2F: torch.Tensor | None, down_bias_ED: torch.Tensor | None,
                        activation: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Experts with any activation and optional biases: gather, matmuls per expert, combine (autograd)."""
    x_MD = x_ND[token_M]
    h_M2F = _per_expert_mm(x_MD, gate_up_E2FD, counts)
    expert_M = None
    if gate_up_bias_E2F is not None or down_bias_ED is not None:
        expert_M = torch.arange(len(counts), device=x_ND.device).repeat_interleave(
            torch.tensor(counts, device=x_ND.device))
    if gate_up_bias_E2F is not None:
        h_M2F = h_M2F + gate_up_bias_E2F[expert_M]
    y_MD = _per_expert_mm(activation(h_M2F), down_EDF, counts)
    if down_bias_ED is not None:
        y_MD = y_MD + down_bias_ED[expert_M]
    return weighted_combine(y_MD, weight_M, token_M, x_ND.shape[0])


def weighted_combine(y_MD: torch.Tensor, weight_M: torch.Tensor, token_M: torch.Tensor,
                     num_tokens: int) -> torch.Tensor:
    """out_ND[n] = sum over the copies m of token n (token_M[m] = n) of weight_M[m] * y_MD[m].

    The gate weights are cast to the experts' output dtype, so that fp32 router weights do not
    promote a bf16 result.
    """
    y_MD = y_MD * weight_M.to(y_MD.dtype).unsqueeze(1)
    return y_MD.new_zeros(num_tokens, y_MD.shape[1]).index_add_(0, token_M, y_MD)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the experts compute in: autocast's where it is on, else x's. Autocast does not
    reach inside a custom autograd Function, so the experts cast their inputs to it explicitly."""
    device_type = x.device.type
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else x.dtype


class GroupedExperts(nn.Module):
    def __init__(self, num_experts: int, dim: int, hidden_dim: int, implementation: ExpertsImplementation = "auto",
                 bias: bool = False, activation: Callable[[torch.Tensor], torch.Tensor] = swiglu):
        """activation maps pre-activations [M, 2F] (gate half, then up half) to [M, F]."""
        super().__init__()
        if implementation not in EXPERTS_IMPLEMENTATIONS:
            raise ValueError(f"experts implementation={implementation!r} is unknown: use one of "
                             f"{', '.join(map(repr, EXPERTS_IMPLEMENTATIONS))}")
        self.gate_up_proj = nn.Parameter(torch.empty(num_experts, 2 * hidden_dim, dim))
        self.down_proj = nn.Parameter(torch.empty(num_experts, dim, hidden_dim))
        self.gate_up_bias = nn.Parameter(torch.zeros(num_experts, 2 * hidden_dim)) if bias else None
        self.down_bias = nn.Parameter(torch.zeros(num_experts, dim)) if bias else None
        self.activation = activation
        self._implementation = implementation
        self.row_sum = False  # decoding one sequence on a CPU: model/matvec.py's product (set by who measured it)

    @property
    def implementation(self) -> ExpertsImplementation:
        return self._implementation

    def takes_copies(self, copies: int) -> bool:
        """Whether `few_tokens` computes this many routed copies here: the row-sum products are switched on (a CPU
        engine measured them), the experts are SwiGLU without biases on this process, and there are at most
        COPIES_PER_EXPERT copies per expert on average."""
        return (self.row_sum and self.gate_up_bias is None and self.activation is swiglu
                and not isinstance(self.gate_up_proj, DTensor)
                and copies <= COPIES_PER_EXPERT * self.gate_up_proj.shape[0])

    def few_tokens(self, x_ND: torch.Tensor, experts_NK: torch.Tensor, weights_NK: torch.Tensor) -> torch.Tensor | None:
        """The weighted sums of a few tokens' chosen experts [N, D] as compiled row sums over their routed copies
        (decoding on a CPU: one sequence, or a batch), with no sort or count on the host; None where they do not
        apply (`takes_copies`, inference on fp32 or compiled bf16 CPU tensors), and the tokens take `forward`."""
        N = x_ND.shape[0]
        gate_up_E2FD, down_EDF = self.gate_up_proj, self.down_proj
        if not self.takes_copies(experts_NK.numel()):
            return None
        kernel = _one_token_experts if N == 1 else _token_copies
        args = (x_ND[0], experts_NK[0], weights_NK[0]) if N == 1 else (x_ND, experts_NK, weights_NK)
        if torch.compiler.is_compiling():  # within a compiled decode region (model/decode_regions.py)
            out = kernel(*args, gate_up_E2FD, down_EDF)
        elif row_sum_applies(x_ND, gate_up_E2FD) and (N == 1 or compiling()):
            out = run_fused(kernel, *args, gate_up_E2FD, down_EDF)
        else:
            return None
        return out if out is None or N > 1 else out[None]

    def forward(self, x_ND: torch.Tensor, weight_M: torch.Tensor, token_M: torch.Tensor,
                counts: list[int]) -> torch.Tensor:
        """Weighted sum of the experts' outputs per token: [N, D].

        token_M lists the routed copies grouped by expert (counts[e] copies for expert e, in
        expert order) and weight_M their gate weights. Under expert parallelism the weights are
        DTensors sharded over experts and counts covers this rank's experts only.
        """
        gate_up_E2FD, down_EDF = self.gate_up_proj, self.down_proj
        biases = self.gate_up_bias, self.down_bias
        if isinstance(gate_up_E2FD, DTensor):  # expert parallelism (through FSDP, too): this rank's experts
            gate_up_E2FD, down_EDF = gate_up_E2FD.to_local(), down_EDF.to_local()
            biases = tuple(b if b is None else b.to_local() for b in biases)
        dtype = compute_dtype(x_ND)
        with torch.autocast(x_ND.device.type, enabled=False):
            args = (x_ND.to(dtype), weight_M.to(dtype), gate_up_E2FD.to(dtype), down_EDF.to(dtype), token_M, counts)
            if self.gate_up_bias is not None or self.activation is not swiglu:
                return moe_experts_general(*args, *(b if b is None else b.to(dtype) for b in biases), self.activation)
            kernel = experts_kernel(self._implementation, x_ND.is_cuda, token_M.numel(), torch.is_grad_enabled())
            if kernel == "few_rows" and self.row_sum and row_sum_applies(x_ND, gate_up_E2FD):
                return moe_experts_few_rows(*args, row_sum=True)
            return _KERNELS[kernel](*args)

    def reset_parameters(self, std: float = 0.02) -> None:
        nn.init.normal_(self.gate_up_proj, std=std)
        nn.init.normal_(self.down_proj, std=std)
        for bias in (self.gate_up_bias, self.down_bias):
            if bias is not None:
                nn.init.zeros_(bias)


_KERNELS = {"grouped_mm": moe_experts_grouped_mm, "few_rows": moe_experts_few_rows, "fused": moe_experts_fused}
