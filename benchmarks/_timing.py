"""Interleaved timing shared by the benchmarks, with a guard against the host's stalled phases.

On the shared 2-vCPU machines these benchmarks run on, the host sometimes leaves one vCPU
descheduled for milliseconds at a time. Every multi-threaded op then waits at its fork/join
for that long: a 64K-element multiply takes ~8 ms instead of ~8 us. Layers made of many small
ops (an MoE runs six matmuls per expert) slow down 30-50x in such a phase while one big
matmul slows down 2-3x, so a round timed there says nothing about the code. A cheap probe
before and after each round detects the phase; such rounds are redone after a pause, up to a
time budget, and counted in the output.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

STALLED_PROBE_US = 200.0  # normal: ~5-20 us; stalled phase: ~8000 us


def probe_us() -> float:
    """Mean time of a 64K-element multiply, which runs on both threads."""
    a = torch.ones(256, 256)
    a * a
    start = time.perf_counter()
    for _ in range(10):
        a * a
    return (time.perf_counter() - start) / 10 * 1e6


def wait_until_steady(budget_s: float) -> bool:
    """Pause while the machine is in a stalled phase, for at most budget_s; True if steady."""
    deadline = time.monotonic() + budget_s
    while probe_us() > STALLED_PROBE_US:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def interleaved(steps: dict[str, Callable[[], float]], rounds: int, warmup: int,
                guard: bool = True, wait_budget_s: float = 30.0) -> tuple[dict[str, list[float]], dict]:
    """Run each step once per round, in turn; return its timed seconds per round and counters.

    With guard, the round waits for a steady phase first and is redone when the probe after it
    finds a stalled one (see the module docstring), until wait_budget_s seconds have gone to
    waiting and redone rounds; later rounds are kept whatever the phase, and
    `unguarded_rounds` counts those that ran in a stalled phase.
    """
    times: dict[str, list[float]] = {name: [] for name in steps}
    stats = {"redone_rounds": 0, "unguarded_rounds": 0}
    spent = 0.0  # seconds of waiting and of redone rounds
    done = 0
    while done < warmup + rounds:
        start = time.monotonic()
        steady = not guard or wait_until_steady(max(0.0, wait_budget_s - spent))
        spent += time.monotonic() - start
        start = time.monotonic()
        result = {name: step() for name, step in steps.items()}
        if guard and steady and spent < wait_budget_s and probe_us() > STALLED_PROBE_US:
            stats["redone_rounds"] += 1
            spent += time.monotonic() - start
            continue
        if done >= warmup:
            stats["unguarded_rounds"] += guard and not steady
            for name, t in result.items():
                times[name].append(t)
        done += 1
    return times, stats


def median(values: list[float]) -> float:
    return statistics.median(values)
