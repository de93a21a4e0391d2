"""DeepSeek-V3 folders (multi-head latent attention, YaRN, group-limited sigmoid routing, shared
experts, dense first layers) open in hepta with the logits and greedy tokens of transformers."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

import hepta
from helpers import greedy_pair, max_logit_difference, random_ids
from hepta.errors import HeptaError
from hepta.model.mla import MultiHeadLatentAttention

SHAPE = dict(vocab_size=160, hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
             intermediate_size=96, moe_intermediate_size=16, kv_lora_rank=32, qk_nope_head_dim=16,
             qk_rope_head_dim=8, v_head_dim=12, max_position_embeddings=256,
             pad_token_id=None, eos_token_id=None, bos_token_id=None)
YARN = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 64,
        "mscale": 1.0, "mscale_all_dim": 1.0, "beta_fast": 32, "beta_slow": 1}

CASES = {
    # DeepSeek-V3 as released, scaled down: low-rank queries, YaRN with mscale == mscale_all_dim
    "qlora-yarn-8e-top2-groups": dict(q_lora_rank=24, n_routed_experts=8, num_experts_per_tok=2, n_group=4,
                                      topk_group=2, first_k_dense_replace=1, n_shared_experts=2,
                                      routed_scaling_factor=2.5, norm_topk_prob=True, rope_parameters=YARN),
    # DeepSeek-V2-Lite-like: full-rank queries, plain RoPE, two dense layers, unnormalised gates
    "no-qlora-6e-top3": dict(q_lora_rank=None, n_routed_experts=6, num_experts_per_tok=3, n_group=2, topk_group=1,
                             first_k_dense_replace=2, n_shared_experts=1, routed_scaling_factor=1.0,
                             norm_topk_prob=False, rms_norm_eps=1e-5,
                             rope_parameters={"rope_type": "default", "rope_theta": 5e4}),
    # YaRN whose cos/sin factor does not cancel, and checkpoints stored without the rope interleave
    "yarn-mscale-no-interleave": dict(q_lora_rank=20, n_routed_experts=12, num_experts_per_tok=4, n_group=3,
                                      topk_group=2, first_k_dense_replace=1, n_shared_experts=1,
                                      routed_scaling_factor=1.5, norm_topk_prob=True, rope_interleave=False,
                                      rope_parameters={**YARN, "factor": 8.0, "mscale": 0.707,
                                                       "original_max_position_embeddings": 32}),
}


def save_hf(case: str, folder):
    torch.manual_seed(0)
    model = DeepseekV3ForCausalLM(DeepseekV3Config(**{**SHAPE, **CASES[case]})).eval()
    with torch.no_grad():  # a trained-looking balancing bias, so selection and gate weights differ
        for layer in model.model.layers[model.config.first_k_dense_replace:]:
            layer.mlp.gate.e_score_correction_bias.normal_(std=0.05)
    model.save_pretrained(folder)
    return model


@pytest.fixture(scope="module", params=list(CASES))
def pair(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    return save_hf(request.param, folder), hepta.load(folder), folder


@pytest.mark.parametrize("seq_len", [1, 7, 33, 90])
def test_logits_match_transformers(pair, seq_len):
    hf, ours, _ = pair
    assert max_logit_difference(hf, ours, random_ids(160, 2, seq_len, seed=seq_len)) <= 1e-4


def test_32_greedy_tokens_match_transformers_generate_from_the_compressed_cache(pair):
    hf, ours, _ = pair
    expected, got, cache = greedy_pair(hf, ours, random_ids(160, 1, 5, seed=1), num_tokens=32)
    cfg = ours.config  # decoded from the latents and shared rope keys alone, C + R values per token and layer
    assert [b.shape[3:] for b in cache.buffers] == [(cfg.attention.kv_lora_rank,), (cfg.attention.qk_rope_head_dim,)]
    assert got == expected


def test_config_maps_deepseek_fields(pair):
    hf, ours, _ = pair
    cfg, hc = ours.config, hf.config
    assert cfg.attention.kind == "mla" and isinstance(ours.layers[0].attn, MultiHeadLatentAttention)
    assert (cfg.attention.q_lora_rank, cfg.attention.kv_lora_rank) == (hc.q_lora_rank, hc.kv_lora_rank)
    assert (cfg.moe.num_experts, cfg.moe.top_k, cfg.router.num_expert_groups, cfg.router.num_limited_groups) == (
        hc.n_routed_experts, hc.num_experts_per_tok, hc.n_group, hc.topk_group)
    assert (cfg.moe.num_dense_layers, cfg.moe.num_shared_experts, cfg.router.route_scale) == (
        hc.first_k_dense_replace, hc.n_shared_experts, hc.routed_scaling_factor)
    assert cfg.router.scoring == "sigmoid" and cfg.rope.type == hc.rope_parameters["rope_type"]
    assert hepta.count_params(cfg).total == sum(p.numel() for p in ours.parameters())
    bias = hf.model.layers[-1].mlp.gate.e_score_correction_bias
    torch.testing.assert_close(ours.layers[-1].ffn.router.expert_bias, bias)


def test_multi_token_prediction_layers_are_skipped_and_unknown_rope_types_refused(tmp_path):
    folder = tmp_path / "m"
    save_hf("no-qlora-6e-top3", folder)
    weights = load_file(str(folder / "model.safetensors"))
    # released checkpoints carry the MTP module as one extra layer, which hepta does not run
    mtp = {"model.layers.3.eh_proj.weight": torch.zeros(64, 128),
           "model.layers.3.mlp.experts.0.down_proj.weight": torch.zeros(64, 16)}
    save_file({**weights, **mtp}, str(folder / "model.safetensors"))
    hepta.load(folder)

    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "rope_parameters": {"rope_type": "longrope"}}))
    with pytest.raises(HeptaError, match="rope_parameters.rope_type='longrope'.*default, linear, yarn"):
        hepta.load(folder)
    (folder / "config.json").write_text(json.dumps({**config, "quantization_config": {"quant_method": "fp8"}}))
    with pytest.raises(HeptaError, match="quantization_config.*'fp8'.*bf16"):
        hepta.load(folder)
