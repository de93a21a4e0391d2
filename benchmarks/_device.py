"""The device a benchmark runs on, timing that waits for it, and the machine's ceilings measured in the same run.

Every benchmark takes `--device` as hepta's commands do (auto: the first CUDA GPU, else the CPU). On a GPU,
kernels run asynchronously, so a timed region ends with `sync`. The ceilings that MFU and bandwidth figures
are taken against are measured here, in the same process as the work they judge (a square matmul for FLOP/s, a
large copy for bytes/s), and printed beside the datasheet's where the GPU is one hepta's planner knows.
"""

from __future__ import annotations

import statistics
import time

import torch

from hepta.devices import resolve_device
from hepta.scale.gpus import GPUS


def pick(name: str) -> torch.device:
    device = resolve_device(name)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 on both sides of a comparison
    return device


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    return f"CPU, {torch.get_num_threads()} threads (torch {torch.__version__})"


def datasheet(device: torch.device):
    """hepta's planner's entry for this GPU (its dense bf16 peak and memory bandwidth), or None."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device).lower()
    return next((gpu for key, gpu in GPUS.items() if key in name.split()), None)


def _median_seconds(fn, device: torch.device, repeats: int) -> float:
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_flops_per_s(device: torch.device, dtype: torch.dtype) -> float:
    """A square matmul's rate in this dtype: the ceiling MFU is taken against (8192 on a GPU, 1024 on a CPU)."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n ** 3 / _median_seconds(lambda: a @ b, device, 10 if device.type == "cuda" else 5)


def _big(device: torch.device) -> torch.Tensor:
    """1 GiB on a GPU, well past its L2; 256 MiB on a CPU, well past its caches."""
    return torch.ones((2**30 if device.type == "cuda" else 2**28) // 4, device=device)


def read_bytes_per_s(device: torch.device) -> float:
    """Bytes read per second by a sum over a large tensor: each byte read once, nothing written, as a decode
    step reads its weights. The ceiling a decode step's weight bytes are taken against."""
    src = _big(device)
    return src.numel() * 4 / _median_seconds(lambda: src.sum(), device, 10)


def copy_bytes_per_s(device: torch.device) -> float:
    """Bytes copied per second by a large copy (each read once and written once), for comparison."""
    src = _big(device)
    dst = torch.empty_like(src)
    return src.numel() * 4 / _median_seconds(lambda: dst.copy_(src), device, 10)
