"""Batch-1 decode against the memory-bandwidth limit: how close one token's forward comes to reading its weights.

    .venv/bin/python benchmarks/decode.py [--device auto] [--rounds 7] [--tokens 64] [--json results.json]

A 200M-parameter OLMoE-shaped model (8 layers, d 512, 8 heads of 64, 32 experts top-4 of hidden 384, vocabulary
32,768, random weights; --shape tiny for hepta's `tiny`), in fp32 and in bf16. One decode step is what the engine
runs per token: the model's forward of one token through its slot cache, after a 128-token prompt, and the LM
head. Its floor is the active weights' bytes per token (attention, router, the top-k experts, the head: hepta's
own parameter accounting, at the dtype's size; the KV cache read is added) over the read bandwidth measured in
the same run (a sum over a large tensor). Reported per dtype: ms per token, GB/s of weights read, and the fraction
of the limit (target 0.5). On a CPU each dtype runs twice: with the BLAS's matrix-vector products and with
model/matvec.py's row sums ("fp32 rows", "bf16 rows": compiled by TorchInductor into one pass over each weight,
every block of the step one compiled call, model/decode_regions.py), and the lines above the table say which the
engine picks here; `--eager-rows` adds fp32 row sums computed eagerly, as where nothing compiles; `--block-regions`
adds both dtypes' row sums with each block's work before and after the KV cache a compiled call of its own (as for
a model with sliding windows), the ablation of the one call. Rounds alternate the models;
each figure is the median over rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import hepta
from hepta.scale.flops import matmul_params

import _device
from hepta.infer.matvec_choice import choose_matvec
from hepta.model import decode_regions, matvec
from hepta.model.matvec import fused_kernels
from _shapes import SHAPES, shaped

PROMPT = 128


def weight_bytes_per_token(cfg: hepta.ModelConfig, model: torch.nn.Module, context: int) -> int:
    """Active matmul weights (hepta's count) and the KV cache rows one token reads, at the model's dtype."""
    element = model.embed.weight.element_size()
    kv_per_token = sum(torch.Size(shape).numel() for shape in cfg.attention.kv_cache_token_shapes)
    return (matmul_params(cfg) + cfg.num_layers * kv_per_token * context) * element


@contextlib.contextmanager
def eager_row_sums(eager: bool):
    """Row sums computed eagerly within (model/matvec.py's fallback where no kernel compiles)."""
    saved = list(matvec._broken)
    if eager:
        matvec._broken.append("eager row sums asked for")
    try:
        yield
    finally:
        matvec._broken[:] = saved


@contextlib.contextmanager
def block_regions(per_block: bool):
    """Each block's regions a compiled call of its own within, rather than the step's blocks one call."""
    saved = decode_regions.step_applies
    if per_block:
        decode_regions.step_applies = lambda *args: False
    try:
        yield
    finally:
        decode_regions.step_applies = saved


@torch.no_grad()
def decode_seconds(model, device: torch.device, tokens: int) -> float:
    """Median seconds of one decode step over `tokens` steps after a PROMPT-token prefill."""
    cache = model.new_slot_cache(1, PROMPT + tokens + 1)
    prompt = torch.randint(0, model.config.vocab_size, (1, PROMPT), device=device)
    cache.set_window(0, 1, prompt_lengths=torch.tensor([PROMPT]))
    token = model(prompt, cache=cache)[:, -1].argmax(-1, keepdim=True)
    times = []
    for _ in range(tokens):
        _device.sync(device)
        start = time.perf_counter()
        cache.set_window(0, 1)
        token = model(token, cache=cache)[:, -1].argmax(-1, keepdim=True)  # greedy: one argmax a token
        int(token)  # the engine reads each token on the CPU before the next step
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--shape", choices=SHAPES, default="olmoe-200m")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=64, help="decode steps per round")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--eager-rows", action="store_true", help="also fp32 row sums run eagerly, block by block, "
                        "as where TorchInductor cannot compile the products (on a CPU)")
    parser.add_argument("--block-regions", action="store_true", help="also fp32 and bf16 row sums with two compiled "
                        "calls a block, as for a model whose blocks cannot be one call (on a CPU)")
    args = parser.parse_args()
    device = _device.pick(args.device)
    cfg = shaped(args.shape)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    models = {name: hepta.build_model(cfg, seed=0).to(device, dtype).eval() for name, dtype in dtypes.items()}
    eager = set()  # the models whose row sums run eagerly, as where no kernel can be compiled
    if device.type == "cpu":  # matrix-vector products as row sums (model/matvec.py), beside the BLAS's
        for name, dtype in dtypes.items():
            choice = choose_matvec(models[name])  # what an engine would pick for this model here
            models[name].use_row_sum_matvec(False)  # this row is the BLAS's, one row at a time
            models[name].use_packed_linear(False)
            product = "row sums" if choice.row_sum else "the BLAS"
            print(f"{name}: an engine would decode with {product}: {choice.reason}")
        rows = {"fp32 rows": torch.float32, "bf16 rows": torch.bfloat16} if fused_kernels() else {}
        if args.eager_rows or not fused_kernels():
            rows["fp32 eager rows"] = torch.float32
            eager.add("fp32 eager rows")
        if args.block_regions and fused_kernels():
            rows.update({"fp32 block rows": torch.float32, "bf16 block rows": torch.bfloat16})
        for name, dtype in rows.items():
            models[name] = hepta.build_model(cfg, seed=0).to(dtype).eval()
            models[name].use_row_sum_matvec(True)
    context = PROMPT + args.tokens // 2  # the mean context over a round's steps
    bytes_per_token = {name: weight_bytes_per_token(cfg, m, context) for name, m in models.items()}
    def timed(name: str, tokens: int) -> float:
        with eager_row_sums(name in eager), block_regions("block" in name):
            return decode_seconds(models[name], device, tokens)

    for name in models:  # warm-up: allocations, kernels chosen and compiled
        timed(name, 8)
    rounds = {name: [] for name in models}
    read = []
    for _ in range(args.rounds):
        read.append(_device.read_bytes_per_s(device))
        for name in models:
            rounds[name].append(timed(name, args.tokens))
    read_bw = statistics.median(read)
    print(f"{_device.describe(device)}; shape {args.shape}: {cfg.num_layers} layers, d {cfg.dim}, "
          f"{cfg.moe.num_experts} experts top-{cfg.moe.top_k} of {cfg.moe.expert_hidden_dim}, vocab {cfg.vocab_size}; "
          f"{matmul_params(cfg) / 1e6:.1f}M active matmul weights of {hepta.count_params(cfg).total / 1e6:.0f}M")
    print(f"read bandwidth (sum over {'1 GiB' if device.type == 'cuda' else '256 MiB'}), median of "
          f"{args.rounds}: {read_bw / 1e9:.1f} GB/s; copy: {_device.copy_bytes_per_s(device) / 1e9:.1f} GB/s")
    gpu = _device.datasheet(device)
    if gpu is not None:
        print(f"datasheet ({gpu.name}): {gpu.hbm_bytes_per_s / 1e12:.2f} TB/s")
    result = {"device": _device.describe(device), "shape": args.shape, "read_bytes_per_s": read_bw, "dtypes": {}}
    print(f"{'dtype':16}{'MB/token':>10}{'limit ms':>10}{'ms/token':>10}{'tokens/s':>10}{'GB/s':>8}{'of limit':>10}")
    for name in models:
        seconds = statistics.median(rounds[name])
        limit = bytes_per_token[name] / read_bw
        fraction = limit / seconds
        print(f"{name:16}{bytes_per_token[name] / 1e6:10.1f}{limit * 1e3:10.2f}{seconds * 1e3:10.2f}{1 / seconds:10.0f}"
              f"{bytes_per_token[name] / seconds / 1e9:8.1f}{fraction:10.2f}   (target >= 0.5: "
              f"{'met' if fraction >= 0.5 else 'MISSED'})")
        result["dtypes"][name] = {"bytes_per_token": bytes_per_token[name], "seconds_per_token": seconds,
                                  "limit_seconds": limit, "fraction_of_limit": fraction, "rounds_s": rounds[name]}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
