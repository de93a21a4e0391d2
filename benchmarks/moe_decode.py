"""The routed experts of a decode step on a CPU: the engine's kernel against the BLAS's, by tokens in the step.

    .venv/bin/python benchmarks/moe_decode.py [--rounds 7] [--tokens 1,2,4,8,16,32,64,128] [--json results.json]

A decode step of N sequences sends N tokens through each MoE layer, N*K routed copies over E experts. The layers
are those of the 200M OLMoE shape (8 layers of 32 experts top-4, d 512, hidden 384; benchmarks/_shapes.py), each
with its own random weights, so that a step streams them from memory as a real model's does. Per token count and
dtype (fp32, bf16), interleaved within each round, one pass through the 8 layers' experts (`GroupedExperts`,
inference, as `MoE.forward` calls them):
- engine: the experts with the row sums switched on, as a CPU engine that measured them runs: compiled row sums
  over the routed copies, sorted by expert within the kernel, up to 4 copies per expert on average
  (`GroupedExperts.few_tokens`), else the BLAS kernels below;
- blas: one BLAS product per expert on its rows (the plain loop for up to 16 copies, else the fused kernel), the
  copies sorted by expert beforehand (outside the timing).
Reported: ms per pass (median over rounds), the ratio blas / engine, and the distinct experts' bytes over the
engine's time (GB/s).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import hepta
from hepta.model.experts import GroupedExperts
from hepta.model.matvec import compiling

from _shapes import shaped
from _timing import interleaved, median


def layers(cfg: hepta.ModelConfig, dtype: torch.dtype) -> list[GroupedExperts]:
    out = []
    for seed in range(cfg.num_layers):
        torch.manual_seed(seed)
        experts = GroupedExperts(cfg.moe.num_experts, cfg.dim, cfg.moe.expert_hidden_dim)
        experts.reset_parameters()
        out.append(experts.to(dtype).eval())
    return out


def routed(tokens: int, cfg: hepta.ModelConfig, dtype: torch.dtype, seed: int):
    """`tokens` tokens and their routing: x [N, D], chosen experts [N, K], gate weights [N, K]."""
    generator = torch.Generator().manual_seed(seed)
    E, K = cfg.moe.num_experts, cfg.moe.top_k
    experts_NK = torch.stack([torch.randperm(E, generator=generator)[:K] for _ in range(tokens)])
    weights_NK = torch.softmax(torch.randn(tokens, K, generator=generator), -1).to(dtype)
    return torch.randn(tokens, cfg.dim, generator=generator).to(dtype), experts_NK, weights_NK


def as_the_moe_runs(experts: GroupedExperts, x_ND, experts_NK, weights_NK) -> torch.Tensor:
    """What `MoE.forward` does with routed tokens: row sums over the copies where they apply, else the copies
    sorted by expert (the sort is on the router's side and outside the timing in both cases) and `forward`."""
    out = experts.few_tokens(x_ND, experts_NK, weights_NK) if experts.takes_copies(experts_NK.numel()) else None
    if out is not None:
        return out
    order_M = experts_NK.flatten().argsort(stable=True)
    counts = torch.bincount(experts_NK.flatten(), minlength=experts.gate_up_proj.shape[0]).tolist()
    return experts(x_ND, weights_NK.flatten()[order_M], order_M // experts_NK.shape[1], counts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--tokens", default="1,2,4,8,16,32,64,128")
    parser.add_argument("--shape", default="olmoe-200m")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    cfg = shaped(args.shape)
    print(f"{args.shape}: {cfg.num_layers} layers of {cfg.moe.num_experts} experts top-{cfg.moe.top_k}, "
          f"d {cfg.dim}, hidden {cfg.moe.expert_hidden_dim}; {torch.get_num_threads()} threads; "
          f"compiled kernels: {compiling()}", flush=True)
    print(f"{'dtype':>9} {'tokens':>6} {'engine ms':>10} {'blas ms':>8} {'blas/engine':>11} {'GB/s':>6}")
    results = []
    for dtype in (torch.float32, torch.bfloat16):
        model = layers(cfg, dtype)
        expert_bytes = 3 * cfg.dim * cfg.moe.expert_hidden_dim * dtype.itemsize
        for tokens in map(int, args.tokens.split(",")):
            inputs = routed(tokens, cfg, dtype, seed=tokens)
            distinct = inputs[1].unique().numel() * expert_bytes * cfg.num_layers

            def run(row_sum: bool) -> float:
                for experts in model:
                    experts.row_sum = row_sum
                start = time.perf_counter()
                for experts in model:
                    as_the_moe_runs(experts, *inputs)
                return time.perf_counter() - start

            with torch.no_grad():
                times, _ = interleaved({"engine": lambda: run(True), "blas": lambda: run(False)},
                                       rounds=args.rounds, warmup=2)
            engine, blas = median(times["engine"]), median(times["blas"])
            results.append({"dtype": str(dtype).removeprefix("torch."), "tokens": tokens, "engine_ms": engine * 1e3,
                            "blas_ms": blas * 1e3, "ratio": blas / engine, "engine_gbps": distinct / engine / 1e9})
            r = results[-1]
            print(f"{r['dtype']:>9} {tokens:>6} {r['engine_ms']:>10.2f} {r['blas_ms']:>8.2f} {r['ratio']:>10.2f}x "
                  f"{r['engine_gbps']:>6.1f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
