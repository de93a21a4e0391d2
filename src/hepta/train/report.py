"""Training records: the metrics JSONL file and the end-of-run PNG (loss curves, expert load)."""

from __future__ import annotations

import json
from pathlib import Path

from hepta.fileio import atomic_path, atomic_write_text

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "training.png"


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
    return out
