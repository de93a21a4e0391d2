"""PNG chart of a plan: memory per GPU by component (with and without activation checkpointing)
and training days against GPU count at the same MFU."""

from __future__ import annotations

from pathlib import Path

from hepta.scale.planner import Plan, days_for

COMPONENTS = ("parameters", "gradients", "optimizer", "gathered", "activations")


def plot_plan(plan: Plan, path: str | Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    req = plan.request
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    bars = {"no checkpointing": plan.memory_without_ac.as_dict(), "checkpointing": plan.memory_with_ac.as_dict()}
    bottoms = [0.0, 0.0]
    for component in COMPONENTS:
        values = [bars[k][component] / 1e9 for k in bars]
        left.bar(list(bars), values, bottom=bottoms, label=component)
        bottoms = [b + v for b, v in zip(bottoms, values)]
    left.axhline(req.gpu.hbm_bytes / 1e9, color="black", linestyle="--", linewidth=1,
                 label=f"{req.gpu.name.upper()} HBM")
    left.set_ylabel("GB per GPU")
    # linear, cut at twice the HBM: runs that do not fit are labelled with their total instead
    top = 2 * req.gpu.hbm_bytes / 1e9
    left.set_ylim(0, top)
    for x, total in enumerate(bottoms):
        if total > top:
            left.text(x, top * 0.97, f"{total:,.0f} GB", ha="center", va="top", fontsize=8, color="white")
    left.set_title(f"{req.name}: memory per GPU ({plan.fit.layout.describe().split(' (')[0]})", fontsize=9)
    left.legend(fontsize=7)

    counts = [max(1, int(req.gpus * 2 ** k)) for k in range(-4, 4)]
    right.plot(counts, [days_for(req, n, plan.pipeline_bubble) for n in counts], marker="o")
    right.scatter([req.gpus], [plan.train_days], color="red", zorder=3, label=f"{req.gpus:,} GPUs")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel(f"{req.gpu.name.upper()} GPUs")
    right.set_ylabel("training days")
    right.set_title(f"{req.tokens:.3g} tokens at {req.mfu:.0%} MFU", fontsize=9)
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
