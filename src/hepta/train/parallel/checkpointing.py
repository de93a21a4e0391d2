"""Activation checkpointing: each block keeps only its input and recomputes the rest in backward.

The MoE layer records observations as a side effect of its forward (the expert load of the
last forward, the load accumulated for balancing, the router loss); a recomputation must not
record them a second time, so it runs between a snapshot and a restore of that state.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager, nullcontext

import torch
from torch.utils.checkpoint import checkpoint

from hepta.model.moe import MoE
from hepta.model.transformer import Block, Transformer


@contextmanager
def _moe_state_kept(moe: MoE | None):
    if moe is None:
        yield
        return
    last_load, since_update, router_loss = moe.last_load.clone(), moe.load_since_update.clone(), moe.router_loss
    try:
        yield
    finally:
        with torch.no_grad():
            moe.last_load.copy_(last_load)
            moe.load_since_update.copy_(since_update)
        moe.router_loss = router_loss


def apply_activation_checkpointing(model: Transformer) -> None:
    """Wrap every block's forward in non-reentrant checkpointing (before FSDP, as FSDP2 expects)."""
    for block in model.layers:
        moe = block.ffn if isinstance(block.ffn, MoE) else None
        inner = block.forward
        context = functools.partial(lambda m: (nullcontext(), _moe_state_kept(m)), moe)

        def forward(*args, _inner=inner, _context=context, **kwargs):
            return checkpoint(_inner, *args, use_reentrant=False, context_fn=_context, **kwargs)

        block.forward = forward
        assert isinstance(block, Block)
