"""Attention through the flash kernel in the dry run, as on GPUs.

Fake tensors live on the CPU, where `scaled_dot_product_attention` takes the math path (an
S x S score matrix stored per head) whenever the CPU flash kernel cannot run, as for MLA's
values narrower than its queries and keys; GPU flash kernels keep only the output and the
log-sum-exp. For the length of the dry run's step, `flash_attention()` routes every call to
the flash kernel, padding narrower values with zeros to the query width first (as MLA users
of FlashAttention-2 do) and cutting the output back. It replaces the function itself rather
than pushing a mode because activation checkpointing recomputes blocks inside backward, where
function modes are not active.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


@contextmanager
def flash_attention():
    original = F.scaled_dot_product_attention

    def padded_flash(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        width = v.shape[-1]
        if width < q.shape[-1]:
            v = F.pad(v, (0, q.shape[-1] - width))
        scale = q.shape[-1] ** -0.5 if scale is None else scale  # the default follows the query width
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            out = original(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
                           enable_gqa=enable_gqa)
        return out[..., :width]

    F.scaled_dot_product_attention = padded_flash
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original
