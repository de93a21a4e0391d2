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


def long_context_tiny():
    """(model, tokenizer): `tiny` with a 4,096-token context, random weights, and a small tokenizer whose ids
    0-199 the benchmarks' random prompts draw from; for the engine's scheduling benchmarks."""
    from hepta.tokenizer import Tokenizer

    cfg = hepta.get_preset("tiny").with_changes({"max_seq_len": 4096})
    tokenizer = Tokenizer.train(["def f(x):\n    return x + 1\n" * 50], text_vocab_size=cfg.vocab_size - 32)
    return hepta.build_model(cfg, seed=0).eval(), tokenizer
