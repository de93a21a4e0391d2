import json
import subprocess
import sys
import textwrap

import pytest
import torch

import hepta
from hepta.config import ModelConfig, count_params, preset_names


@pytest.mark.parametrize("name", preset_names())
def test_analytic_count_equals_built_model_for_every_preset(name):
    cfg = hepta.get_preset(name)
    with torch.device("meta"):
        model = hepta.build_model(cfg)
    built = sum(p.numel() for p in model.parameters())  # shared (tied) tensors counted once
    assert count_params(cfg).total == built


@pytest.mark.parametrize("overrides", [
    {"tie_embeddings": True}, {"qk_norm": False}, {"qk_norm_per_head": False}, {"num_dense_layers": 4},
    {"num_shared_experts": 3},
    {"qkv_bias": True, "shared_expert_hidden_dim": 40, "shared_expert_gate": True, "moe_layer_step": 2,
     "dense_layers": (3,), "num_dense_layers": 0},
    {"attention": "mla", "qk_norm": False, "q_lora_rank": 24, "kv_lora_rank": 16, "qk_rope_head_dim": 8,
     "qk_nope_head_dim": 16, "v_head_dim": 12},
    {"attention": "mla", "qk_norm": False, "q_lora_rank": None, "kv_lora_rank": 20, "qk_rope_head_dim": 4,
     "qk_nope_head_dim": 8, "v_head_dim": 16, "rope_type": "yarn", "rope_factor": 8.0},
])
def test_analytic_count_equals_built_model_for_variants(overrides):
    cfg = hepta.get_preset("tiny").replace(**overrides)
    model = hepta.build_model(cfg)
    assert count_params(cfg).total == sum(p.numel() for p in model.parameters())


def test_active_count_equals_parameters_one_token_touches():
    cfg = hepta.get_preset("tiny")
    model = hepta.build_model(cfg)
    model(torch.randint(0, 100, (1, 1))).sum().backward()
    embed = model.embed.weight
    touched = sum(p.numel() for p in model.parameters() if p.grad is not None and p.grad.abs().sum() > 0
                  and p.dim() < 3 and p is not embed)
    for moe in model.moe_layers():  # stacked experts: count only the slices that got gradient
        for w in (moe.experts.gate_up_proj, moe.experts.down_proj):
            touched += sum(w[e].numel() for e in range(w.shape[0]) if w.grad[e].abs().sum() > 0)
    # the whole embedding counts as active (one row is read per token), as published figures do
    touched += embed.numel()
    assert touched == count_params(cfg).active


def test_grok5_7t_is_7t_with_30_percent_active():
    count = count_params(hepta.get_preset("grok5-7t"))
    assert abs(count.total - 7.0e12) / 7.0e12 < 0.01
    assert 0.28 <= count.active_fraction <= 0.32


def test_deepseek_v3_is_671b_with_37b_active():
    count = count_params(hepta.get_preset("deepseek-v3"))
    assert abs(count.total - 671e9) / 671e9 < 0.01
    assert 36.5e9 < count.active < 38.5e9  # published: 37B activated


def test_grok1_matches_the_released_shape():
    cfg = hepta.get_preset("grok-1")
    assert (cfg.num_layers, cfg.dim, cfg.num_heads, cfg.num_kv_heads, cfg.num_experts, cfg.top_k,
            cfg.expert_hidden_dim, cfg.vocab_size) == (64, 6144, 48, 8, 8, 2, 32768, 131072)
    assert 310e9 < count_params(cfg).total < 320e9


def test_mixtral_matches_published_counts():
    count = count_params(hepta.get_preset("mixtral-8x7b"))
    assert round(count.total / 1e9, 1) == 46.7 and round(count.active / 1e9, 1) == 12.9


def test_grok5_7t_builds_on_meta_fast_and_small():
    script = textwrap.dedent("""
        import resource, time, torch, hepta
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = time.perf_counter()
        with torch.device("meta"):
            model = hepta.build_model(hepta.get_preset("grok5-7t"))
        seconds = time.perf_counter() - t
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
        n = sum(p.numel() for p in model.parameters())
        print(seconds, grown, n)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    seconds, grown, n = out.stdout.split()
    assert float(seconds) < 10
    assert int(grown) < 2**30
    assert int(n) == count_params(hepta.get_preset("grok5-7t")).total


@pytest.mark.parametrize("field, value, words", [
    ("num_kv_heads", 4, "divide num_heads"),
    ("top_k", 99, "between 1 and num_experts"),
    ("router_scoring", "relu", "softmax"),
    ("head_dim", 33, "even"),
    ("capacity_factor", -1.0, "dropless"),
    ("num_expert_groups", 3, "divide num_experts"),
    ("dim", 0, "positive"),
    ("top_k", 1.5, "integer"),
    ("num_experts", 4.0, "integer"),
    ("qk_norm", 1, "true or false"),
    ("rope_type", "ntk", "default"),
    ("attention", "mha", "mla"),
])
def test_invalid_values_name_field_value_and_what_is_allowed(field, value, words):
    with pytest.raises(ValueError) as err:
        hepta.get_preset("tiny").replace(**{field: value})
    message = str(err.value)
    assert field in message and repr(value) in message and words in message


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(hepta.HeptaError, match="tiny, small"):
        hepta.get_preset("grok-9")


def test_config_round_trips_through_json():
    cfg = hepta.get_preset("grok5-7t")
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_llama3_405b_is_dense_with_the_published_count():
    cfg = hepta.get_preset("llama3-405b")
    count = count_params(cfg)
    assert not cfg.has_moe and count.active == count.total
    # Meta's model card: 405B; the released checkpoint holds 405.85B weights (2 x 2.10B embeddings untied)
    assert abs(count.total - 405.85e9) / 405.85e9 < 0.001
