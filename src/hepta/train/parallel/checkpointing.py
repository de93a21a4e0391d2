"""Activation checkpointing: each block keeps only its input and recomputes the rest in backward.

The MoE layer records observations as a side effect of its forward (the expert load of the
last forward, the load accumulated for balancing, the router losses); a recomputation must not
record them a second time, so it runs between a snapshot and a restore of that state.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager, nullcontext

import torch
from torch.utils.checkpoint import checkpoint

from hepta.model.moe import MoE
from hepta.model.transformer import Transformer


@contextmanager
def _moe_state_kept(moe: MoE | None):
    if moe is None:
        yield
        return
    last_load, since_update, router_losses = moe.last_load.clone(), moe.load_since_update.clone(), moe.router_losses
    try:
        yield
    finally:
        with torch.no_grad():
            moe.last_load.copy_(last_load)
            moe.load_since_update.copy_(since_update)
        moe.router_losses = router_losses


def _contexts(moe: MoE | None):
    """The forward runs as usual; the recomputation keeps the MoE layer's recorded state."""
    return nullcontext(), _moe_state_kept(moe)


def apply_activation_checkpointing(model: Transformer) -> None:
    """Wrap every block's forward in non-reentrant checkpointing (before FSDP, as FSDP2 expects)."""
    for block in model.layers:
        moe = block.ffn if isinstance(block.ffn, MoE) else None
        block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False,
                                          context_fn=functools.partial(_contexts, moe))
