"""What the image and audio tokenizers share: their folder (`config.json` + `model.safetensors`)
and the learning-rate schedule they train with."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from hepta.errors import HeptaError
from hepta.fileio import atomic_path, atomic_write_text

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

Module = TypeVar("Module", bound=nn.Module)


def save_tokenizer(tokenizer: nn.Module, config, folder: str | Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file({k: v.detach().contiguous() for k, v in tokenizer.state_dict().items()}, str(tmp))
    atomic_write_text(folder / CONFIG_FILE, json.dumps(asdict(config), indent=2) + "\n")


def load_tokenizer(cls: type[Module], config_cls: type, folder: str | Path, kind: str) -> Module:
    """`cls(config)` with its weights from `folder`, in eval mode; `kind` ("image", "audio") names it in errors."""
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not config_path.is_file() or not weights_path.is_file():
        raise HeptaError(f"{folder} is not an {kind} tokenizer folder (it needs {CONFIG_FILE} and {WEIGHTS_FILE}); "
                         f"train one with `hepta tokenizer train {kind} --out DIR`")
    try:
        config = config_cls(**json.loads(config_path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise HeptaError(f"{config_path} is not a valid {kind} tokenizer configuration ({e}); retrain it") from e
    tokenizer = cls(config)
    try:
        tokenizer.load_state_dict(load_file(str(weights_path)))
    except (SafetensorError, RuntimeError) as e:
        raise HeptaError(f"{weights_path} does not hold this {kind} tokenizer's weights ({e}); retrain it") from e
    return tokenizer.eval()


def set_cosine_lr(optimizer: torch.optim.Optimizer, lr: float, step: int, steps: int) -> None:
    """Cosine from `lr` to zero over `steps`: the codes settle at the end."""
    for group in optimizer.param_groups:
        group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
