"""Attention through the flash kernel in the dry run, as on GPUs.

Fake tensors live on the CPU, where `scaled_dot_product_attention` takes the math path (an
S x S score matrix stored per head) whenever the CPU flash kernel cannot run, as for MLA's
values narrower than its queries and keys; GPU flash kernels keep only the output and the
log-sum-exp. Inside `flash_attention()` every call is routed to the flash kernel, padding
narrower values with zeros to the query width first (as MLA users of FlashAttention-2 do) and
cutting the output back.

A function mode would be the natural scope, but activation checkpointing recomputes blocks
inside backward, where function modes are not active. So the function itself is replaced,
and only while some dry run is inside `flash_attention()`; the replacement takes the flash
path only in the context (thread or task) that entered, and is the untouched function for
every other caller. On the way out the original is put back.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from contextvars import ContextVar

import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

_REAL_SDPA = F.scaled_dot_product_attention
_inside = ContextVar("hepta_dry_run_flash_attention", default=False)
_install_lock = threading.Lock()
_installed_count = 0  # dry runs inside flash_attention() now, in any thread


def padded_flash(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """`scaled_dot_product_attention` on the flash kernel, values padded to the query width."""
    width = v.shape[-1]
    if width < q.shape[-1]:
        v = F.pad(v, (0, q.shape[-1] - width))
    scale = q.shape[-1] ** -0.5 if scale is None else scale  # the default follows the query width
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        out = _REAL_SDPA(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
                         enable_gqa=enable_gqa)
    return out[..., :width]


def _routed_sdpa(*args, **kwargs):
    return (padded_flash if _inside.get() else _REAL_SDPA)(*args, **kwargs)


@contextmanager
def flash_attention():
    global _installed_count
    with _install_lock:
        if _installed_count == 0:
            F.scaled_dot_product_attention = _routed_sdpa
        _installed_count += 1
    token = _inside.set(True)
    try:
        yield
    finally:
        _inside.reset(token)
        with _install_lock:
            _installed_count -= 1
            if _installed_count == 0:
                F.scaled_dot_product_attention = _REAL_SDPA
