import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import hepta
from hepta.config import ModelConfig, count_params, param_shapes, preset_names


@pytest.mark.parametrize("name", preset_names())
def test_analytic_count_equals_built_model_for_every_preset(name):
    cfg = hepta.get_preset(name)
    with torch.device("meta"):
        model = hepta.build_model(cfg)
    built = sum(p.numel() for p in model.parameters())  # shared (tied) tensors counted once
    assert count_params(cfg).total == built


VARIANTS = [
    {"tie_embeddings": True}, {"attention.qk_norm": False}, {"attention.qk_norm_per_head": False},
    {"moe.num_dense_layers": 4}, {"moe.num_shared_experts": 3},
    {"attention.qkv_bias": True, "moe.shared_expert_hidden_dim": 40, "moe.shared_expert_gate": True,
     "moe.layer_step": 2, "moe.dense_layers": (3,), "moe.num_dense_layers": 0},
    {"attention.kind": "mla", "attention.qk_norm": False, "attention.q_lora_rank": 24, "attention.kv_lora_rank": 16,
     "attention.qk_rope_head_dim": 8, "attention.qk_nope_head_dim": 16, "attention.v_head_dim": 12},
    {"attention.kind": "mla", "attention.qk_norm": False, "attention.q_lora_rank": None, "attention.kv_lora_rank": 20,
     "attention.qk_rope_head_dim": 4, "attention.qk_nope_head_dim": 8, "attention.v_head_dim": 16,
     "rope.type": "yarn", "rope.factor": 8.0},
]


@pytest.mark.parametrize("overrides", VARIANTS)
def test_analytic_count_equals_built_model_for_variants(overrides):
    cfg = hepta.get_preset("tiny").with_changes(overrides)
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
    assert (cfg.num_layers, cfg.dim, cfg.attention.num_heads, cfg.attention.num_kv_heads, cfg.moe.num_experts,
            cfg.moe.top_k, cfg.moe.expert_hidden_dim, cfg.vocab_size) == (64, 6144, 48, 8, 8, 2, 32768, 131072)
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
    ("attention.num_kv_heads", 4, "divide num_heads"),
    ("moe.top_k", 99, "between 1 and num_experts"),
    ("router.scoring", "relu", "softmax"),
    ("attention.head_dim", 33, "even"),
    ("router.capacity_factor", -1.0, "dropless"),
    ("router.num_expert_groups", 3, "divide moe.num_experts"),
    ("dim", 0, "positive"),
    ("moe.top_k", 1.5, "integer"),
    ("moe.num_experts", 4.0, "integer"),
    ("attention.qk_norm", 1, "true or false"),
    ("rope.type", "ntk", "default"),
    ("attention.kind", "mha", "mla"),
    ("rope.attention_factor", "big", "a number or null"),
    ("attention.q_lora_rank", 2.5, "an integer or null"),
    ("moe.dense_layers", (1, "2"), "list of integers"),
    ("moe.dense_layers", (9,), "below num_layers=4"),
    ("moe.num_dense_layers", 5, "between 0 and num_layers=4"),
    ("norm_eps", True, "a number"),
])
def test_invalid_values_name_field_value_and_what_is_allowed(field, value, words):
    with pytest.raises(ValueError) as err:
        hepta.get_preset("tiny").with_changes({field: value})
    message = str(err.value)
    assert f"ModelConfig.{field}={value!r}" in message and words in message


def test_unknown_field_names_the_closest_ones_and_where_all_are_listed():
    with pytest.raises(ValueError, match="'moe.num_expert'.*moe.num_experts") as raised:
        hepta.get_preset("tiny").with_changes({"moe.num_expert": 4})
    message = str(raised.value)
    assert "`hepta info tiny --json`" in message
    assert "rope.theta" not in message and message.count(".") < 10  # a few close names, not all ~50
    with pytest.raises(ValueError, match=r"'rope_thta'.*the closest fields are rope\.theta"):
        hepta.get_preset("tiny").with_changes({"rope_thta": 1e4})  # flat names of the first format are matched too
    with pytest.raises(ValueError, match=r"'zzz'; use a ModelConfig field name \(every field is under"):
        hepta.get_preset("tiny").with_changes({"zzz": 1})
    with pytest.raises(ValueError, match="unknown ModelConfig field"):
        hepta.get_preset("tiny").replace(experts=4)


def test_flat_names_of_the_first_format_are_taken_as_their_dotted_names():
    cfg = hepta.get_preset("tiny")
    assert cfg.with_changes({"num_experts": 8, "rope_theta": 5e5, "attention": "mla", "qk_norm": False,
                             "moe_layer_step": 2, "router_scoring": "softmax"}) == \
        cfg.with_changes({"moe.num_experts": 8, "rope.theta": 5e5, "attention.kind": "mla",
                          "attention.qk_norm": False, "moe.layer_step": 2, "router.scoring": "softmax"})


def test_replace_takes_a_section_or_a_dict_of_its_changes():
    cfg = hepta.get_preset("tiny")
    by_dict = cfg.replace(num_layers=6, moe={"num_experts": 32})
    assert by_dict == cfg.replace(num_layers=6, moe=cfg.moe.replace(num_experts=32))
    assert (by_dict.num_layers, by_dict.moe.num_experts, by_dict.moe.top_k) == (6, 32, cfg.moe.top_k)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(hepta.HeptaError, match="tiny, small"):
        hepta.get_preset("grok-9")


@pytest.mark.parametrize("name", preset_names())
def test_config_round_trips_through_json_in_sections(name):
    cfg = hepta.get_preset(name)
    written = json.loads(json.dumps(cfg.to_dict()))
    assert {"attention", "rope", "moe", "router"} <= {k for k, v in written.items() if isinstance(v, dict)}
    assert ModelConfig.from_dict(written) == cfg


FIXTURES_V1 = Path(__file__).parent / "fixtures" / "config_v1"
# What each flat config.json in FIXTURES_V1 was written from (see expected_counts.json for its counts then).
V1_SOURCES = {
    # the first format had no code blocks: grok5-7t's came later
    "tiny": ("tiny", {}), "deepseek-v3": ("deepseek-v3", {}), "grok5-7t": ("grok5-7t", {"codes.image": 0, "codes.audio": 0}),
    "llama3-405b": ("llama3-405b", {}),
    "tiny-mla": ("tiny", {"attention.kind": "mla", "attention.qk_norm": False, "attention.q_lora_rank": 24,
                          "attention.kv_lora_rank": 16, "attention.qk_rope_head_dim": 8,
                          "attention.qk_nope_head_dim": 16, "attention.v_head_dim": 12, "router.route_scale": 2.5,
                          "router.num_expert_groups": 4, "router.num_limited_groups": 2}),
    "tiny-yarn": ("tiny", {"rope.type": "yarn", "rope.factor": 4.0, "rope.original_max_len": 128,
                           "rope.beta_fast": 16.0, "rope.beta_slow": 2.0, "rope.truncate": False,
                           "rope.attention_factor": 1.2}),
    "tiny-qwen": ("tiny", {"attention.qk_norm": False, "attention.qkv_bias": True, "moe.num_dense_layers": 0,
                           "moe.layer_step": 2, "moe.dense_layers": (3,), "moe.shared_expert_hidden_dim": 40,
                           "moe.shared_expert_gate": True, "router.scoring": "softmax",
                           "router.norm_topk_prob": False, "tie_embeddings": True}),
    "tiny-olmoe": ("tiny", {"attention.qk_norm_per_head": False, "moe.num_shared_experts": 0,
                            "moe.num_dense_layers": 0, "router.capacity_factor": 1.25, "rope.type": "linear",
                            "rope.factor": 2.0}),
}


def test_every_flat_fixture_has_a_source():
    assert set(V1_SOURCES) == {p.stem for p in FIXTURES_V1.glob("*.json")} - {"expected_counts"}


@pytest.mark.parametrize("name", V1_SOURCES)
def test_flat_config_json_of_the_first_format_loads_as_the_config_it_was_written_from(name):
    loaded = ModelConfig.from_dict(json.loads((FIXTURES_V1 / f"{name}.json").read_text()))
    preset_name, changes = V1_SOURCES[name]
    assert loaded == hepta.get_preset(preset_name).with_changes(changes)
    expected = json.loads((FIXTURES_V1 / "expected_counts.json").read_text())[name]
    count = count_params(loaded)
    assert (count.total, count.active) == (expected["total"], expected["active"])
    with torch.device("meta"):
        model = hepta.build_model(loaded)
    assert sum(p.numel() for p in model.parameters()) == expected["total"]


def test_a_flat_file_with_an_unknown_field_is_refused():
    data = json.loads((FIXTURES_V1 / "tiny.json").read_text())
    with pytest.raises(ValueError, match=r"\['num_expertz'\] that no hepta config has; remove or rename them "
                                         r"\(every field is under \"config\" in `hepta info tiny --json`\)$"):
        ModelConfig.from_dict({**data, "num_expertz": 4})


@pytest.mark.parametrize("name", preset_names())
def test_param_shapes_are_the_built_models_parameters(name):
    cfg = hepta.get_preset(name)
    with torch.device("meta"):
        model = hepta.build_model(cfg)
    built = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert built == {p.name: p.shape for p in param_shapes(cfg)}


def test_llama3_405b_is_dense_with_the_published_count():
    cfg = hepta.get_preset("llama3-405b")
    count = count_params(cfg)
    assert not cfg.has_moe and count.active == count.total
    # Meta's model card: 405B; the released checkpoint holds 405.85B weights (2 x 2.10B embeddings untied)
    assert abs(count.total - 405.85e9) / 405.85e9 < 0.001
