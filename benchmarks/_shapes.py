"""Model shapes the benchmarks share, as changes to hepta's `tiny` preset (random weights, nothing downloaded)."""

from __future__ import annotations

import hepta

SHAPES = {
    "tiny": {},
    # 200M parameters, OLMoE's layout at a small size: 8 layers, d 512, 32 experts top-4, no shared or dense layers
    "olmoe-200m": {"num_layers": 8, "dim": 512, "attention.num_heads": 8, "attention.num_kv_heads": 8,
                   "attention.head_dim": 64, "moe.num_experts": 32, "moe.top_k": 4, "moe.expert_hidden_dim": 384,
                   "vocab_size": 32768, "moe.num_shared_experts": 0, "moe.num_dense_layers": 0},
}


def shaped(name: str, **changes) -> hepta.ModelConfig:
    """`tiny` changed to the shape `name`, then by `changes` (dotted field names)."""
    return hepta.get_preset("tiny").with_changes({**SHAPES[name], **changes})
