"""Matrix-vector products for decoding one sequence on a CPU, and the Linear layer that can use them.

Decoding one sequence multiplies every weight by one row. Where the weights do not fit in the CPU's caches they
stream from memory, and some BLAS builds run that matrix-vector product at one core's bandwidth (MKL's sgemv on
an AMD EPYC: 17 GB/s on 2 cores, where a read of the same bytes reaches 45-79 GB/s). A multiply and a row sum
runs on all of torch's threads instead. Written as `(weight * x).sum(-1)` and compiled by TorchInductor it is one
loop per row that reads each weight once, the products summed in fp32 in registers (`fused_kernels`); without a
C++ compiler it runs eagerly, block by block, writing and re-reading each block's products (1.5x the BLAS on a
whole decode step of a 200M model, where the compiled product gains more: benchmarks/decode.py). Which product
wins depends on the machine and the model, so nothing here chooses: `Linear.row_sum` and `GroupedExperts.row_sum`
are set by whoever measured both (hepta.infer.matvec_choice).

bf16 weights take the row sums only compiled: eagerly the products would be rounded to bf16 before they are
summed, which a matmul does not do.
"""

from __future__ import annotations

import functools
import logging
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from hepta.model import packed_linear

log = logging.getLogger("hepta.model")

# rows of the weight per eager multiply: a block of about 4 MB in fp32, so its products stay in the last-level cache
_BLOCK_ELEMENTS = 1 << 20


def _products_summed(x_D: torch.Tensor, weight_ND: torch.Tensor) -> torch.Tensor:
    """weight @ x with the products summed in fp32; compiled, the casts are folded into the loads."""
    return (weight_ND.float() * x_D.float()).sum(-1).to(x_D.dtype)


@functools.cache
def _compiled(fn: Callable) -> Callable:
    # dynamic shapes: one kernel serves every weight shape (and dtype, one more), so a model's many projections
    # never reach dynamo's limit of recompiles per function
    return torch.compile(fn, dynamic=True, fullgraph=True)


_broken: list[str] = []  # why compiling failed here, once it has


@functools.cache
def fused_kernels() -> bool:
    """Whether TorchInductor compiles CPU kernels here (it needs a C++ compiler); tried once, on a tiny product."""
    with torch.no_grad():  # as decoding calls it, so the probe's kernel is the one decoding reuses
        return run_fused(_products_summed, torch.ones(8), torch.ones(4, 8)) is not None


def compiling() -> bool:
    """Whether compiled kernels serve here and now: TorchInductor builds them, and none has failed since."""
    return not _broken and fused_kernels()


def run_fused(fn: Callable, *args: torch.Tensor) -> torch.Tensor | None:
    """`fn(*args)` as one compiled kernel, or None where compiling fails here (said once in the log)."""
    if _broken:
        return None
    try:  # detached: a parameter and a plain tensor, or a view and its copy, then meet the same guards
        return _compiled(fn)(*(arg.detach() for arg in args))
    except Exception as error:  # no compiler, or a backend that cannot build: the eager products stay
        give_up_compiling(error, "matrix-vector products")
        return None


def give_up_compiling(error: Exception, what: str) -> None:
    """Records that compiling `what` failed here, says so once, and turns every compiled decode path off for good:
    what failed to build once would fail again, and the eager paths compute the same."""
    _broken.append(f"{type(error).__name__}: {error}")
    log.warning("decoding without compiled %s (%s)", what, _broken[0].splitlines()[0])


def row_sum_matvec(x_D: torch.Tensor, weight_ND: torch.Tensor) -> torch.Tensor:
    """weight @ x as a multiply and a row sum: [N]. One compiled pass over the weight where TorchInductor builds
    kernels, else a multiply and a sum per block of rows (fp32 only: `row_sum_applies`)."""
    fused = run_fused(_products_summed, x_D, weight_ND)
    if fused is not None:
        return fused
    N, D = weight_ND.shape
    out_N = torch.empty(N, dtype=x_D.dtype, device=x_D.device)
    rows = max(1, _BLOCK_ELEMENTS // D)
    for start in range(0, N, rows):
        torch.sum(weight_ND[start:start + rows] * x_D, dim=-1, out=out_N[start:start + rows])
    return out_N


def row_sum_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """On the CPU, outside autograd, fp32 (or bf16 where the products are compiled): where the row-sum product may
    replace the BLAS's."""
    if x.dtype != weight.dtype or x.device.type != "cpu" or torch.is_grad_enabled():
        return False
    return x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and compiling())


class Linear(nn.Linear):
    """nn.Linear whose single-row products on a CPU may go through `row_sum_matvec` (when `row_sum` is set), and
    whose fp32 products of more rows through oneDNN on a packed copy of the weight (`use_packed`)."""

    row_sum = False
    packed: packed_linear.PackedWeight | None = None

    def use_packed(self, enabled: bool) -> None:
        """Inference products of fp32 rows on a CPU through oneDNN (model/packed_linear.py), where it packs."""
        self.packed = packed_linear.pack(self.weight) if enabled else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.row_sum and x.numel() == self.in_features:  # a single row
            if torch.compiler.is_compiling():  # within a compiled decode region (model/decode_regions.py)
                out = _products_summed(x.reshape(-1), self.weight)
            elif row_sum_applies(x, self.weight):
                out = row_sum_matvec(x.reshape(-1), self.weight)
            else:
                return F.linear(x, self.weight, self.bias)
            if self.bias is not None:
                out = out + self.bias
            return out.view(*x.shape[:-1], self.out_features)
        # inside a compiled region the packed copy is not traced (each layer's would be a guard of its own)
        if not torch.compiler.is_compiling() and packed_linear.applies(x, self.packed):
            return packed_linear.linear(x, self.packed, self.bias)
        return F.linear(x, self.weight, self.bias)
