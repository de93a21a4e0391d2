"""Shares of the experts run at once, one single-threaded worker per core (the fused CPU kernel in experts.py).

Fine-grained experts make small products: at 128 experts, top-8 and hidden 128, an expert's gate/up product
is about [128, 512] x [512, 256]. Split over the cores, as every torch operator is, each such product pays an
OpenMP fork and join and leaves the cores waiting on each other, far below the speed of one large product.
Handing each core whole experts instead, every product and every gather, activation and scatter of its share
runs on one thread with no synchronisation until the share is done; the shares' outputs are then added.

The workers are threads of this process: torch releases the GIL inside its operators, so the cores run
together while Python issues the next call. Each worker sets its own thread count to 1 once; OpenMP and
MKL keep that count per thread, so the main thread's operators keep all the cores.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

import torch

# Up to this many multiply-adds in an average expert's gate/up product, whole experts per core beat every product
# split over the cores (benchmarks/moe_layer.py on 2 cores, d 512, 2,048 tokens: 1.08-1.28x fp32 and 1.00-1.17x
# bf16 over three runs at 128 experts top-8 hidden 128, about 128 x 512 x 256 = 17M; no gain at 64 experts top-8
# hidden 256, 67M).
SMALL_PRODUCT = 1 << 25

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_lock = threading.Lock()
enabled = True  # benchmarks and tests switch it off to compare against products over all cores


def _single_threaded(started: threading.Barrier) -> None:
    torch.get_num_threads()  # a thread's first operator sets its count from the process's; after that, ours
    torch.set_num_threads(1)
    started.wait()


def _workers(n: int) -> ThreadPoolExecutor:
    """The pool of n single-threaded workers, started at once so that each has set its count before use."""
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size != n:
            if _pool is not None:
                _pool.shutdown()
            main_threads = torch.get_num_threads()
            _pool, _pool_size = ThreadPoolExecutor(n, thread_name_prefix="hepta-experts"), n
            started = threading.Barrier(n + 1)
            for _ in range(n):  # each task holds its thread at the barrier, so n threads start
                _pool.submit(_single_threaded, started)
            started.wait()
            # torch.set_num_threads also sets the count new threads start from; give that back to the process.
            torch.set_num_threads(main_threads)
        return _pool


def shares(chunks: list[tuple[int, int, list[int], list[int]]], dim: int, hidden: int) -> list[list]:
    """The chunks (experts.py's `_chunks`) cut into one run of about equal rows per core where the experts'
    products are small (`SMALL_PRODUCT`, for model width `dim` and expert width `hidden`) and there are at
    least two chunks per core; else all of them in one."""
    cores = torch.get_num_threads()
    if not enabled or cores < 2 or len(chunks) < 2 * cores:
        return [chunks]
    rows = chunks[-1][1]
    experts = sum(len(c[2]) for c in chunks)
    if rows * dim * 2 * hidden > SMALL_PRODUCT * experts:
        return [chunks]
    cut, out = 0, []
    for i in range(1, cores):  # the first chunk ending past i/cores of the rows closes a share
        end = next((j + 1 for j in range(cut, len(chunks)) if chunks[j][1] * cores >= rows * i), len(chunks))
        out.append(chunks[cut:end])
        cut = end
    out.append(chunks[cut:])
    return [share for share in out if share]


def run(fn: Callable[..., Any], calls: Sequence[tuple]) -> list[Any]:
    """fn(*args) for each args in calls: in the caller's thread where there is one, else one call per worker
    at once. Workers run in the caller's inference mode, with autograd off (they compute gradients by hand)."""
    if len(calls) == 1:
        return [fn(*calls[0])]
    inference = torch.is_inference_mode_enabled()

    def call(args: tuple) -> Any:
        with torch.inference_mode(inference), torch.no_grad():
            return fn(*args)

    pool = _workers(len(calls))
    return [future.result() for future in [pool.submit(call, args) for args in calls]]


def total(parts: list[torch.Tensor]) -> torch.Tensor:
    """The sum of the shares' outputs, in the first one's memory."""
    out = parts[0]
    for part in parts[1:]:
        out.add_(part)
    return out
