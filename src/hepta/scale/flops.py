"""FLOPs per token, as model-FLOPs utilisation (MFU) counts them.

Matmul FLOPs are 2 per weight a token passes through in the forward and 4 in the backward
(gradients of inputs and of weights): 6 N for training, 2 N for inference, with N the active
weights that are matmuls (the input embedding is a table lookup and is left out; a tied
output matrix counts once). Attention adds the score and value products over the context,
which no weight count includes: per layer and token 2 H (d_qk + d_v) S forward for S keys.
As in PaLM's MFU definition (Chowdhery et al. 2022, appendix B) and torchtitan, the causal
mask is not discounted (training counts all S = seq_len keys), and recomputation under
activation checkpointing is not counted: MFU is useful work over peak.
"""

from __future__ import annotations

from hepta.config import ModelConfig, count_params


def matmul_params(cfg: ModelConfig) -> int:
    """Active weights a token multiplies by: active parameters less the input embedding (a lookup)."""
    count = count_params(cfg)
    embedding_lookup = 0 if cfg.tie_embeddings else count.components["embedding"]
    return count.active - embedding_lookup


def attention_qk_v_dims(cfg: ModelConfig) -> tuple[int, int]:
    if cfg.attention.kind == "mla":
        return cfg.attention.qk_nope_head_dim + cfg.attention.qk_rope_head_dim, cfg.attention.v_head_dim
    return cfg.attention.head_dim, cfg.attention.head_dim


def attention_forward_flops(cfg: ModelConfig, context: int) -> float:
    """Score and value products of one token against `context` keys, all layers, forward."""
    d_qk, d_v = attention_qk_v_dims(cfg)
    return 2.0 * cfg.num_layers * cfg.attention.num_heads * (d_qk + d_v) * context


def train_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    return 6.0 * matmul_params(cfg) + 3.0 * attention_forward_flops(cfg, seq_len)


def inference_flops_per_token(cfg: ModelConfig, context: int) -> float:
    """One decoded token with `context` tokens already cached."""
    return 2.0 * matmul_params(cfg) + attention_forward_flops(cfg, context)
