"""Decoding a token of each sequence on a CPU as two compiled regions a block, around the KV cache.

A decode step of a small MoE model is hundreds of small operators, each a dispatch and a thread fork/join, and
the compiled row sums of model/matvec.py are each a call of their own on top. TorchInductor compiles what comes
before the cache (the norm, the QKV projections, QK-norm, rotary) into one call and what comes after it (the
output projection, the residual, the norm, the router and the chosen experts, the residual) into another, with
every matrix-vector product a one-pass row sum. The cache update and the attention over it stay eager: they
move with the slots. Compiled over the module (its parameters are the graph's inputs), one graph serves every
block of the same structure. A batch of sequences decoding takes the same regions with its batch dimension
dynamic (one graph for any number of sequences from 2): its projections are matmuls, and its experts row sums
over the routed copies (`GroupedExperts.few_tokens`), so nothing in either region waits on the host.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from hepta.model.attention import Attention
from hepta.model.cache import SlotCache
from hepta.model.matvec import Linear, compiling, give_up_compiling
from hepta.model.moe import MoE


def _before_cache(block: nn.Module, x_BTD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    return block.attn.project(block.attn_norm(x_BTD), cos, sin)


def _after_cache(block: nn.Module, x_BTD: torch.Tensor, out_BTHDh: torch.Tensor, gate_BTHDh: torch.Tensor | None):
    x_BTD = x_BTD + block.attn.finish(out_BTHDh, gate_BTHDh)
    return x_BTD + block.ffn(block.ffn_norm(x_BTD))


@functools.cache
def _compiled(fn):
    return torch.compile(fn, fullgraph=True)


def applies(block: nn.Module, x_BTD: torch.Tensor, cache: SlotCache | None) -> bool:
    """A token of each sequence through a cache (one sequence, or a batch whose experts' routed copies take row
    sums: `MoE.takes_copies`), on a CPU without autograd, in a block of plain attention whose products are switched
    to row sums, where TorchInductor compiles."""
    attn, ffn = block.attn, block.ffn
    return (cache is not None and not cache.parts and x_BTD.shape[1] == 1
            and (not isinstance(ffn, MoE) or ffn.takes_copies(x_BTD.shape[0]))
            and type(attn) is Attention and isinstance(attn.q_proj, Linear) and attn.q_proj.row_sum
            and x_BTD.device.type == "cpu" and x_BTD.dtype in (torch.float32, torch.bfloat16)
            and not torch.is_grad_enabled() and compiling())


def decode_block(block: nn.Module, x_BTD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                 cache: SlotCache) -> torch.Tensor | None:
    """The block's output for one token, or None where compiling fails here (said once; the eager block runs)."""
    if x_BTD.shape[0] > 1:  # a batch: one graph for any number of sequences, not one per number
        for tensor in (x_BTD, cos, sin):
            if tensor.dim() == 3 and tensor.shape[0] == x_BTD.shape[0]:
                torch._dynamo.maybe_mark_dynamic(tensor, 0)
    try:
        q_BHTDh, k_BGTDh, v_BTGDh, gate_BTHDh = _compiled(_before_cache)(block, x_BTD, cos, sin)
    except Exception as error:
        give_up_compiling(error, "block regions")
        return None
    out_BTHDh = block.attn.attend(q_BHTDh, k_BGTDh, v_BTGDh, cache, block.layer_idx)
    if x_BTD.shape[0] > 1:
        torch._dynamo.maybe_mark_dynamic(out_BTHDh, 0)
    try:
        return _compiled(_after_cache)(block, x_BTD, out_BTHDh, gate_BTHDh)
    except Exception as error:  # the cache already holds this token: finish the block eagerly
        give_up_compiling(error, "block regions")
        x_BTD = x_BTD + block.attn.finish(out_BTHDh, gate_BTHDh)
        return x_BTD + block.ffn(block.ffn_norm(x_BTD))
