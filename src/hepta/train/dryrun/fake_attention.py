"""Attention through the flash kernel in the dry run, as on GPUs.

Fake tensors live on the CPU, where `scaled_dot_product_attention` takes the math path (an
S x S score matrix stored per head) whenever the CPU flash kernel cannot run, as for MLA's
values narrower than its queries and keys; GPU flash kernels keep only the output and the
log-sum-exp. `use_flash_attention(model)` sets `padded_flash` as the attention kernel of the
model's attention modules: it takes the flash kernel, padding narrower values with zeros to the
query width first (as MLA users of FlashAttention-2 do) and cutting the output back.

The kernel is an attribute of each module, so activation checkpointing's recomputation inside
backward uses it too, and no other model (nor torch's own function) is touched.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from hepta.model.attention import Attention
from hepta.model.mla import MultiHeadLatentAttention


def padded_flash(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """`scaled_dot_product_attention` on the flash kernel, values padded to the query width."""
    width = v.shape[-1]
    if width < q.shape[-1]:
        v = F.pad(v, (0, q.shape[-1] - width))
    scale = q.shape[-1] ** -0.5 if scale is None else scale  # the default follows the query width
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p,
                                             is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)
    return out[..., :width]


def use_flash_attention(model: nn.Module) -> None:
    """Set the padded flash kernel as the attention kernel of every attention module of `model`."""
    for module in model.modules():
        if isinstance(module, (Attention, MultiHeadLatentAttention)):
            module.attention_kernel = padded_flash
