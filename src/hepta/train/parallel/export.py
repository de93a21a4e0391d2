"""The whole model on rank 0, gathered from its shards, for writing the plain model folder."""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from hepta.model.transformer import Transformer


def gather_full_model(model: Transformer) -> Transformer | None:
    """A plain Transformer holding the gathered weights on rank 0 (on the CPU); None on the other ranks.

    Collective: every rank calls it. Only rank 0 holds the full weights, one tensor at a time
    on its way to the CPU, so a rank's accelerator never holds the whole model.
    """
    # Experts sharded over two axes gather in two steps, and DTensor logs a warning about it
    # for every tensor; for an export that runs once per checkpoint the extra step costs nothing.
    redistribute_log = logging.getLogger("torch.distributed.tensor._redistribute")
    level = redistribute_log.level
    redistribute_log.setLevel(logging.ERROR)
    try:
        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    finally:
        redistribute_log.setLevel(level)
    if dist.get_rank() != 0:
        return None
    with torch.device("meta"):
        plain = Transformer(model.config)
    plain.load_state_dict(full, assign=True)
    return plain
