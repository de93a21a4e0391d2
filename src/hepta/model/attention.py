"""Grouped-query attention with RoPE, optional QK-norm and a KV cache for decoding.

Dims: B batch, T new tokens, S tokens attended to (cached + new; S = T without a cache),
H query heads, G KV heads, Dh head dim, D model dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hepta.model.cache import SlotCache
from hepta.model.layers import RMSNorm, apply_rope


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, num_kv_heads: int, head_dim: int, qk_norm: bool, norm_eps: float,
                 qk_norm_per_head: bool = True, qkv_bias: bool = False):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.q_proj = nn.Linear(dim, num_heads * head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(dim, num_kv_heads * head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(dim, num_kv_heads * head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(num_heads * head_dim, dim, bias=False)
        # QK-norm keeps attention logits bounded at large learning rates: per head over Dh, or
        # (OLMoE) once over all heads' concatenated projections.
        self.qk_norm_per_head = qk_norm_per_head
        q_width, k_width = (head_dim, head_dim) if qk_norm_per_head else (num_heads * head_dim, num_kv_heads * head_dim)
        self.q_norm = RMSNorm(q_width, norm_eps) if qk_norm else None
        self.k_norm = RMSNorm(k_width, norm_eps) if qk_norm else None
        # the kernel that computes softmax(QK^T)V, swappable per model (the dry run sets a flash stand-in)
        self.attention_kernel = F.scaled_dot_product_attention

    def forward(self, x_BTD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: SlotCache | None = None, layer_idx: int = 0) -> torch.Tensor:
        B, T, _ = x_BTD.shape
        q, k = self.q_proj(x_BTD), self.k_proj(x_BTD)
        if self.q_norm is not None and not self.qk_norm_per_head:
            q, k = self.q_norm(q), self.k_norm(k)
        q_BTHDh = q.view(B, T, self.num_heads, self.head_dim)
        k_BTGDh = k.view(B, T, self.num_kv_heads, self.head_dim)
        v_BTGDh = self.v_proj(x_BTD).view(B, T, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None and self.qk_norm_per_head:
            q_BTHDh, k_BTGDh = self.q_norm(q_BTHDh), self.k_norm(k_BTGDh)
        q_BHTDh = apply_rope(q_BTHDh.transpose(1, 2), cos, sin)
        k_BGTDh = apply_rope(k_BTGDh.transpose(1, 2), cos, sin)
        v_BGTDh = v_BTGDh.transpose(1, 2)

        k_BGSDh, v_BGSDh, mask, causal = k_BGTDh, v_BGTDh, None, True
        if cache is not None:  # the cache keeps tokens first, [B, S, G, Dh]; attention reads heads first
            k_BSGDh, v_BSGDh = cache.update(layer_idx, k_BGTDh.transpose(1, 2), v_BTGDh)
            k_BGSDh, v_BGSDh = k_BSGDh.transpose(1, 2), v_BSGDh.transpose(1, 2)
            mask, causal = cache.mask()
        out_BHTDh = self.attention_kernel(
            q_BHTDh, k_BGSDh, v_BGSDh, attn_mask=mask, is_causal=causal,
            enable_gqa=self.num_heads != self.num_kv_heads,
        )
        return self.o_proj(out_BHTDh.transpose(1, 2).reshape(B, T, self.num_heads * self.head_dim))
