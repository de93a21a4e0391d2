"""Training-step throughput: hepta's `tiny` preset vs transformers' OlmoeForCausalLM of the same shape.

    .venv/bin/python benchmarks/train_step.py [--device auto] [--bf16] [--rounds 7] [--json results.json]

One step = forward, cross-entropy loss (+ the load-balancing loss), backward, AdamW step,
zero_grad(set_to_none=True). Both models see the same token batch and use the same optimizer
settings (torch AdamW with foreach=True, as `hepta train` uses it); the steps run interleaved
(hepta, transformers, hepta, ...) so CPU clock drift hits both alike, and each figure is the
median over rounds. Rounds that fall into a stalled phase of the host are redone (see
_timing.py; --no-guard keeps them; on a GPU there is no such guard).

On a CUDA device (`--device auto` finds one) the same steps run there, with --bf16 under bf16 autocast in
both, and the report adds model-FLOPs utilisation: hepta's FLOPs per token (6 x active matmul weights +
attention, hepta.scale.flops) x tokens/s over a matmul's rate measured in the same run, and over the
datasheet's dense bf16 peak where the GPU is known.

Shapes match exactly: OLMoE has no shared experts and no dense first layers, so hepta's
`tiny` runs with num_shared_experts=0 and num_dense_layers=0, a softmax router, the top-k
weights renormalised in both, and the Switch load-balancing loss at the same coefficient
in both (no z-loss, no bias balancing). The preset as shipped (shared expert, dense first
layer, sigmoid router, z-loss) is timed too, for information.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from transformers import OlmoeConfig, OlmoeForCausalLM

import hepta

import _device
from _timing import interleaved, median, wait_until_steady
from hepta.scale.flops import train_flops_per_token

AUX_LOSS_COEF = 0.01
ADAMW = dict(lr=3e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, foreach=True)
TF_IMPLEMENTATIONS = ["eager", "grouped_mm", "batched_mm"]


def hepta_config(as_shipped: bool, preset: str = "tiny") -> hepta.ModelConfig:
    cfg = hepta.get_preset(preset)
    if as_shipped:
        return cfg
    return cfg.with_changes({"moe.num_shared_experts": 0, "moe.num_dense_layers": 0, "router.scoring": "softmax",
                             "router.norm_topk_prob": True, "router.aux_loss_coef": AUX_LOSS_COEF,
                             "router.z_loss_coef": 0.0, "router.bias_update_rate": 0.0})


def olmoe_config(cfg: hepta.ModelConfig, experts_implementation: str) -> OlmoeConfig:
    assert cfg.dim == cfg.attention.num_heads * cfg.attention.head_dim, "OLMoE derives head_dim as hidden_size / heads"
    return OlmoeConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.dim, intermediate_size=cfg.moe.expert_hidden_dim,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.attention.num_heads,
        num_key_value_heads=cfg.attention.num_kv_heads,
        max_position_embeddings=cfg.max_seq_len, rms_norm_eps=cfg.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope.theta},
        num_experts=cfg.moe.num_experts, num_experts_per_tok=cfg.moe.top_k, norm_topk_prob=cfg.router.norm_topk_prob,
        tie_word_embeddings=cfg.tie_embeddings, output_router_logits=True, router_aux_loss_coef=AUX_LOSS_COEF,
        use_cache=False, pad_token_id=None, eos_token_id=None,
        attn_implementation="sdpa", experts_implementation=experts_implementation,
    )


def hepta_loss(model, ids_BT, targets_BT):
    logits = model(ids_BT)
    return F.cross_entropy(logits.flatten(0, 1), targets_BT.flatten()) + model.router_loss()


def olmoe_loss(model, ids_BT, targets_BT):
    out = model(input_ids=ids_BT, use_cache=False)
    return F.cross_entropy(out.logits.flatten(0, 1), targets_BT.flatten()) + AUX_LOSS_COEF * out.aux_loss


def make_step(model, loss_fn, ids_BT, targets_BT, bf16: bool = False):
    opt = torch.optim.AdamW(model.parameters(), **ADAMW)
    device = ids_BT.device

    def step() -> float:
        _device.sync(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model, ids_BT, targets_BT)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _device.sync(device)
        return time.perf_counter() - start
    return step


def batched_mm_fits(cfg: hepta.ModelConfig, num_tokens: int, device: torch.device) -> bool:
    # batched_mm gathers a full expert weight copy per routed token and keeps it for backward.
    need = cfg.num_layers * num_tokens * cfg.moe.top_k * 3 * cfg.dim * cfg.moe.expert_hidden_dim * 4 * 2
    memory = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else \
        os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return need < memory // 4


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (median is reported); at least 5")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-guard", action="store_true", help="keep rounds timed in a stalled phase of the host")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast in both models")
    parser.add_argument("--preset", default="tiny", help="the model's shape (default: tiny; small on a GPU)")
    args = parser.parse_args()
    if args.rounds < 5:
        parser.error("--rounds must be at least 5")
    device = _device.pick(args.device)
    guard = not args.no_guard and device.type == "cpu"  # the host-stall probe judges CPU rounds only

    cfg = hepta_config(as_shipped=False, preset=args.preset)
    num_tokens = args.batch * args.seq
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, cfg.vocab_size, (args.batch, args.seq + 1), generator=gen)
    ids_BT, targets_BT = tokens[:, :-1].contiguous().to(device), tokens[:, 1:].contiguous().to(device)

    torch.manual_seed(0)
    models = {
        "hepta": (hepta.build_model(cfg, seed=0), hepta_loss),
        "transformers": (OlmoeForCausalLM(olmoe_config(cfg, "eager")), olmoe_loss),
        f"hepta ({args.preset} as shipped)": (hepta.build_model(hepta_config(True, args.preset), seed=0), hepta_loss),
    }
    for model, _ in models.values():
        model.to(device)
    sizes = {name: sum(p.numel() for p in m.parameters()) for name, (m, _) in models.items()}
    # Same parameters but for QK-norm: OLMoE normalises over all heads at once, hepta per head.
    qk_norm_extra = cfg.num_layers * (cfg.attention.num_heads + cfg.attention.num_kv_heads - 2) * cfg.attention.head_dim
    assert sizes["hepta"] == sizes["transformers"] - qk_norm_extra, sizes

    # transformers: keep the fastest experts implementation for this shape.
    tf_model = models["transformers"][0]
    impl_ms = {}
    for name in TF_IMPLEMENTATIONS:
        if name == "batched_mm" and not batched_mm_fits(cfg, num_tokens, device):
            impl_ms[name] = None
            continue
        tf_model.set_experts_implementation(name)
        step = make_step(tf_model, olmoe_loss, ids_BT, targets_BT, args.bf16)
        step()
        if guard:
            wait_until_steady(5.0)
        impl_ms[name] = 1e3 * statistics.median(step() for _ in range(3))
    best = min((ms, name) for name, ms in impl_ms.items() if ms is not None)[1]
    tf_model.set_experts_implementation(best)

    steps = {name: make_step(m, loss_fn, ids_BT, targets_BT, args.bf16) for name, (m, loss_fn) in models.items()}
    times, guard_stats = interleaved(steps, args.rounds, args.warmup, guard=guard)
    sec = {name: median(ts) for name, ts in times.items()}
    tps = {name: num_tokens / s for name, s in sec.items()}
    ratio = tps["hepta"] / tps["transformers"]

    precision = "bf16 autocast" if args.bf16 else "fp32"
    print(f"{_device.describe(device)}; batch {args.batch} x {args.seq} tokens, "
          f"{precision}, AdamW {ADAMW}; median of {args.rounds} interleaved rounds after {args.warmup} warmup")
    attn, moe = cfg.attention, cfg.moe
    print(f"shape: vocab {cfg.vocab_size}, d {cfg.dim}, {cfg.num_layers} layers, "
          f"{attn.num_heads}/{attn.num_kv_heads} heads "
          f"of {attn.head_dim}, {moe.num_experts} experts top-{moe.top_k}, expert hidden {moe.expert_hidden_dim}")
    print(f"transformers experts implementation: {best} "
          f"(tried, ms/step: {', '.join(f'{k} ' + ('skipped' if v is None else f'{v:.0f}') for k, v in impl_ms.items())})")
    print(f"{'model':<26}{'params':>10}{'ms/step':>10}{'tokens/s':>11}")
    for name in steps:
        print(f"{name:<26}{sizes[name]:>10,}{1e3 * sec[name]:>10.1f}{tps[name]:>11,.0f}")
    print(f"hepta / transformers tokens/s: {ratio:.2f}x")
    flops = train_flops_per_token(cfg, args.seq) * tps["hepta"]
    peak = _device.matmul_flops_per_s(device, torch.bfloat16 if args.bf16 else torch.float32)
    mfu = {"measured_matmul": flops / peak}
    line = (f"hepta MFU: {flops / 1e12:.3f} TFLOP/s of model FLOPs = {100 * flops / peak:.1f}% of a "
            f"{'bf16' if args.bf16 else 'fp32'} matmul measured here ({peak / 1e12:.1f} TFLOP/s)")
    gpu = _device.datasheet(device)
    if gpu is not None:
        mfu["datasheet_bf16"] = flops / gpu.bf16_flops
        line += f", {100 * flops / gpu.bf16_flops:.2f}% of the {gpu.name}'s dense bf16 peak"
    print(line)
    if guard_stats["redone_rounds"] or guard_stats["unguarded_rounds"]:
        print(f"rounds redone in a stalled phase of the host: {guard_stats['redone_rounds']}; "
              f"kept although stalled (not representative): {guard_stats['unguarded_rounds']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(), "batch": args.batch,
                       "seq": args.seq, "transformers_impl": best, "transformers_impl_ms": impl_ms,
                       "ms_per_step": {k: 1e3 * v for k, v in sec.items()}, "tokens_per_s": tps,
                       "hepta_vs_transformers": ratio, "params": sizes, "device": _device.describe(device),
                       "bf16": args.bf16, "mfu": mfu,
                       "rounds_s": times, **guard_stats}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
