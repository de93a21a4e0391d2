"""Which matrix-vector product a CPU engine decodes one sequence with: the BLAS's, or model/matvec.py's multiply and
row sum. Measured on the model itself, not guessed.

Only where the weights outgrow the last-level cache is it worth measuring: there a batch-1 step streams them from
memory, and the two products differ by up to 2x depending on the BLAS and the CPU. Weights that stay in cache (the
small models of the tests, say) keep the BLAS without a measurement, so their answers never depend on a timing.
"""

from __future__ import annotations

import functools
import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from hepta.model import Transformer
from hepta.model.matvec import fused_kernels

log = logging.getLogger("hepta.engine")

MARGIN = 0.9  # the row sums are kept only when at least 10% faster: a near tie keeps the BLAS


@dataclass(frozen=True)
class MatvecChoice:
    row_sum: bool
    reason: str
    blas_s: float | None = None  # median seconds of a decode step with each product
    row_sum_s: float | None = None


@functools.cache  # the machine's, read once
def last_level_cache_bytes() -> int | None:
    """The largest CPU cache Linux reports for CPU 0 (L3 on most servers), or None where it says nothing."""
    sizes = {}
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            level, size = int((index / "level").read_text()), (index / "size").read_text().strip()
        except (OSError, ValueError):
            continue
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
        sizes[level] = int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)
    return sizes[max(sizes)] if sizes else None


def choose_matvec(model: Transformer, steps: int = 6) -> MatvecChoice:
    """Times a decode step of `model` with each product (interleaved, median of `steps`), keeps the faster on the
    model (`Transformer.use_row_sum_matvec`) and says why."""
    weight = model.embed.weight
    if weight.device.type != "cpu" or weight.dtype not in (torch.float32, torch.bfloat16):
        return MatvecChoice(False, "the row sums serve fp32 and bf16 weights on a CPU only")
    if weight.dtype == torch.bfloat16 and not fused_kernels():
        return MatvecChoice(False, "bf16 row sums need compiled kernels, and TorchInductor builds none here")
    cache_bytes = last_level_cache_bytes()
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    # a batch-1 step reads every weight once; at twice the cache's size most of them come from memory
    if cache_bytes is None or weight_bytes <= 2 * cache_bytes:
        model.use_row_sum_matvec(False)
        return MatvecChoice(False, "the weights stay in the CPU's cache, where the BLAS's product is the faster")
    cache = model.new_slot_cache(1, 2)
    token = torch.zeros(1, 1, dtype=torch.long)
    with torch.no_grad():
        cache.set_window(0, 1, prompt_lengths=torch.tensor([1]))
        model.hidden_states(token, cache=cache)

        def step(row_sum: bool) -> float:
            model.use_row_sum_matvec(row_sum)
            start = time.perf_counter()
            cache.set_window(0, 1)
            model.output(model.hidden_states(token, cache=cache)[:, -1])
            cache.lengths[0] = 1  # the same position every time
            return time.perf_counter() - start

        step(False), step(True)  # first touches
        times = {False: [], True: []}
        for _ in range(steps):
            for row_sum in (False, True):
                times[row_sum].append(step(row_sum))
    blas, row_sum = statistics.median(times[False]), statistics.median(times[True])
    chosen = row_sum < MARGIN * blas
    model.use_row_sum_matvec(chosen)
    choice = MatvecChoice(chosen, f"a decode step took {blas * 1e3:.1f} ms with the BLAS's matrix-vector product and "
                                  f"{row_sum * 1e3:.1f} ms with row sums", blas, row_sum)
    log.info("decoding one sequence with %s: %s", "row sums" if chosen else "the BLAS", choice.reason)
    return choice
