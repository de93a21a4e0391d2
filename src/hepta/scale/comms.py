"""Bytes each GPU sends per optimizer step, and the time the links need for them.

GPUs are numbered with tensor parallelism innermost, then the expert-parallel ranks, so an
EP group spans ep x tp consecutive GPUs: the part inside one NVLink domain travels over
NVLink, the rest over the scale-out network, each at its per-direction bandwidth. Times are
what the links need if nothing else uses them; a well-overlapped step hides them behind
compute, which is why they are reported next to the compute time rather than added to it.
"""

from __future__ import annotations

from dataclasses import dataclass

from hepta.config import ModelConfig
from hepta.scale.gpus import GPU
from hepta.scale.memory import (BF16, FP32, Layout, fsdp_units, root_params, stage_layers, stage_owned_params,
                                tp_local_config)


@dataclass(frozen=True)
class StepComms:
    all_to_all_bytes: float  # token dispatch and combine of the routed copies
    all_to_all_seconds: float
    fsdp_bytes: float  # parameter all-gathers, gradient reduce-scatters, cross-replica all-reduce
    fsdp_seconds: float

    def as_dict(self) -> dict:
        return {"all_to_all_bytes": self.all_to_all_bytes, "all_to_all_s": self.all_to_all_seconds,
                "fsdp_bytes": self.fsdp_bytes, "fsdp_s": self.fsdp_seconds}


def ep_link_seconds(nbytes: float, layout: Layout, gpu: GPU) -> float:
    """Time to send `nbytes`, spread evenly over the other EP ranks, from one GPU."""
    if layout.ep == 1:
        return 0.0
    same_domain = max(1, min(layout.ep, gpu.nvlink_domain // layout.tp)) - 1
    remote = layout.ep - 1 - same_domain
    per_peer = nbytes / (layout.ep - 1)
    return max(per_peer * same_domain / gpu.nvlink_bytes_per_s, per_peer * remote / gpu.network_bytes_per_s)


def group_link_bytes_per_s(group: int, layout: Layout, gpu: GPU) -> float:
    """The slowest link of a ring over `group` ranks spaced tp GPUs apart: NVLink while they share a domain."""
    return gpu.nvlink_bytes_per_s if group * layout.tp <= gpu.nvlink_domain else gpu.network_bytes_per_s


def step_comms(cfg: ModelConfig, layout: Layout, gpu: GPU, tokens_per_microbatch: int, microbatches: int,
               checkpointing: bool) -> StepComms:
    local = tp_local_config(cfg, layout.tp)
    layers = stage_layers(local, layout.pp)[0]
    moe_layers = sum(local.is_moe_layer(layer) for layer in layers)
    # Each routed copy goes to its expert and comes back (2 transfers of D bf16 values), in the
    # forward, again in the backward (gradients), and once more when checkpointing recomputes.
    passes = 3 if checkpointing else 2
    leaving = (layout.ep - 1) / layout.ep
    routed = tokens_per_microbatch * microbatches * local.moe.top_k / layout.tp  # the TP ranks split the copies
    a2a = routed * moe_layers * 2 * BF16 * local.dim * passes * leaving if local.has_moe else 0.0

    # FSDP: every micro-batch all-gathers each unit twice (forward, backward) in bf16 and
    # reduce-scatters its gradient in fp32; each step all-reduces the fp32 shard across replicas.
    unsharded = sum(fsdp_units(local, layers, layout.ep)) + root_params(local)  # this rank's experts only
    shard_fraction = (layout.fsdp - 1) / layout.fsdp
    in_group = microbatches * unsharded * (2 * BF16 + FP32) * shard_fraction
    replica_fraction = (layout.dp_replicate - 1) / layout.dp_replicate
    across = 2 * FP32 * stage_owned_params(local, layout, 0) * replica_fraction
    seconds = (in_group / group_link_bytes_per_s(layout.fsdp, layout, gpu)
               + across / group_link_bytes_per_s(layout.dp, layout, gpu))
    return StepComms(a2a, ep_link_seconds(a2a, layout, gpu), in_group + across, seconds)
