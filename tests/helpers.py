"""Shared test fixtures: a small real-text corpus and a micro model configuration."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

# A model small enough that a training step takes milliseconds on one core.
MICRO = {
    "vocab_size": 512, "num_layers": 2, "dim": 64, "num_heads": 2, "num_kv_heads": 1, "head_dim": 32,
    "num_experts": 4, "top_k": 2, "expert_hidden_dim": 32, "num_dense_layers": 1, "dense_hidden_dim": 64,
    "max_seq_len": 128,
}


def micro_overrides() -> dict:
    return dict(MICRO)


def micro_set_flags() -> list[str]:
    return [arg for k, v in MICRO.items() for arg in ("--set", f"{k}={v}")]


def make_corpus(folder: Path) -> Path:
    """A few hundred KB of real text: the json and email packages of the standard library."""
    folder.mkdir(parents=True, exist_ok=True)
    root = Path(sysconfig.get_paths()["stdlib"])
    for f in sorted((root / "json").glob("*.py")) + sorted((root / "email").glob("*.py"))[:10]:
        shutil.copy(f, folder / f"{f.parent.name}_{f.name}")
    return folder


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hepta", *args], capture_output=True, text=True, timeout=timeout)
