"""Which products a CPU engine decodes with, measured on the model itself, not guessed: for one sequence the BLAS's
matrix-vector product or model/matvec.py's multiply and row sum; for several sequences in fp32 the BLAS's matmul or
oneDNN's on packed weights (model/packed_linear.py).

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
from typing import Callable

import torch

from hepta.model import Transformer
from hepta.model import packed_linear
from hepta.model.matvec import Linear, fused_kernels

log = logging.getLogger("hepta.engine")

MARGIN = 0.9  # the row sums are kept only when at least 10% faster: a near tie keeps the BLAS


@dataclass(frozen=True)
class MatvecChoice:
    row_sum: bool
    reason: str
    blas_s: float | None = None  # median seconds of a decode step with each product
    row_sum_s: float | None = None
    packed: bool = False  # fp32 products of several rows through oneDNN on packed weights (model/packed_linear.py)
    batch_blas_s: float | None = None  # median seconds of a step of BATCH sequences without and with them
    batch_packed_s: float | None = None


BATCH = 8  # sequences in the step that decides the products of several rows


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
    """Times decode steps of `model` with each product (interleaved, median of `steps`), keeps the faster on the
    model and says why: for one sequence the BLAS's matrix-vector product or row sums
    (`Transformer.use_row_sum_matvec`), and in fp32 for BATCH sequences the BLAS's matmul or oneDNN's on packed
    weights (`Transformer.use_packed_linear`)."""
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
        model.use_packed_linear(False)
        return MatvecChoice(False, "the weights stay in the CPU's cache, where the BLAS's product is the faster")
    blas, row_sum = _step_seconds(model, 1, model.use_row_sum_matvec, steps)
    chosen = row_sum < MARGIN * blas
    model.use_row_sum_matvec(chosen)
    reason = (f"a decode step took {blas * 1e3:.1f} ms with the BLAS's matrix-vector product and "
              f"{row_sum * 1e3:.1f} ms with row sums")
    log.info("decoding one sequence with %s: %s", "row sums" if chosen else "the BLAS", reason)
    if weight.dtype != torch.float32 or not packed_linear.available():
        if chosen:  # a batch's compiled regions are built now, not when the first sequences come to decode together
            _step_seconds(model, BATCH, lambda on: None, steps=1)
        return MatvecChoice(chosen, reason, blas, row_sum)
    model.use_packed_linear(True)
    linears = {m: m.packed for m in model.modules() if isinstance(m, Linear)}

    def switch(on: bool) -> None:  # the packed copies are made once, above
        for module, packed in linears.items():
            module.packed = packed if on else None

    batch_blas, batch_packed = _step_seconds(model, BATCH, switch, steps)
    packed = batch_packed < MARGIN * batch_blas
    switch(packed)
    batch_reason = (f"a step of {BATCH} sequences took {batch_blas * 1e3:.1f} ms with the BLAS's fp32 matmul and "
                    f"{batch_packed * 1e3:.1f} ms with oneDNN's on packed weights")
    log.info("decoding several sequences with %s: %s", "oneDNN" if packed else "the BLAS", batch_reason)
    return MatvecChoice(chosen, f"{reason}; {batch_reason}", blas, row_sum, packed, batch_blas, batch_packed)


def _step_seconds(model: Transformer, sequences: int, switch: Callable[[bool], None],
                  steps: int) -> tuple[float, float]:
    """Median seconds of a decode step of `sequences` sequences with `switch(False)` and with `switch(True)`,
    interleaved, each sequence one token into its cache."""
    # a slot more than the sequences, and a position more than they see: the compiled step's graph then serves
    # caches of any size, the engine's own among them (sizes that are equal, or 1, are compiled as such)
    cache = model.new_slot_cache(sequences + 1, 3)
    tokens = torch.zeros(sequences, 1, dtype=torch.long)
    with torch.no_grad():
        cache.set_window(0, sequences, prompt_lengths=torch.ones(sequences, dtype=torch.long))
        model(tokens, cache=cache)

        def step(on: bool) -> float:
            switch(on)
            start = time.perf_counter()
            cache.set_window(0, sequences)
            model(tokens, cache=cache)  # the engine's own call: one sequence's step compiles with the LM head
            cache.lengths[:sequences] = 1  # the same position every time
            return time.perf_counter() - start

        step(False), step(True)  # first touches
        times = {False: [], True: []}
        for _ in range(steps):
            for on in (False, True):
                times[on].append(step(on))
    return statistics.median(times[False]), statistics.median(times[True])
