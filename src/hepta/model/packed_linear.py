"""fp32 linear products of a few rows or more on a CPU through oneDNN, with the weight packed once.

torch's fp32 matmul on a CPU is MKL's sgemm, which on AMD CPUs runs far from the machine: the 200M OLMoE shape's
LM head [16, 512] x [512, 32768] took 12.8 ms on 2 EPYC cores, where oneDNN's inner-product primitive on the weight
reordered once into its blocked layout took 3.7 ms (1.5-1.9x for a prompt of 100 tokens; 1.1-2.4x for the
[512, 512] projections). bf16 products already go through oneDNN. A whole step of 8 sequences of that model: 30.8
against 23.4 ms (what an engine measures and logs, and benchmarks/decode.py prints). The packed copy is what inference
reads; the plain weight stays the parameter (state dict, training, the row sums of one row), so switching it on
costs the Linear layers' weights once more in memory, and it is switched on by who measured it
(hepta.infer.matvec_choice), not here.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("hepta.model")


def available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class PackedWeight:
    """A weight [N, K] in oneDNN's layout for an inner product, and the version of the weight it was packed from:
    a weight changed in place since (a load, a training step) is packed again before its next use."""

    def __init__(self, weight: torch.Tensor):
        self.weight = weight
        self._pack()

    def _pack(self) -> None:
        with torch.no_grad():
            self.packed = torch.ops.mkldnn._reorder_linear_weight(self.weight.detach())
        self.version = (self.weight._version, self.weight.data_ptr())

    def current(self) -> torch.Tensor:
        if (self.weight._version, self.weight.data_ptr()) != self.version:
            self._pack()
        return self.packed


def pack(weight: torch.Tensor) -> PackedWeight | None:
    """The weight packed for oneDNN, or None where the packed products do not apply (not fp32 on a CPU, no oneDNN
    here, or a reorder that fails: said once in the log, and the BLAS stays)."""
    if weight.dtype != torch.float32 or weight.device.type != "cpu" or weight.dim() != 2 or not available():
        return None
    try:
        return PackedWeight(weight)
    except RuntimeError as error:
        log.warning("fp32 linear layers keep the BLAS: oneDNN could not pack a weight (%s)", error)
        return None


def applies(x: torch.Tensor, packed: PackedWeight | None) -> bool:
    """Inference on fp32 CPU rows with a packed weight: where `linear` may replace F.linear."""
    return packed is not None and x.dtype == torch.float32 and x.device.type == "cpu" and not torch.is_grad_enabled()


def linear(x: torch.Tensor, packed: PackedWeight, bias: torch.Tensor | None) -> torch.Tensor:
    """F.linear(x, weight, bias) through oneDNN's inner product on the packed weight."""
    rows = x.reshape(-1, x.shape[-1])
    out = torch.ops.mkldnn._linear_pointwise(rows.contiguous(), packed.current(), bias, "none", [], "")
    return out.view(*x.shape[:-1], out.shape[-1])
