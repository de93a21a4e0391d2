"""Accelerator specifications the planner computes with, as data, each with its source.

Conventions: FLOP/s are dense bf16 tensor-core peaks (vendors quote "with sparsity" figures
at twice these); memory sizes are the vendors' decimal gigabytes (slightly less than what
`nvidia-smi` reports, so plans err on the safe side); link bandwidths are per GPU and per
direction (NVLink is marketed as the sum of both directions, so half the marketed figure);
the network is the scale-out NIC per GPU (one 400 Gb/s ConnectX-7 per GPU = 50 GB/s).
`system_watts_per_gpu` is the whole server's maximum power divided by its GPUs (CPUs, NICs,
fans, storage included); planners that only count board power understate the bill.
"""

from __future__ import annotations

from dataclasses import dataclass

from hepta.errors import HeptaError

GB = 1e9
TB = 1e12


@dataclass(frozen=True)
class GPU:
    name: str
    bf16_flops: float  # dense peak, FLOP/s
    hbm_bytes: float
    hbm_bytes_per_s: float
    nvlink_bytes_per_s: float  # per GPU, one direction
    nvlink_domain: int  # GPUs that reach each other over NVLink (one HGX/DGX board)
    network_bytes_per_s: float  # scale-out per GPU, one direction
    board_watts: float  # maximum board power (TDP)
    system_watts_per_gpu: float  # server maximum power / GPUs per server
    source: str


GPUS: dict[str, GPU] = {g.name: g for g in (
    GPU("h100", bf16_flops=989.4e12, hbm_bytes=80 * GB, hbm_bytes_per_s=3.35 * TB,
        nvlink_bytes_per_s=450 * GB, nvlink_domain=8, network_bytes_per_s=50 * GB,
        board_watts=700, system_watts_per_gpu=10_200 / 8,
        source="NVIDIA H100 Tensor Core GPU datasheet (SXM5: BF16 1,979 TFLOPS with sparsity, 80 GB HBM3, "
               "3.35 TB/s, NVLink 900 GB/s, up to 700 W); NVIDIA DGX H100 datasheet (8 GPUs, "
               "8x ConnectX-7 400 Gb/s, 10.2 kW max)"),
    GPU("h200", bf16_flops=989.4e12, hbm_bytes=141 * GB, hbm_bytes_per_s=4.8 * TB,
        nvlink_bytes_per_s=450 * GB, nvlink_domain=8, network_bytes_per_s=50 * GB,
        board_watts=700, system_watts_per_gpu=10_200 / 8,
        source="NVIDIA H200 Tensor Core GPU datasheet (SXM: BF16 1,979 TFLOPS with sparsity, 141 GB HBM3e, "
               "4.8 TB/s, NVLink 900 GB/s, up to 700 W); NVIDIA DGX H200 datasheet (8 GPUs, "
               "8x ConnectX-7 400 Gb/s, ~10.2 kW max)"),
    GPU("b200", bf16_flops=2.25e15, hbm_bytes=180 * GB, hbm_bytes_per_s=8 * TB,
        nvlink_bytes_per_s=900 * GB, nvlink_domain=8, network_bytes_per_s=50 * GB,
        board_watts=1000, system_watts_per_gpu=14_300 / 8,
        source="NVIDIA HGX B200 / DGX B200 datasheets (8 GPUs: FP16/BF16 36 PFLOPS with sparsity, 1,440 GB "
               "HBM3e, 64 TB/s, NVLink 5 1.8 TB/s per GPU, 1,000 W per GPU, 8x ConnectX-7 400 Gb/s, 14.3 kW max)"),
    GPU("h800", bf16_flops=989.4e12, hbm_bytes=80 * GB, hbm_bytes_per_s=3.35 * TB,
        nvlink_bytes_per_s=200 * GB, nvlink_domain=8, network_bytes_per_s=50 * GB,
        board_watts=700, system_watts_per_gpu=10_200 / 8,
        source="NVIDIA H800 SXM5: the H100 SXM5 die and memory with NVLink cut to 400 GB/s; DeepSeek-V3 "
               "Technical Report (arXiv:2412.19437) sec. 3.1: H800 nodes, 8 GPUs on NVLink/NVSwitch, "
               "400 Gb/s InfiniBand (50 GB/s) per GPU"),
)}


def get_gpu(name: str) -> GPU:
    if name.lower() not in GPUS:
        raise HeptaError(f"unknown GPU {name!r}; choose one of: {', '.join(GPUS)}")
    return GPUS[name.lower()]
