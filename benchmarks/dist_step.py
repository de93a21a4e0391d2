"""Training-step throughput on 2 processes (gloo on this machine) against 1 process.

    .venv/bin/python benchmarks/dist_step.py [--preset tiny] [--batch 8] [--seq 256] [--rounds 7] [--json FILE]

It starts itself under torchrun with 2 processes. Per round, interleaved, it times one step of:
    1 process      the unsharded model on rank 0 with both cores' threads (rank 1 waits)
    ... 1 thread   the same with one thread (the per-core baseline)
    ep=2           FSDP2 + expert parallelism over the 2 processes, one thread each
    fsdp, dim 0    FSDP2 only, experts sharded whole (dim 0), one thread each
    fsdp, dim 1    FSDP2 only, experts sharded on dim 1 (the copy-out FSDP2 needs for it)
One step = forward on this rank's rows of the same global batch, cross-entropy + router loss,
backward, gradient clipping, AdamW, the global expert load and the bias update, as
`hepta train` does it. Each figure is the median over rounds after warmup; a step's time runs
from a barrier before it to a barrier after it, so it is the slower rank's. Then each parallel
layout is profiled with torch.profiler for a few steps on rank 0, and the share of step time
with an all-to-all (token dispatch), an all-gather (FSDP unshard) or a reduction (gradient
reduce-scatter, loss and norm all-reduce) in flight is printed; they can overlap compute.
Last, the experts' all-gather alone is timed with the experts sharded on dim 0 and on dim 1.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import STALLED_PROBE_US, probe_us, wait_until_steady  # noqa: E402

import hepta  # noqa: E402
from hepta.checkpoint import build_model  # noqa: E402
from hepta.serve.runner import free_port  # noqa: E402
from hepta.train.optim import build_optimizer  # noqa: E402
from hepta.train.parallel import ParallelLayout, build_mesh, dp_mesh, parallelize  # noqa: E402
from hepta.train.parallel import fsdp as fsdp_module  # noqa: E402
from hepta.train.parallel.balance import sync_expert_load  # noqa: E402
from hepta.train.parallel.grad_norm import clip_grad_norm  # noqa: E402

THREADS = 2  # the machine's cores: 1 process uses both, 2 processes one each
# Gloo runs each collective on its own thread and the profiler records it there as
# "gloo:<op>"; the union of those spans is the time that kind of collective was in flight.
COLLECTIVES = {"all_to_all": ("gloo:all_to_all",), "all_gather": ("gloo:all_gather",),
               "reduce": ("gloo:all_reduce", "gloo:reduce_scatter")}


def make_step(model, group, ids_BT, targets_BT):
    optimizer = build_optimizer(model, 3e-4, 0.1)

    def step() -> None:
        logits = model(ids_BT)
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets_BT.flatten()) + model.router_loss()
        loss.backward()
        clip_grad_norm(list(model.parameters()), 1.0, group)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync_expert_load(model, group)
        model.update_expert_bias()
    return step


def timed(step, threads: int, active: bool):
    def run() -> float:
        torch.set_num_threads(threads)
        dist.barrier()
        start = time.perf_counter()
        if active:
            step()
        dist.barrier()
        return time.perf_counter() - start
    return run


def _agreed(flag: bool) -> bool:
    """Rank 0's decision, on every rank."""
    t = torch.tensor([int(flag)])
    dist.broadcast(t, src=0)
    return bool(t.item())


def guarded_rounds(steps, rounds: int, warmup: int, wait_budget_s: float) -> tuple[dict[str, list[float]], int]:
    """Interleaved rounds as _timing.interleaved runs them, with its guard decided on rank 0 for all:
    wait for a steady phase of the host before a round, redo a round that ran into a stalled one
    (until wait_budget_s is spent). A stalled phase slows the 2-thread step far more than the others."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    redone, spent, done = 0, 0.0, 0
    while done < warmup + rounds:
        start = time.monotonic()
        torch.set_num_threads(THREADS)  # the probe must fork and join as the 2-thread step does
        if dist.get_rank() == 0:
            wait_until_steady(max(0.0, wait_budget_s - spent))
        dist.barrier()
        spent += time.monotonic() - start
        start = time.monotonic()
        # a different order each round: whatever runs just after another step inherits its caches
        names = list(steps)
        names = names[done % len(names):] + names[:done % len(names)]
        result = {name: steps[name]() for name in names}
        torch.set_num_threads(THREADS)
        stalled = dist.get_rank() == 0 and spent < wait_budget_s and probe_us() > STALLED_PROBE_US
        if _agreed(stalled):
            redone += 1
            spent += time.monotonic() - start
            continue
        if done >= warmup:
            for name, t in result.items():
                times[name].append(t)
        done += 1
    return times, redone


def parallel_model(cfg, ep: int, shard_dim: int | None):
    layout = ParallelLayout.choose(dist.get_world_size(), cfg.moe.num_experts, ep=ep)
    mesh = build_mesh(layout)
    real = fsdp_module.expert_shard_dim
    if shard_dim is not None:  # force the experts' FSDP dim, to compare it with the chosen one
        fsdp_module.expert_shard_dim = lambda shape, n: shard_dim
    try:
        model = parallelize(build_model(cfg, seed=0), mesh, ep=ep)
    finally:
        fsdp_module.expert_shard_dim = real
    return model, dp_mesh(mesh).get_group()


def gather_experts(model):
    experts = [moe.experts for moe in model.moe_layers()]

    def run() -> None:
        for module in experts:
            module.unshard()
            module.reshard()
    return run


def comm_share(step, steps: int = 3) -> dict[str, float]:
    """Fractions of wall time with a collective of each kind in flight on this rank, over `steps` steps."""
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(1)
    step()
    dist.barrier()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        dist.barrier()
        wall = time.perf_counter() - start
    spans = {kind: [] for kind in COLLECTIVES}
    for event in prof.events():
        for kind, names in COLLECTIVES.items():
            if event.name.startswith(names):
                spans[kind].append((event.time_range.start, event.time_range.end))
    return {kind: _union_us(ranges) / 1e6 / wall for kind, ranges in spans.items()}


def _union_us(ranges: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for s, e in sorted(ranges):
        if e > end:
            total += e - max(s, end)
            end = e
    return total


def worker(args) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    cfg = hepta.get_preset(args.preset)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq + 1), generator=g)
    x, y = ids[:, :-1], ids[:, 1:]
    rows = args.batch // 2
    mine = slice(rank * rows, (rank + 1) * rows)

    single = make_step(build_model(cfg, seed=0), None, x, y) if rank == 0 else None
    layouts = {"ep=2": (2, None), "fsdp, dim 0": (1, 0), "fsdp, dim 1": (1, 1)}
    parallel, gathers = {}, {}
    for name, (ep, dim) in layouts.items():
        model, group = parallel_model(cfg, ep, dim)
        parallel[name] = make_step(model, group, x[mine], y[mine])
        if ep == 1:
            gathers[f"experts on dim {dim}"] = timed(gather_experts(model), 1, True)

    steps = {"1 process": timed(single, THREADS, rank == 0), "1 process, 1 thread": timed(single, 1, rank == 0)}
    steps.update({name: timed(step, 1, True) for name, step in parallel.items()})
    times, redone = guarded_rounds(steps, rounds=args.rounds, warmup=args.warmup, wait_budget_s=args.wait_budget)
    shares = {name: comm_share(step) for name, step in parallel.items()}
    gather_times, _ = guarded_rounds(gathers, rounds=5 * args.rounds, warmup=args.warmup, wait_budget_s=0)
    if rank == 0:
        report(args, cfg, times, shares)
        print("all-gather and free of every MoE layer's experts (FSDP unshard + reshard), 2 processes:")
        first = statistics.median(next(iter(gather_times.values())))
        for name, t in gather_times.items():
            print(f"  {name}: {1e3 * statistics.median(t):.2f} ms ({statistics.median(t) / first:.2f}x)")
        print(f"rounds redone in a stalled phase of the host: {redone}")
    dist.destroy_process_group()


def report(args, cfg, times, shares) -> None:
    tokens = args.batch * args.seq
    sec = {name: statistics.median(t) for name, t in times.items()}
    base = tokens / sec["1 process"]
    print(f"torch {torch.__version__}; preset {args.preset} ({cfg.moe.num_experts} experts, top-{cfg.moe.top_k}); "
          f"global batch {args.batch} x {args.seq} tokens; median of {args.rounds} rounds after {args.warmup} warmup")
    print(f"{'layout':<20}{'ms/step':>9}{'tokens/s':>10}{'vs 1 proc':>11}{'all-to-all':>12}{'all-gather':>12}"
          f"{'reduce':>9}")
    results = {}
    for name, s in sec.items():
        share = shares.get(name, {})
        a2a, ag, red = (f"{share[k]:.0%}" if share else "-" for k in COLLECTIVES)
        print(f"{name:<20}{1e3 * s:>9.0f}{tokens / s:>10,.0f}{tokens / s / base:>10.2f}x{a2a:>12}{ag:>12}{red:>9}")
        results[name] = {"ms_per_step": 1e3 * s, "tokens_per_s": tokens / s, "ratio_to_1_process": tokens / s / base,
                         "times_s": times[name], **{f"{k}_share": v for k, v in share.items()}}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--batch", type=int, default=8, help="global batch (sequences)")
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--wait-budget", type=float, default=120.0,
                        help="seconds to spend waiting out and redoing rounds in stalled phases of the host")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    if "RANK" in os.environ:
        worker(args)
        return 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(free_port()), os.path.abspath(__file__), *sys.argv[1:]]
    return subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}).returncode


if __name__ == "__main__":
    sys.exit(main())
