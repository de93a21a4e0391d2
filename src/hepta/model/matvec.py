"""Matrix-vector products for decoding one sequence on a CPU, and the Linear layer that can use them.

Decoding one sequence multiplies every weight by one row. Where the weights do not fit in the CPU's caches they
stream from memory, and some BLAS builds run that matrix-vector product at one core's bandwidth (MKL's sgemv on
an AMD EPYC: 17 GB/s on 2 cores, where a read of the same bytes reaches 45-79 GB/s). A multiply and a row sum,
block by block, runs on all of torch's threads instead (35-39 GB/s there; 1.5x on a whole decode step of a 200M
model, benchmarks/decode.py). Which one wins depends on the machine and the model, so nothing here chooses:
`Linear.row_sum` and `GroupedExperts.row_sum` are set by whoever measured both (hepta.infer.matvec_choice).

fp32 only: in bf16 the products would be rounded before they are summed, which a matmul does not do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# rows of the weight per multiply: a block of about 4 MB in fp32, so its products stay in the last-level cache
_BLOCK_ELEMENTS = 1 << 20


def row_sum_matvec(x_D: torch.Tensor, weight_ND: torch.Tensor) -> torch.Tensor:
    """weight @ x as a multiply and a row sum per block of rows: [N]."""
    N, D = weight_ND.shape
    out_N = torch.empty(N, dtype=x_D.dtype, device=x_D.device)
    rows = max(1, _BLOCK_ELEMENTS // D)
    for start in range(0, N, rows):
        torch.sum(weight_ND[start:start + rows] * x_D, dim=-1, out=out_N[start:start + rows])
    return out_N


def row_sum_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """fp32 on the CPU, outside autograd: where the row-sum product may replace the BLAS's."""
    return x.dtype == weight.dtype == torch.float32 and x.device.type == "cpu" and not torch.is_grad_enabled()


class Linear(nn.Linear):
    """nn.Linear whose single-row products on a CPU may go through `row_sum_matvec` (when `row_sum` is set)."""

    row_sum = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.row_sum and x.numel() == self.in_features and row_sum_applies(x, self.weight):  # a single row
            out = row_sum_matvec(x.reshape(-1), self.weight)
            if self.bias is not None:
                out += self.bias
            return out.view(*x.shape[:-1], self.out_features)
        return F.linear(x, self.weight, self.bias)
