"""Training records: the metrics JSONL file and the end-of-run PNG (loss curves, expert load)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from hepta.fileio import atomic_path, atomic_write_text

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "training.png"
MODALITY_PLOT_FILE = "expert_modality.png"

if TYPE_CHECKING:  # for the annotations; the functions that use numpy import it themselves
    import numpy as np


class MetricsLog:
    """Append-only JSONL; on resume the rows after the resumed step are dropped first, since
    those steps are about to be run again."""

    def __init__(self, run_dir: Path, resume_step: int | None):
        self.path = run_dir / METRICS_FILE
        if resume_step is None:
            atomic_write_text(self.path, "")  # a new run starts a new record
        elif self.path.exists():
            kept = [row for row in read_metrics(run_dir) if row["step"] <= resume_step]
            atomic_write_text(self.path, "".join(json.dumps(row) + "\n" for row in kept))

    def write(self, row: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


def read_metrics(run_dir: Path) -> list[dict]:
    """All complete rows; a last line cut short by a crash is skipped."""
    path = run_dir / METRICS_FILE
    rows = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def plot_run(run_dir: Path) -> Path:
    """Loss curves (train and validation) and the per-layer expert load of the last steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = read_metrics(run_dir)
    train = [r for r in rows if r["kind"] == "train"]
    val = [r for r in rows if r["kind"] == "eval"]
    fig, (ax_loss, ax_load) = plt.subplots(1, 2, figsize=(12, 4.5))
    ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label="train", lw=1)
    if val:
        ax_loss.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="validation")
    ax_loss.set(xlabel="step", ylabel="cross-entropy (nats/token)", title="loss")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)

    recent = [r["expert_load"] for r in train[-20:] if r.get("expert_load")]
    if recent:
        load = np.mean(np.array(recent, dtype=float), axis=0)  # [L_moe, E]
        share = load / load.sum(axis=1, keepdims=True)
        im = ax_load.imshow(share * share.shape[1], aspect="auto", cmap="viridis")
        fig.colorbar(im, ax=ax_load, label="load / uniform load")
        ax_load.set_yticks(range(share.shape[0]))
        ax_load.set_xticks(range(0, share.shape[1], max(1, share.shape[1] // 16)))
        ax_load.set(xlabel="expert", ylabel="MoE layer", title="expert load (last 20 steps)")
    fig.tight_layout()
    out = run_dir / PLOT_FILE
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    if any("expert_load_by_modality" in r for r in train):
        plot_modality_load(run_dir, train)
    return out


def modality_load_shares(train_rows: list[dict], last_fraction: float = 0.2) -> dict[str, "np.ndarray"]:
    """Per modality, each MoE layer's share of that modality's routed tokens per expert [L_moe, E],
    over the last `last_fraction` of the steps."""
    import numpy as np

    rows = [r["expert_load_by_modality"] for r in train_rows if "expert_load_by_modality" in r]
    rows = rows[-max(1, int(len(rows) * last_fraction)):]
    shares = {}
    for modality in rows[0]:
        counts = np.sum([np.array(r[modality], dtype=float) for r in rows], axis=0)
        shares[modality] = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    return shares


def modality_separation(shares: dict[str, "np.ndarray"], modality: str = "image") -> list[float]:
    """Per MoE layer, the total variation distance between the experts text and `modality` tokens
    choose: 0 when both spread over the experts alike, 1 when no expert serves both."""
    return (0.5 * abs(shares[modality] - shares["text"]).sum(axis=1)).tolist()


def plot_modality_load(run_dir: Path, train_rows: list[dict]) -> Path:
    """Heat maps of which experts each modality's tokens choose, per MoE layer, and each non-text
    modality's difference from text."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shares = modality_load_shares(train_rows)
    others = [m for m in shares if m != "text"]
    num_experts = shares["text"].shape[1]
    panels = [(f"{m} tokens", shares[m] * num_experts, "viridis", (0, None)) for m in shares]
    panels += [(f"{m} share - text share", (shares[m] - shares["text"]) * num_experts, "RdBu_r", None) for m in others]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.2 + 0.3 * shares["text"].shape[0]))
    top = max(values.max() for _, values, _, limits in panels if limits is not None)
    for ax, (title, values, cmap, limits) in zip(axes, panels):
        if limits is None:
            bound = max(abs(values.min()), abs(values.max()), 1e-9)
            vmin, vmax = -bound, bound
        else:
            vmin, vmax = 0, top
        im = ax.imshow(values, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax)
        fig.colorbar(im, ax=ax, label="load / uniform load")
        ax.set_yticks(range(values.shape[0]))
        ax.set_xticks(range(0, num_experts, max(1, num_experts // 16)))
        ax.set(xlabel="expert", ylabel="MoE layer", title=title)
    separation = "; ".join(f"text-{m}: " + ", ".join(f"{d:.2f}" for d in modality_separation(shares, m))
                           for m in others)
    fig.suptitle(f"which experts each modality chooses (last 20% of steps); separation per MoE layer "
                 f"(total variation, 0 = same experts, 1 = disjoint): {separation}")
    fig.tight_layout()
    out = run_dir / MODALITY_PLOT_FILE
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out
