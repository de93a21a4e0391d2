"""Grouped-query attention with RoPE, optional QK-norm and a KV cache for decoding; optionally a
sliding window and attention sinks (gpt-oss).

Dims: B batch, T new tokens, S tokens attended to (cached + new; S = T without a cache),
H query heads, G KV heads, r = H / G query heads per KV head, Dh head dim, D model dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hepta.model.cache import SlotCache, causal_mask
from hepta.model.layers import RMSNorm, apply_rope
from hepta.model.matvec import Linear
from hepta.model.packed_rows import PackedRows

# Sink attention forms its scores explicitly; queries go through in chunks so that the scores of a
# long prompt ([B, H, T, S] floats) never exist at once.
_SINK_SCORE_BYTES = 64 << 20


def attention_with_sinks(q_BHTDh: torch.Tensor, k_BGSDh: torch.Tensor, v_BGSDh: torch.Tensor, sinks_H: torch.Tensor,
                         visible: torch.Tensor) -> torch.Tensor:
    """Softmax attention in which each head's softmax also holds its sink logit, a key that adds no
    value: the weights of the real keys sum to less than 1 where the sink takes a share.

    SDPA cannot add that term, so the scores are formed here (in fp32), query chunk by chunk.
    `visible` is bool, True where a query sees a key: [T, S], or [B, 1, 1, S] for one decode step.
    """
    B, H, T, Dh = q_BHTDh.shape
    G, S = k_BGSDh.shape[1], k_BGSDh.shape[2]
    r = H // G
    q_BGrTDh = q_BHTDh.float().view(B, G, r, T, Dh) * Dh ** -0.5
    kT_BG1DhS = k_BGSDh.float().transpose(-1, -2)[:, :, None]
    v_BG1SDh = v_BGSDh.float()[:, :, None]
    visible = visible[:, :, None] if visible.dim() == 4 else visible  # [B, 1, 1, 1, S]: broadcasts over G, r, T
    sink_1Gr11 = sinks_H.float().view(1, G, r, 1, 1)
    out_BGrTDh = q_BGrTDh.new_empty(B, G, r, T, Dh)
    chunk = max(1, _SINK_SCORE_BYTES // (4 * B * H * S))
    for t0 in range(0, T, chunk):
        t1 = min(T, t0 + chunk)
        scores = q_BGrTDh[:, :, :, t0:t1] @ kT_BG1DhS
        scores = scores.masked_fill(~(visible[..., t0:t1, :] if visible.shape[-2] == T else visible), float("-inf"))
        logits = torch.cat([scores, sink_1Gr11.expand(B, G, r, t1 - t0, 1)], dim=-1)
        out_BGrTDh[:, :, :, t0:t1] = logits.softmax(dim=-1)[..., :S] @ v_BG1SDh
    return out_BGrTDh.view(B, H, T, Dh).to(q_BHTDh.dtype)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, num_kv_heads: int, head_dim: int, qk_norm: bool, norm_eps: float,
                 qk_norm_per_head: bool = True, qkv_bias: bool = False, o_bias: bool = False, sinks: bool = False,
                 window: int | None = None, gated: bool = False, zero_centered_norms: bool = False):
        """window: this layer sees only the latest `window` tokens (itself included); None = all.
        gated: q_proj also gives each head an output gate, [q (Dh), gate (Dh)] per head (Qwen3.5)."""
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.window, self.gated = window, gated
        self.q_proj = Linear(dim, num_heads * head_dim * (2 if gated else 1), bias=qkv_bias)
        self.k_proj = Linear(dim, num_kv_heads * head_dim, bias=qkv_bias)
        self.v_proj = Linear(dim, num_kv_heads * head_dim, bias=qkv_bias)
        self.o_proj = Linear(num_heads * head_dim, dim, bias=o_bias)
        self.sinks = nn.Parameter(torch.zeros(num_heads)) if sinks else None
        # QK-norm keeps attention logits bounded at large learning rates: per head over Dh, or
        # (OLMoE) once over all heads' concatenated projections.
        self.qk_norm_per_head = qk_norm_per_head
        q_width, k_width = (head_dim, head_dim) if qk_norm_per_head else (num_heads * head_dim, num_kv_heads * head_dim)
        self.q_norm = RMSNorm(q_width, norm_eps, zero_centered_norms) if qk_norm else None
        self.k_norm = RMSNorm(k_width, norm_eps, zero_centered_norms) if qk_norm else None
        # the kernel that computes softmax(QK^T)V, swappable per model (the dry run sets a flash stand-in)
        self.attention_kernel = F.scaled_dot_product_attention

    def forward(self, x_BTD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: SlotCache | None = None, layer_idx: int = 0, rows: PackedRows | None = None) -> torch.Tensor:
        """With `rows`, x_BTD is rows packed end to end ([1, N, D]) and each token attends within its own row."""
        q_BHTDh, k_BGTDh, v_BTGDh, gate_BTHDh = self.project(x_BTD, cos, sin)
        if rows is not None:
            out_BTHDh = rows.attend(lambda q, k, v: self._attend(q, k, v, None, layer_idx), q_BHTDh, k_BGTDh, v_BTGDh)
            return self.finish(out_BTHDh, gate_BTHDh)
        return self.finish(self.attend(q_BHTDh, k_BGTDh, v_BTGDh, cache, layer_idx), gate_BTHDh)

    def project(self, x_BTD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """Queries and keys normed and rotated, values, and the output gate (None unless `gated`): what goes into
        the cache and the attention. No state is touched, so a compiled decode step can take it whole."""
        B, T, _ = x_BTD.shape
        q, k = self.q_proj(x_BTD), self.k_proj(x_BTD)
        gate_BTHDh = None
        if self.gated:
            q, gate_BTHDh = q.view(B, T, self.num_heads, 2 * self.head_dim).chunk(2, dim=-1)
            q = q.reshape(B, T, self.num_heads * self.head_dim)
        if self.q_norm is not None and not self.qk_norm_per_head:
            q, k = self.q_norm(q), self.k_norm(k)
        q_BTHDh = q.view(B, T, self.num_heads, self.head_dim)
        k_BTGDh = k.view(B, T, self.num_kv_heads, self.head_dim)
        v_BTGDh = self.v_proj(x_BTD).view(B, T, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None and self.qk_norm_per_head:
            q_BTHDh, k_BTGDh = self.q_norm(q_BTHDh), self.k_norm(k_BTGDh)
        q_BHTDh = apply_rope(q_BTHDh.transpose(1, 2), cos, sin)
        k_BGTDh = apply_rope(k_BTGDh.transpose(1, 2), cos, sin)
        return q_BHTDh, k_BGTDh, v_BTGDh, gate_BTHDh

    def attend(self, q_BHTDh: torch.Tensor, k_BGTDh: torch.Tensor, v_BTGDh: torch.Tensor, cache: SlotCache | None,
               layer_idx: int) -> torch.Tensor:
        """The new tokens' attention over what they see, through the cache when there is one: [B, T, H, Dh]."""
        if cache is not None and cache.parts:  # a packed forward: attention part by part, each over its own slots
            return torch.cat([self._attend_part(q_BHTDh, k_BGTDh, v_BTGDh, cache, layer_idx, part)
                              for part in cache.parts], dim=1)
        return self._attend(q_BHTDh, k_BGTDh, v_BTGDh, cache, layer_idx).transpose(1, 2)

    def finish(self, out_BTHDh: torch.Tensor, gate_BTHDh: torch.Tensor | None) -> torch.Tensor:
        """The heads gated (where `gated`) and projected back to the model dim: [B, T, D]."""
        B, T = out_BTHDh.shape[:2]
        if gate_BTHDh is not None:
            out_BTHDh = out_BTHDh * torch.sigmoid(gate_BTHDh)
        return self.o_proj(out_BTHDh.reshape(B, T, self.num_heads * self.head_dim))

    def _attend(self, q_BHTDh: torch.Tensor, k_BGTDh: torch.Tensor, v_BTGDh: torch.Tensor, cache: SlotCache | None,
                layer_idx: int) -> torch.Tensor:
        """softmax(QK^T)V of the new tokens over what they see (the cache's window, when there is one): [B, H, T, Dh]."""
        return self.attend_over(q_BHTDh, *self.visible(k_BGTDh, v_BTGDh, cache, layer_idx))

    def visible(self, k_BGTDh: torch.Tensor, v_BTGDh: torch.Tensor, cache: SlotCache | None, layer_idx: int):
        """What the new tokens attend to: keys and values [B, G, S, Dh] (the cache's window, into which this writes
        them, when there is one) and (attn_mask, is_causal) over them."""
        T, device = k_BGTDh.shape[2], k_BGTDh.device
        k_BGSDh, v_BGSDh = k_BGTDh, v_BTGDh.transpose(1, 2)
        mask, causal = (None, True) if self.window is None else (causal_mask(T, self.window, device), False)
        if cache is not None:  # the cache keeps tokens first, [B, S, G, Dh]; attention reads heads first
            k_BSGDh, v_BSGDh = cache.update(layer_idx, k_BGTDh.transpose(1, 2), v_BTGDh)
            k_BGSDh, v_BGSDh = k_BSGDh.transpose(1, 2), v_BSGDh.transpose(1, 2)
            mask, causal = cache.mask(self.window)
        return k_BGSDh, v_BGSDh, mask, causal

    def attend_over(self, q_BHTDh: torch.Tensor, k_BGSDh: torch.Tensor, v_BGSDh: torch.Tensor,
                    mask: torch.Tensor | None, causal: bool) -> torch.Tensor:
        """softmax(QK^T)V over keys and values already in place: [B, H, T, Dh]. No state is touched, so a compiled
        decode step can take it whole."""
        if self.sinks is not None:
            visible = causal_mask(q_BHTDh.shape[2], None, q_BHTDh.device) if causal else mask
            return attention_with_sinks(q_BHTDh, k_BGSDh, v_BGSDh, self.sinks, visible)
        return self.attention_kernel(q_BHTDh, k_BGSDh, v_BGSDh, attn_mask=mask, is_causal=causal,
                                     enable_gqa=self.num_heads != self.num_kv_heads)

    def _attend_part(self, q_1HNDh: torch.Tensor, k_1GNDh: torch.Tensor, v_1NGDh: torch.Tensor, cache: SlotCache,
                     layer_idx: int, part) -> torch.Tensor:
        """One part of a packed sequence of N tokens (`part.batch` slots of `part.new` tokens each) attended as a
        window of its own: [1, its tokens, H, Dh]."""
        cache.enter(part)
        B, T, tokens = part.batch, part.new, part.tokens
        q_BHTDh = q_1HNDh[0, :, tokens].reshape(self.num_heads, B, T, self.head_dim).transpose(0, 1)
        k_BGTDh = k_1GNDh[0, :, tokens].reshape(self.num_kv_heads, B, T, self.head_dim).transpose(0, 1)
        v_BTGDh = v_1NGDh[0, tokens].reshape(B, T, self.num_kv_heads, self.head_dim)
        out_BHTDh = self._attend(q_BHTDh, k_BGTDh, v_BTGDh, cache, layer_idx)
        return out_BHTDh.transpose(1, 2).reshape(1, B * T, self.num_heads, self.head_dim)
