"""MoE layer forward+backward: hepta vs a dense SwiGLU of equal active FLOPs vs transformers' OLMoE block.

    .venv/bin/python benchmarks/moe_layer.py [--rounds 7] [--device auto] [--json results.json]

Dims: N tokens, D model dim, E experts, K experts per token, F expert hidden dim.

The layers run on the same input, interleaved within each round so that CPU clock drift hits
them alike; each figure is the median over rounds of one forward + backward (input and
weight gradients, as in training):
- hepta: `hepta.model.moe.MoE` configured like OLMoE (softmax router, top-k weights not
  renormalised, no shared experts, no router losses).
- dense: one SwiGLU of hidden K*F (fused gate/up linear + down linear). It does the same
  matmul FLOPs as the MoE's experts with none of the routing, so it is the limit for the
  MoE on this machine.
- transformers: `OlmoeSparseMoeBlock` holding the very same weights, at the fastest of its
  experts implementations for that shape (chosen by a short timing; printed).
- on a CPU, hepta again with every expert product split over all cores (`expert_threads.enabled` off):
  the ablation of handing each core a share of the experts where they are small.

Before timing, hepta's output and input gradient are checked against transformers' in fp32.
bf16 runs put weights and inputs of all three layers in bf16 (no autocast). Rounds that fall
into a stalled phase of the host are redone (see _timing.py; --no-guard keeps them). On a CUDA
device (--device auto finds one) the three layers run there (hepta's experts as grouped GEMMs),
each timed region ending when the GPU is done, and with no host-stall guard.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
from transformers import OlmoeConfig
from transformers.models.olmoe.modeling_olmoe import OlmoeSparseMoeBlock

from hepta.config import ModelConfig, MoEConfig, RouterConfig
from hepta.model import expert_threads
from hepta.model.layers import SwiGLU
from hepta.model.moe import MoE

import _device
from _timing import interleaved, median, wait_until_steady

D, N = 512, 2048
SHAPES = [(8, 2, 1024), (64, 8, 256), (128, 8, 128)]  # (E, K, F); the dense peer has hidden K*F
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
TF_IMPLEMENTATIONS = ["eager", "grouped_mm", "batched_mm"]


def build(E: int, K: int, F: int, dtype: torch.dtype, seed: int = 0, device: torch.device | str = "cpu"):
    torch.manual_seed(seed)
    cfg = ModelConfig(dim=D, moe=MoEConfig(num_experts=E, top_k=K, expert_hidden_dim=F, num_shared_experts=0),
                      router=RouterConfig(scoring="softmax", norm_topk_prob=False))
    hepta = MoE(cfg)
    hepta.reset_parameters()
    dense = SwiGLU(D, K * F)
    tf_cfg = OlmoeConfig(hidden_size=D, intermediate_size=F, num_experts=E, num_experts_per_tok=K,
                         norm_topk_prob=False)
    tf = OlmoeSparseMoeBlock(tf_cfg)
    with torch.no_grad():
        tf.gate.weight.copy_(hepta.router.weight)
        tf.experts.gate_up_proj.copy_(hepta.experts.gate_up_proj)
        tf.experts.down_proj.copy_(hepta.experts.down_proj)
    return hepta.to(device, dtype), dense.to(device, dtype), tf.to(device, dtype)


def set_tf_implementation(tf: OlmoeSparseMoeBlock, name: str) -> None:
    # The block is used standalone (not inside a PreTrainedModel), so the config switch is the
    # one place the experts implementation is read from at each forward.
    tf.experts.config._experts_implementation = name


def batched_mm_fits(E: int, K: int, F: int, dtype: torch.dtype, device: torch.device) -> bool:
    # batched_mm gathers a full weight copy per routed token ([N*K, 2F, D] and [N*K, D, F]) and keeps
    # them for backward; skip it where that would not fit comfortably in memory.
    need = N * K * 3 * F * D * torch.finfo(dtype).bits // 8 * 2
    memory = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else \
        os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return need < memory // 4


def make_step(layer: torch.nn.Module, x: torch.Tensor, grad_out: torch.Tensor, experts_by_core: bool = True):
    """One timed forward + backward; `experts_by_core` False runs hepta's experts with every product over all
    cores instead of a share of the experts per core (model/expert_threads.py)."""
    params = list(layer.parameters())

    def step() -> float:
        for p in params:
            p.grad = None
        x.grad = None
        expert_threads.enabled = experts_by_core
        _device.sync(x.device)
        start = time.perf_counter()
        layer(x).backward(grad_out)
        _device.sync(x.device)
        expert_threads.enabled = True
        return time.perf_counter() - start
    return step


def check_equal(hepta: MoE, tf: OlmoeSparseMoeBlock, x: torch.Tensor, grad_out: torch.Tensor) -> None:
    outs = []
    for layer in (hepta, tf):
        xi = x.detach().clone().requires_grad_()
        y = layer(xi)
        y.backward(grad_out)
        outs.append((y.detach(), xi.grad))
    torch.testing.assert_close(outs[0][0], outs[1][0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(outs[0][1], outs[1][1], atol=1e-5, rtol=1e-4)


def bench_case(E: int, K: int, F: int, dtype_name: str, rounds: int, warmup: int, guard: bool,
               device: torch.device = torch.device("cpu")) -> dict:
    dtype = DTYPES[dtype_name]
    hepta, dense, tf = build(E, K, F, dtype, device=device)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, N, D, generator=gen).to(device, dtype).requires_grad_()
    grad_out = torch.randn(1, N, D, generator=gen).to(device, dtype)

    # Pick transformers' fastest experts implementation for this shape and dtype.
    impl_ms = {}
    for name in TF_IMPLEMENTATIONS:
        if name == "batched_mm" and not batched_mm_fits(E, K, F, dtype, device):
            impl_ms[name] = None  # would need tens of GB
            continue
        set_tf_implementation(tf, name)
        if dtype == torch.float32:
            check_equal(hepta, tf, x, grad_out)
        step = make_step(tf, x, grad_out)
        step()
        if guard:
            wait_until_steady(5.0)
        impl_ms[name] = 1e3 * statistics.median(step() for _ in range(3))
    best = min((ms, name) for name, ms in impl_ms.items() if ms is not None)[1]
    set_tf_implementation(tf, best)

    steps = {name: make_step(layer, x, grad_out) for name, layer in
             (("hepta", hepta), ("dense", dense), ("transformers", tf))}
    if device.type == "cpu":  # the ablation of running a share of the experts per core
        steps["hepta_all_cores"] = make_step(hepta, x, grad_out, experts_by_core=False)
    seconds, guard_stats = interleaved(steps, rounds, warmup, guard)
    times = {name: [1e3 * t for t in ts] for name, ts in seconds.items()}
    ms = {name: median(ts) for name, ts in times.items()}
    flops = 3 * 2 * N * K * 3 * D * F  # fwd + 2x bwd, three matmuls per expert
    return {
        "E": E, "K": K, "F": F, "D": D, "tokens": N, "dtype": dtype_name,
        "hepta_ms": ms["hepta"], "dense_ms": ms["dense"], "transformers_ms": ms["transformers"],
        "transformers_impl": best, "transformers_impl_ms": impl_ms,
        "hepta_vs_dense": ms["dense"] / ms["hepta"],
        "hepta_vs_transformers": ms["transformers"] / ms["hepta"],
        "hepta_all_cores_ms": ms.get("hepta_all_cores"),
        "experts_by_core_gain": ms["hepta_all_cores"] / ms["hepta"] if "hepta_all_cores" in ms else None,
        "dense_gflops": flops / ms["dense"] / 1e6, "hepta_gflops": flops / ms["hepta"] / 1e6,
        "rounds_ms": times, **guard_stats,
    }


def _by_core(r: dict) -> str:
    gain = r["experts_by_core_gain"]
    return f"{gain:>8.2f}x" if gain is not None else f"{'-':>9}"


def _guard_note(r: dict) -> str:
    notes = []
    if r["redone_rounds"]:
        notes.append(f"{r['redone_rounds']} rounds redone (stalled host)")
    if r["unguarded_rounds"]:
        notes.append(f"{r['unguarded_rounds']} rounds in a stalled phase kept: not representative")
    return f"   [{'; '.join(notes)}]" if notes else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (median is reported); at least 5")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--shapes", nargs="+", default=[f"{e}x{k}x{f}" for e, k, f in SHAPES],
                        help="E x K x F, e.g. 64x8x256")
    parser.add_argument("--no-guard", action="store_true", help="keep rounds timed in a stalled phase of the host")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    args = parser.parse_args()
    if args.rounds < 5:
        parser.error("--rounds must be at least 5")
    device = _device.pick(args.device)
    guard = not args.no_guard and device.type == "cpu"  # the host-stall probe judges CPU rounds only

    print(f"{_device.describe(device)}; D={D}, {N} tokens, fwd+bwd, "
          f"median of {args.rounds} interleaved rounds after {args.warmup} warmup")
    header = (f"{'shape':<16}{'dtype':<6}{'hepta ms':>10}{'dense ms':>10}{'tf ms':>10}  {'tf impl':<11}"
              f"{'hepta/dense':>12}{'vs tf':>8}{'by core':>9}")
    print(header)
    print("-" * len(header))
    results = []
    for shape in args.shapes:
        E, K, F = (int(v) for v in shape.split("x"))
        for dtype_name in args.dtypes:
            r = bench_case(E, K, F, dtype_name, args.rounds, args.warmup, guard, device)
            results.append(r)
            print(f"{f'E{E} top{K} F{F}':<16}{dtype_name:<6}{r['hepta_ms']:>10.1f}{r['dense_ms']:>10.1f}"
                  f"{r['transformers_ms']:>10.1f}  {r['transformers_impl']:<11}{r['hepta_vs_dense']:>11.2f}x"
                  f"{r['hepta_vs_transformers']:>7.2f}x" + _by_core(r) + _guard_note(r), flush=True)
    print("hepta/dense = dense_ms / hepta_ms (1.0 = as fast as a dense layer of the same active FLOPs); "
          "vs tf = transformers_ms / hepta_ms; by core = hepta with each product over all cores / hepta "
          "(a share of the experts per core where they are small)")
    print("transformers experts implementations tried (median ms of 3 runs; batched_mm is skipped where its "
          "per-token weight copies would need over a quarter of RAM):")
    for r in results:
        impls = ", ".join(f"{k} {'skipped' if v is None else f'{v:.1f}'}" for k, v in r["transformers_impl_ms"].items())
        print(f"  E{r['E']} top{r['K']} F{r['F']} {r['dtype']}: {impls}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(), "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
