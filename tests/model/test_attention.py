import pytest
import torch

import hepta
from helpers import decoded_logits


def small_model(overrides: dict | None = None):
    shape = {"vocab_size": 300, "dim": 64, "attention.num_heads": 4, "attention.num_kv_heads": 2,
             "attention.head_dim": 16, "moe.num_experts": 4, "moe.expert_hidden_dim": 32, "max_seq_len": 64}
    cfg = hepta.get_preset("tiny").with_changes({**shape, **(overrides or {})})
    return hepta.build_model(cfg, seed=0).eval()


@pytest.mark.parametrize("overrides", [{}, {"attention.qk_norm": False, "attention.num_kv_heads": 4},
                                       {"attention.num_kv_heads": 1}])
def test_incremental_decoding_with_kv_cache_equals_full_forward(overrides):
    model = small_model(overrides)
    ids = torch.randint(0, 300, (2, 20))
    with torch.no_grad():
        full = model(ids)
    decoded, cache = decoded_logits(model, ids, prefill=7)  # a prefill, then one token at a time
    torch.testing.assert_close(decoded, full, atol=1e-5, rtol=1e-5)
    assert cache.lengths.tolist() == [20, 20]
    # keys and values, tokens first: [L, slots, S, G, Dh]
    cfg = model.config
    assert [b.shape for b in cache.buffers] == [(cfg.num_layers, 2, 20, cfg.attention.num_kv_heads, 16)] * 2


def test_logits_have_batch_time_vocab_shape_and_are_causal():
    model = small_model()
    ids = torch.randint(0, 300, (3, 10))
    logits = model(ids)
    assert logits.shape == (3, 10, 300)
    changed = ids.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 300
    torch.testing.assert_close(model(changed)[:, :6], logits[:, :6])  # the future never leaks back
    assert not torch.allclose(model(changed)[:, 6:], logits[:, 6:])


def test_rope_makes_attention_position_dependent_but_shift_invariant_in_relative_terms():
    from hepta.model.layers import apply_rope
    from hepta.model.rope import RopeScaling, scaled_rope_cos_sin

    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(i, j):
        cos_i, sin_i = scaled_rope_cos_sin(torch.tensor([i]), 16, 10000.0, RopeScaling())
        cos_j, sin_j = scaled_rope_cos_sin(torch.tensor([j]), 16, 10000.0, RopeScaling())
        return (apply_rope(q, cos_i, sin_i) * apply_rope(k, cos_j, sin_j)).sum()

    torch.testing.assert_close(score(5, 2), score(105, 102), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(score(5, 2), score(5, 4))
