import pytest
import torch

from hepta.config import AttentionConfig
from hepta.model.cache import SlotCache
from hepta.model.layers import apply_rope
from hepta.model.mla import MultiHeadLatentAttention, deinterleave_rope_rows
from hepta.model.rope import RopeScaling, scaled_rope_cos_sin
from helpers import decoded_logits


def attention_config(q_lora_rank) -> AttentionConfig:
    return AttentionConfig(kind="mla", num_heads=4, qk_norm=False, q_lora_rank=q_lora_rank, kv_lora_rank=16,
                           qk_nope_head_dim=8, qk_rope_head_dim=6, v_head_dim=10)


def mla(q_lora_rank):
    torch.manual_seed(0)
    a = attention_config(q_lora_rank)
    module = MultiHeadLatentAttention(dim=48, num_heads=a.num_heads, q_lora_rank=a.q_lora_rank,
                                      kv_lora_rank=a.kv_lora_rank, qk_nope_head_dim=a.qk_nope_head_dim,
                                      qk_rope_head_dim=a.qk_rope_head_dim, v_head_dim=a.v_head_dim,
                                      softmax_scale=a.qk_head_dim ** -0.5)
    for p in module.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return module.eval()


@pytest.mark.parametrize("q_lora_rank", [None, 12])
def test_decoding_from_the_compressed_cache_equals_a_full_forward(q_lora_rank):
    module = mla(q_lora_rank)
    x = torch.randn(2, 40, 48)
    cos, sin = scaled_rope_cos_sin(torch.arange(40), 6, 10000.0, RopeScaling())
    # only the latent and the shared rope key are kept: C + R values per token, not 2 * H * Dh
    token_shapes = attention_config(q_lora_rank).kv_cache_token_shapes  # the latent [C] and rope key [R]
    cache = SlotCache(num_layers=2, num_slots=2, max_len=40, token_shapes=token_shapes)
    with torch.no_grad():
        full = module(x, cos, sin)
        steps = []
        # a prefill (expanded latents), then one token at a time (latent-absorbed)
        for start, end in [(0, 5)] + [(t, t + 1) for t in range(5, 40)]:
            cache.set_window(0, 2)
            steps.append(module(x[:, start:end], cos[start:end], sin[start:end], cache, layer_idx=1))
            cache.advance(end - start)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    latent = cache.buffers[0]
    assert latent[1].abs().sum() > 0 and latent[0].abs().sum() == 0  # layer 0 untouched


def test_deinterleaved_rows_with_rotate_half_rope_equal_interleaved_rope():
    torch.manual_seed(0)
    nope, rope, heads = 3, 8, 2
    weight = torch.randn(heads * (nope + rope), 5)
    x = torch.randn(7, 5)
    cos, sin = scaled_rope_cos_sin(torch.arange(7), rope, 10000.0, RopeScaling())

    def interleaved(v):  # pairs (v0, v1), (v2, v3), ... rotate by one frequency each
        c, s = cos[:, : rope // 2], sin[:, : rope // 2]
        v1, v2 = v[..., 0::2], v[..., 1::2]
        return torch.cat([v1 * c - v2 * s, v2 * c + v1 * s], dim=-1)

    original = (x @ weight.T).view(7, heads, nope + rope).transpose(0, 1)
    reordered = deinterleave_rope_rows(weight, nope + rope, nope, rope)
    permuted = (x @ reordered.T).view(7, heads, nope + rope).transpose(0, 1)
    torch.testing.assert_close(permuted[..., :nope], original[..., :nope])
    torch.testing.assert_close(apply_rope(permuted[..., nope:], cos, sin), interleaved(original[..., nope:]))


MLA = {"vocab_size": 300, "dim": 64, "attention.num_heads": 4, "attention.qk_norm": False, "attention.kind": "mla",
       "attention.kv_lora_rank": 16, "attention.qk_rope_head_dim": 8, "attention.qk_nope_head_dim": 8,
       "attention.v_head_dim": 12, "moe.num_experts": 4, "moe.expert_hidden_dim": 32, "max_seq_len": 64}


@pytest.mark.parametrize("overrides", [
    {"attention.q_lora_rank": 24, "rope.type": "yarn", "rope.factor": 4.0, "rope.original_max_len": 16,
     "rope.mscale": 1.0, "rope.mscale_all_dim": 1.0},
    {"attention.q_lora_rank": None, "rope.type": "linear", "rope.factor": 2.0},
])
def test_transformer_with_mla_decodes_from_its_compressed_cache_like_a_full_forward(overrides):
    import hepta
    cfg = hepta.get_preset("tiny").with_changes({**MLA, **overrides})
    model = hepta.build_model(cfg, seed=0).eval()
    assert hepta.count_params(cfg).total == sum(p.numel() for p in model.parameters())
    ids = torch.randint(0, 300, (2, 20))
    with torch.no_grad():
        full = model(ids)
    decoded, cache = decoded_logits(model, ids, prefill=7)
    torch.testing.assert_close(decoded, full, atol=1e-5, rtol=1e-5)
    # the compressed cache: latents [C] and shared rope keys [R] per token, tokens first
    assert [b.shape for b in cache.buffers] == [(cfg.num_layers, 2, 20, 16), (cfg.num_layers, 2, 20, 8)]

    model.train()
    logits = model(ids)
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids.flatten()).backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if ".attn." in n)
