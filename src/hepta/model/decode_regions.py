"""Decoding a token of each sequence on a CPU as two compiled regions a block, around the KV cache.

A decode step of a small MoE model is hundreds of small operators, each a dispatch and a thread fork/join, and
the compiled row sums of model/matvec.py are each a call of their own on top. TorchInductor compiles what comes
before the cache (the norm, the QKV projections, QK-norm, rotary) into one call and what comes after it (the
attention over the cache's view, the output projection, the residual, the norm, the router and the chosen
experts, the residual) into another, with every matrix-vector product a one-pass row sum. The cache update
stays eager: it moves with the slots; the view it returns is as long as the longest sequence, a dynamic
dimension of the second region. Compiled over the module (its parameters are the graph's inputs), one graph serves
every block of the same structure. A batch of sequences decoding takes the same regions with its batch dimension
dynamic (one graph for any number of sequences from 2): its projections are matmuls, and its experts row sums
over the routed copies (`GroupedExperts.few_tokens`), so nothing in either region waits on the host.

Where every block is plain attention over the whole cache (no sliding window, no sinks) and keeps its keys and
values there, one sequence's step runs as one compiled call instead (`decode_step`: the rotary angles, every block
with its cache update, the final norm): each region call costs dynamo's guard checks and a return to Python, and a
bf16 step of the 200M OLMoE shape made 17 of them.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from hepta.model.attention import Attention
from hepta.model.cache import SlotCache
from hepta.model.matvec import Linear, compiling, give_up_compiling
from hepta.model.moe import MoE


def _before_cache(block: nn.Module, x_BTD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    return block.attn.project(block.attn_norm(x_BTD), cos, sin)


def _one_query_attention(q_BHTDh: torch.Tensor, k_BGSDh: torch.Tensor, v_BGSDh: torch.Tensor,
                         mask_B11S: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(Dh)) v for one new token a sequence, as plain products that TorchInductor fuses with
    the rest of the region: [B, H, 1, Dh]. torch's attention kernel, tiled for long queries, costs more than the
    whole product for one (bf16, 200M OLMoE shape: a decode step 9.34 ms with it, 8.18 ms with this). A group's
    heads share their keys and values (GQA), so they are one product with the group's query rows."""
    B, H, T, Dh = q_BHTDh.shape
    G = k_BGSDh.shape[1]
    q_BGRDh = q_BHTDh.reshape(B, G, H // G * T, Dh).float()
    scores_BGRS = (q_BGRDh @ k_BGSDh.float().transpose(-1, -2)) * Dh ** -0.5
    scores_BGRS = scores_BGRS.masked_fill(~mask_B11S, float("-inf"))
    out_BGRDh = scores_BGRS.softmax(-1) @ v_BGSDh.float()
    return out_BGRDh.reshape(B, H, T, Dh).to(q_BHTDh.dtype)


def _after_cache(block: nn.Module, x_BTD: torch.Tensor, q_BHTDh: torch.Tensor, k_BGSDh: torch.Tensor,
                 v_BGSDh: torch.Tensor, mask: torch.Tensor | None, causal: bool, gate_BTHDh: torch.Tensor | None):
    attn = block.attn
    if mask is not None and attn.sinks is None and attn.attention_kernel is F.scaled_dot_product_attention:
        out_BHTDh = _one_query_attention(q_BHTDh, k_BGSDh, v_BGSDh, mask)
    else:  # sinks, another kernel, or a prompt of one token into a fresh slot (causal, no mask)
        out_BHTDh = attn.attend_over(q_BHTDh, k_BGSDh, v_BGSDh, mask, causal)
    out_BTHDh = out_BHTDh.transpose(1, 2)
    x_BTD = x_BTD + block.attn.finish(out_BTHDh, gate_BTHDh)
    return x_BTD + block.ffn(block.ffn_norm(x_BTD))


@functools.cache
def _compiled(fn, cpp_wrapper: bool = False):
    """`fn` compiled whole; with `cpp_wrapper`, its kernels called from C++ rather than from Python between them."""
    return torch.compile(fn, fullgraph=True, options={"cpp_wrapper": cpp_wrapper})


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


def _batch_dynamic(x_BTD: torch.Tensor, *tensors: torch.Tensor | None) -> None:
    """A batch: one graph for any number of sequences, not one per number (`tensors` lead with the batch)."""
    if x_BTD.shape[0] > 1:
        for tensor in (x_BTD, *tensors):
            if tensor is not None and tensor.dim() >= 1 and tensor.shape[0] == x_BTD.shape[0]:
                torch._dynamo.maybe_mark_dynamic(tensor, 0)


def decode_block(block: nn.Module, x_BTD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                 cache: SlotCache) -> torch.Tensor | None:
    """The block's output for a token of each sequence, or None where compiling fails here (said once; the eager
    block runs)."""
    _batch_dynamic(x_BTD, cos, sin)
    try:
        q_BHTDh, k_BGTDh, v_BTGDh, gate_BTHDh = _compiled(_before_cache)(block, x_BTD, cos, sin)
    except Exception as error:
        give_up_compiling(error, "block regions")
        return None
    # the cache takes this token's keys and values eagerly (it moves with the slots); what the token attends to is
    # a view of it, as long as the longest sequence: that length changes every step, so it is dynamic
    k_BGSDh, v_BGSDh, mask, causal = block.attn.visible(k_BGTDh, v_BTGDh, cache, block.layer_idx)
    for tensor in (k_BGSDh, v_BGSDh, mask):
        if tensor is not None:
            torch._dynamo.maybe_mark_dynamic(tensor, tensor.dim() - 1 if tensor is mask else 2)
    _batch_dynamic(x_BTD, q_BHTDh, k_BGSDh, v_BGSDh, mask)
    try:
        return _compiled(_after_cache)(block, x_BTD, q_BHTDh, k_BGSDh, v_BGSDh, mask, causal, gate_BTHDh)
    except Exception as error:  # the cache already holds this token: finish the block eagerly
        give_up_compiling(error, "block regions")
        return _after_cache(block, x_BTD, q_BHTDh, k_BGSDh, v_BGSDh, mask, causal, gate_BTHDh)


def _step(model: nn.Module, x_BTD: torch.Tensor, rope_positions: torch.Tensor, k_buffer: torch.Tensor,
          v_buffer: torch.Tensor, kv_rows: tuple[int, ...], start: int, rows_B: torch.Tensor, positions_B: torch.Tensor,
          mask_B11S: torch.Tensor, head: bool) -> torch.Tensor:
    """A decode step from the embeddings to the final norm, and with `head` the LM head: every block writes its
    token's keys and values into the cache's buffers ([layers, slots, positions, G, Dh]) and attends over the
    window's first S positions. The write indexes the whole buffer: TorchInductor then stores in place, where a
    write through one layer's view copied the buffer."""
    B, S = x_BTD.shape[0], mask_B11S.shape[-1]
    cos, sin = model.rope(rope_positions, x_BTD.dtype)
    for block, row in zip(model.layers, kv_rows):
        q_BHTDh, k_BGTDh, v_BTGDh, gate_BTHDh = _before_cache(block, x_BTD, cos, sin)
        layer_B = torch.full_like(positions_B, row)
        k_buffer.index_put_((layer_B, rows_B, positions_B), k_BGTDh[:, :, 0].to(k_buffer.dtype))
        v_buffer.index_put_((layer_B, rows_B, positions_B), v_BTGDh[:, 0].to(v_buffer.dtype))
        k_BGSDh = k_buffer[row, start:start + B, :S].transpose(1, 2)
        v_BGSDh = v_buffer[row, start:start + B, :S].transpose(1, 2)
        x_BTD = _after_cache(block, x_BTD, q_BHTDh, k_BGSDh, v_BGSDh, mask_B11S, False, gate_BTHDh)
    return model.output(model.norm(x_BTD)) if head else model.norm(x_BTD)


def step_applies(blocks: nn.ModuleList, x_BTD: torch.Tensor, cache: SlotCache | None) -> bool:
    """Whether `decode_step` serves this forward: a token of one running sequence (`applies` for every block),
    each block of plain attention over the whole cache, keeping its keys and values there. A batch keeps the two
    regions a block: through an engine, a step of 16 sequences of the 200M OLMoE shape took 70 ms as one call
    against 52 ms as regions (fp32, 2 cores), where one sequence's step gains (bf16 6.1 against 7.5 ms)."""
    return (cache is not None and x_BTD.shape[0] == 1 and cache.decode_targets() is not None
            and len(cache.buffers) == 2
            and all(applies(block, x_BTD, cache) and block.attn.window is None and block.attn.sinks is None
                    and block.attn.attention_kernel is F.scaled_dot_product_attention for block in blocks))


def decode_step(model: nn.Module, x_BTD: torch.Tensor, rope_positions: torch.Tensor, cache: SlotCache,
                head: bool = False) -> torch.Tensor | None:
    """The Transformer `model`'s final normed hidden states for one sequence's token, from its embedding `x_BTD` at
    `rope_positions` (`step_applies`), or with `head` its logits: the LM head inside the call took fp32 decode of
    the 200M OLMoE shape from 12.30 to 10.27 ms a token (bf16 6.37 to 6.20), where its own call ran the row sum
    compiled for every shape. None where compiling fails here (said once; the blocks run one by one, eagerly). A
    compile fails before it runs, so the cache is untouched."""
    rows_B, positions_B, mask_B11S = cache.decode_targets()
    torch._dynamo.maybe_mark_dynamic(mask_B11S, 3)  # the longest sequence grows every step
    for buffer in cache.buffers:  # one graph for any cache's slots and length: the engine's warm-up uses a small one
        torch._dynamo.maybe_mark_dynamic(buffer, 1)
        torch._dynamo.maybe_mark_dynamic(buffer, 2)
    kv_rows = tuple(cache.kv_row(block.layer_idx) for block in model.layers)
    try:
        # called from C++, a step's kernels ran at bf16 5.63 ms against 5.90 from Python (200M OLMoE shape, 2 cores)
        step = _compiled(_step, cpp_wrapper=True)
        return step(model, x_BTD, rope_positions, *cache.buffers, kv_rows, cache.start, rows_B, positions_B, mask_B11S,
                    head)
    except Exception as error:
        give_up_compiling(error, "decode steps")
        return None
