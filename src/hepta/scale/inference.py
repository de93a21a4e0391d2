"""Serving figures: GPUs to hold the weights, KV cache per 1k tokens, decode speed bounded by memory bandwidth.

Decoding one token per sequence reads every weight the batch's tokens use and each
sequence's KV cache once from HBM; at small batches that traffic, not the FLOPs, sets the
speed, so tokens/s <= batch x aggregate HBM bandwidth / bytes read per step. With B
sequences each routing to K of E experts, an expert is read when at least one of them picks
it: E (1 - (1 - K/E)^B) experts per MoE layer, on average for uniform routing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hepta.config import ModelConfig, count_params
from hepta.scale.gpus import GPU
from hepta.scale.memory import BF16

USABLE_HBM = 0.9  # the rest: CUDA context, communication buffers, fragmentation


@dataclass(frozen=True)
class Inference:
    weight_bytes: float
    gpus_for_weights: int  # the least that hold the bf16 weights
    replica_gpus: int  # rounded up to whole NVLink domains, with room for the KV cache of the batch
    kv_bytes_per_1k_tokens: float  # one sequence, all layers
    decode_tokens_per_s_batch1: float
    decode_batch: int
    decode_tokens_per_s_batch: float
    context: int

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def kv_bytes_per_token(cfg: ModelConfig) -> float:
    """bf16 cache per token: keys and values of the KV heads, or MLA's latent and shared rope key, in the
    softmax-attention layers (linear-attention layers keep a fixed state per sequence instead)."""
    return len(cfg.softmax_attention_layers) * sum(math.prod(shape) for shape in cfg.attention.kv_cache_token_shapes) * BF16


def weight_bytes_read(cfg: ModelConfig, batch: int) -> float:
    count = count_params(cfg)
    routed = count.components["routed_experts"]
    if not cfg.has_moe:
        return count.total * BF16
    touched = cfg.moe.num_experts * (1 - (1 - cfg.moe.top_k / cfg.moe.num_experts) ** batch)
    return (count.total - routed + routed * touched / cfg.moe.num_experts) * BF16


def inference_plan(cfg: ModelConfig, gpu: GPU, context: int, decode_batch: int = 64) -> Inference:
    weights = count_params(cfg).total * BF16
    usable = gpu.hbm_bytes * USABLE_HBM
    kv_token = kv_bytes_per_token(cfg)
    hold = math.ceil(weights / usable)
    needed = math.ceil((weights + decode_batch * context * kv_token) / usable)
    replica = math.ceil(needed / gpu.nvlink_domain) * gpu.nvlink_domain
    bandwidth = replica * gpu.hbm_bytes_per_s

    def tokens_per_s(batch: int) -> float:
        return batch * bandwidth / (weight_bytes_read(cfg, batch) + batch * context * kv_token)

    return Inference(weights, hold, replica, 1000 * kv_token, tokens_per_s(1), decode_batch,
                     tokens_per_s(decode_batch), context)
