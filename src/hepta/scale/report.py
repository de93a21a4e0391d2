"""Rich tables of a plan for `hepta plan`."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from hepta.param_table import human
from hepta.scale.planner import Plan

GB = 1e9


def _gb(n: float) -> str:
    return f"{n / GB:,.1f} GB"


def _seconds(s: float) -> str:
    return f"{s:,.1f} s" if s >= 1 else f"{s * 1e3:,.1f} ms"


def print_plan(plan: Plan, dry_run: dict | None = None, console: Console | None = None) -> None:
    console = console or Console()
    req, layout = plan.request, plan.fit.layout
    console.print(f"[bold]{req.name}[/] ({human(plan.total_params)} parameters, {human(plan.active_params)} active) "
                  f"on {req.gpus:,} {req.gpu.name.upper()}s, {req.tokens:.3g} tokens of {req.sequence_length}, "
                  f"MFU {req.mfu:.0%}")
    console.print(f"layout: {layout.describe()}; activation checkpointing "
                  f"{'on' if plan.fit.checkpointing else 'off'}")

    memory = Table(title=f"memory per GPU (busiest stage; {req.gpu.name.upper()} has {_gb(req.gpu.hbm_bytes)})")
    memory.add_column("component")
    memory.add_column("no checkpointing", justify="right")
    memory.add_column("checkpointing", justify="right")
    plain, ckpt = plan.memory_without_ac.as_dict(), plan.memory_with_ac.as_dict()
    for key in plain:
        memory.add_row(key, _gb(plain[key]), _gb(ckpt[key]))
    console.print(memory)

    run = Table(title="training")
    run.add_column("quantity")
    run.add_column("value", justify="right")
    rows = [
        ("FLOPs per token (train / inference)",
         f"{plan.train_flops_per_token:.3g} / {plan.inference_flops_per_token:.3g}"),
        ("global batch", f"{plan.global_batch_tokens:,} tokens ({plan.microbatches} micro-batch(es) per rank)"),
        ("optimizer steps", f"{plan.steps:,.0f}"),
        ("step time (compute at MFU)", _seconds(plan.step_seconds)),
        ("all-to-all per GPU per step",
         f"{_gb(plan.comms.all_to_all_bytes)} in {_seconds(plan.comms.all_to_all_seconds)}"),
        ("FSDP traffic per GPU per step", f"{_gb(plan.comms.fsdp_bytes)} in {_seconds(plan.comms.fsdp_seconds)}"),
        ("training time", f"{plan.train_days:,.1f} days ({plan.gpu_hours / 1e6:,.2f}M GPU-hours)"),
        (f"power (boards x PUE {plan.energy.pue})", f"{plan.energy.avg_power_mw:,.1f} MW"),
        ("energy", f"{plan.energy.energy_mwh:,.0f} MWh"),
        ("with servers (DGX max power)", f"{plan.energy.avg_power_mw_with_hosts:,.1f} MW, "
                                          f"{plan.energy.energy_mwh_with_hosts:,.0f} MWh"),
    ]
    if layout.pp > 1:
        rows.insert(3, ("pipeline bubble (1F1B)", f"{plan.pipeline_bubble:.0%}"))
    for name, value in rows:
        run.add_row(name, value)
    console.print(run)

    inf = plan.inference
    serve = Table(title="inference (bf16 weights and KV cache)")
    serve.add_column("quantity")
    serve.add_column("value", justify="right")
    serve.add_row("GPUs to hold the weights", f"{inf.gpus_for_weights} ({_gb(inf.weight_bytes)}); replica "
                                              f"{inf.replica_gpus} GPUs")
    serve.add_row("KV cache per 1k tokens", f"{inf.kv_bytes_per_1k_tokens / 2**20:,.1f} MiB")
    serve.add_row(f"decode tokens/s per replica, context {inf.context}",
                  f"{inf.decode_tokens_per_s_batch1:,.0f} (batch 1), {inf.decode_tokens_per_s_batch:,.0f} "
                  f"(batch {inf.decode_batch})")
    console.print(serve)
    if dry_run:
        check = Table(title=f"dry run: {dry_run['ranks']:,} fake ranks, {dry_run['note']}")
        check.add_column("per rank")
        check.add_column("analytic", justify="right")
        check.add_column("measured", justify="right")
        check.add_column("ratio", justify="right")
        for key in dry_run["measured"]:
            a, m = dry_run["analytic"][key], dry_run["measured"][key]
            check.add_row(key, _gb(a), _gb(m), f"{m / a:.3f}")
        console.print(check)
        if dry_run["uneven_shards"]:
            console.print(f"warning: rank 0 holds far more than an even share of {len(dry_run['uneven_shards'])} "
                          f"parameter(s), e.g. {dry_run['uneven_shards'][0]}")
    if plan.global_batch_tokens > 64e6:
        console.print(f"note: a global batch of {plan.global_batch_tokens / 1e6:,.0f}M tokens is far above published "
                      "pretraining batches (16-64M); cap it with --batch-tokens to trade data parallelism for "
                      "model parallelism.")
