"""Where a command runs its model: `--device` and `--dtype` as users give them, checked once.

`auto` takes the first CUDA GPU that torch sees, else the CPU, so the same command line trains or serves on a
laptop and on a GPU node. Every other path of hepta takes the device of the model's weights from there.
torch is imported inside the functions: the command-line parser adds these options without loading it.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from hepta.errors import HeptaError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
DTYPE_NAMES = ("float32", "bfloat16", "float16")


def add_device_arguments(parser: argparse.ArgumentParser, dtype: bool = True) -> None:
    """`--device` (and `--dtype`) with the same meaning in every command that runs a model."""
    parser.add_argument("--device", default="auto", help=f"{DEVICE_CHOICES} (default: auto, the first CUDA GPU "
                        "torch sees, else the CPU)")
    if dtype:
        parser.add_argument("--dtype", default="auto", choices=("auto", *DTYPE_NAMES),
                            help="the weights' dtype (default: auto, as the folder stores them)")


def resolve_device(name: str = "auto") -> "torch.device":
    """The torch device `name` stands for, or a HeptaError naming what is missing and what to pass instead."""
    import torch

    if name == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise HeptaError(f"--device {name} is not a device; pass {DEVICE_CHOICES}") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise HeptaError(f"--device {name}: hepta runs on CPUs and CUDA GPUs; pass {DEVICE_CHOICES}")
    if not torch.cuda.is_available():
        build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", a CPU-only build")
        raise HeptaError(f"--device {name}, but torch sees no CUDA GPU ({build}); pass --device cpu, or install "
                         "a CUDA build of torch on a machine with an NVIDIA GPU")
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise HeptaError(f"--device {name}, but torch sees {torch.cuda.device_count()} CUDA GPU(s), numbered from 0")
    return torch.device("cuda", index)


def resolve_dtype(name: str | None) -> "torch.dtype | None":
    """The weights' dtype `--dtype` names; None (or "auto") keeps what the folder stores."""
    import torch

    if name in (None, "auto"):
        return None
    if name not in DTYPE_NAMES:
        raise HeptaError(f"--dtype {name} is not supported; pass auto, {', '.join(DTYPE_NAMES)}")
    return getattr(torch, name)
