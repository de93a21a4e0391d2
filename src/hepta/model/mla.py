"""Multi-head latent attention (MLA, DeepSeek-V2/V3), decoding from a compressed KV cache.

Keys and values come from one small latent per token: x -> kv_a_proj_with_mqa gives the latent
c (C dims) and one rope key shared by all heads (R dims); kv_b_proj expands the normed latent to
each head's non-rotary key part (P dims) and value (Dv dims). The cache keeps only c and the
rotated shared key, C + R values per token and layer instead of 2 * H * Dh.

A decode step reads the cache without expanding it: kv_b_proj's key half is absorbed into the
query (q_nope . W_uk c = (W_uk^T q_nope) . c) and its value half applied after attention, so
each step is multi-query attention over the S latents with C + R dim keys and C dim values. A
prefill (no past, T = S) expands the latents instead.

Dims: B batch, T new tokens, S tokens attended to (cached + new; S = T without a cache), H heads,
D model dim, Q query latent (q_lora_rank), C kv latent (kv_lora_rank), P no-rope head dim,
R rope head dim, Dv value dim.

The rope dims use the "rotate half" layout. DeepSeek checkpoints store them interleaved
(pairs x0,x1 rotate together); the loader permutes those weight rows, which gives the same
attention scores (`deinterleave_rope_rows`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hepta.model.cache import SlotCache
from hepta.model.layers import RMSNorm, apply_rope
from hepta.model.matvec import Linear

LATENT_NORM_EPS = 1e-6  # DeepSeek's q_a_layernorm and kv_a_layernorm keep the default eps, not rms_norm_eps


class MultiHeadLatentAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, q_lora_rank: int | None, kv_lora_rank: int,
                 qk_nope_head_dim: int, qk_rope_head_dim: int, v_head_dim: int, softmax_scale: float):
        super().__init__()
        self.num_heads, self.q_lora_rank, self.kv_lora_rank = num_heads, q_lora_rank, kv_lora_rank
        self.nope_dim, self.rope_dim, self.v_dim = qk_nope_head_dim, qk_rope_head_dim, v_head_dim
        qk_dim = qk_nope_head_dim + qk_rope_head_dim
        # (qk_nope + qk_rope)^-0.5, times YaRN's mscale^2 for DeepSeek's long-context setup
        self.softmax_scale = softmax_scale
        if q_lora_rank is None:
            self.q_proj = Linear(dim, num_heads * qk_dim, bias=False)
        else:  # low-rank query: D -> Q -> norm -> H * (P + R)
            self.q_a_proj = Linear(dim, q_lora_rank, bias=False)
            self.q_a_layernorm = RMSNorm(q_lora_rank, LATENT_NORM_EPS)
            self.q_b_proj = Linear(q_lora_rank, num_heads * qk_dim, bias=False)
        self.kv_a_proj_with_mqa = Linear(dim, kv_lora_rank + qk_rope_head_dim, bias=False)
        self.kv_a_layernorm = RMSNorm(kv_lora_rank, LATENT_NORM_EPS)
        self.kv_b_proj = Linear(kv_lora_rank, num_heads * (qk_nope_head_dim + v_head_dim), bias=False)
        self.o_proj = Linear(num_heads * v_head_dim, dim, bias=False)
        # the kernel that computes softmax(QK^T)V, swappable per model (the dry run sets a flash stand-in)
        self.attention_kernel = F.scaled_dot_product_attention

    def forward(self, x_BTD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: SlotCache | None = None, layer_idx: int = 0) -> torch.Tensor:
        """cos/sin: [T, R] (or [B, T, R], per-sequence positions) tables of the new tokens' positions."""
        B, T, _ = x_BTD.shape
        H, P, R, Dv = self.num_heads, self.nope_dim, self.rope_dim, self.v_dim
        if self.q_lora_rank is None:
            q = self.q_proj(x_BTD)
        else:
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x_BTD)))
        q_BHTPR = q.view(B, T, H, P + R).transpose(1, 2)
        q_nope_BHTP, q_rope_BHTR = q_BHTPR.split([P, R], dim=-1)
        q_rope_BHTR = apply_rope(q_rope_BHTR, cos, sin)

        latent_BTC, k_rope_BTR = self.kv_a_proj_with_mqa(x_BTD).split([self.kv_lora_rank, R], dim=-1)
        latent_BTC = self.kv_a_layernorm(latent_BTC)
        k_rope_BTR = apply_rope(k_rope_BTR, cos, sin)

        latent_BSC, k_rope_BSR, mask, causal, has_past = latent_BTC, k_rope_BTR, None, True, False
        if cache is not None:
            assert not cache.parts, "packed forwards cover grouped-query attention only"
            has_past = cache.has_past
            latent_BSC, k_rope_BSR = cache.update(layer_idx, latent_BTC, k_rope_BTR)
            mask, causal = cache.mask()
        S, C = latent_BSC.shape[1], self.kv_lora_rank

        # a decode step (T = 1 per sequence) absorbs: per cached token and head that costs ~ 2C + R
        # multiply-adds, while expanding costs C * (P + Dv) for the expansion plus P + R + Dv
        if has_past:
            W_HPDvC = self.kv_b_proj.weight.view(H, P + Dv, C)  # kv_b_proj's key rows, then its value rows
            q_lat_BHTC = torch.einsum("bhtp,hpc->bhtc", q_nope_BHTP, W_HPDvC[:, :P])
            q_BHTCR = torch.cat([q_lat_BHTC, q_rope_BHTR], dim=-1)
            k_B1SCR = torch.cat([latent_BSC, k_rope_BSR], dim=-1)[:, None]
            ctx_BHTC = self.attention_kernel(q_BHTCR, k_B1SCR, latent_BSC[:, None], attn_mask=mask,
                                             is_causal=causal, scale=self.softmax_scale, enable_gqa=True)
            out_BHTDv = torch.einsum("bhtc,hvc->bhtv", ctx_BHTC, W_HPDvC[:, P:])
            return self.o_proj(out_BHTDv.transpose(1, 2).reshape(B, T, H * Dv))

        # Expand the latents of all S tokens to per-head keys and values.
        kv_BSHPDv = self.kv_b_proj(latent_BSC).view(B, S, H, P + Dv)
        k_nope_BSHP, v_BSHDv = kv_BSHPDv.split([P, Dv], dim=-1)
        k_BHSPR = torch.cat([k_nope_BSHP, k_rope_BSR[:, :, None, :].expand(B, S, H, R)], dim=-1).transpose(1, 2)
        v_BHSDv = v_BSHDv.transpose(1, 2)
        q_BHTPR = torch.cat([q_nope_BHTP, q_rope_BHTR], dim=-1)
        out_BHTDv = self.attention_kernel(q_BHTPR, k_BHSPR, v_BHSDv, attn_mask=mask, is_causal=causal,
                                          scale=self.softmax_scale)
        return self.o_proj(out_BHTDv.transpose(1, 2).reshape(B, T, H * Dv))


def deinterleave_rope_rows(weight: torch.Tensor, head_width: int, nope_dim: int, rope_dim: int) -> torch.Tensor:
    """Reorder the rope rows of a projection from interleaved pairs to the rotate-half layout.

    `weight` is [n * head_width, in]; in each block of head_width rows the rope rows
    nope_dim .. nope_dim + rope_dim go from (x0, x1, x2, x3, ...) to (x0, x2, ..., x1, x3, ...).
    """
    rows = torch.arange(weight.shape[0]).view(-1, head_width)
    rope = rows[:, nope_dim:nope_dim + rope_dim]
    rows = torch.cat([rows[:, :nope_dim], rope[:, 0::2], rope[:, 1::2], rows[:, nope_dim + rope_dim:]], dim=1)
    return weight[rows.flatten()]
