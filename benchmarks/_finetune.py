"""What the fine-tuning probes (video_finetune.py, speech_finetune.py) share: the model folder's
copy, the learning-rate schedule and one optimiser step on a batch of conversations."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch

from hepta.checkpoint import CONFIG_FILE
from hepta.train.conversations import IGNORE, conversation_loss

WARMUP_STEPS = 20


def copy_model(model: Path, out: Path, context: int = 0) -> None:
    """The folder copied to `out` without its training state; its context raised to `context` where shorter."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(model, out, ignore=shutil.ignore_patterns("train_state", "metrics.jsonl", "*.png"))
    config = json.loads((out / CONFIG_FILE).read_text())
    config["max_seq_len"] = max(config.get("max_seq_len", 0), context)
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")


def adamw(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1, betas=(0.9, 0.95))


def train_step(model, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               lr: float, step: int, steps: int) -> float:
    """One step on inputs and answer targets [B, T] (warm-up, then cosine to a tenth of `lr`); the loss."""
    warm = min(1.0, (step + 1) / WARMUP_STEPS)
    for group in optimizer.param_groups:
        group["lr"] = lr * warm * (0.1 + 0.45 * (1 + math.cos(math.pi * step / steps)))
    loss = conversation_loss(model(x, logits_at_BT=y != IGNORE), y) + model.router_loss()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    model.update_expert_bias()
    return loss.item()
