"""hepta models written as Hugging Face folders open in transformers with the same logits.

Small random models are built with transformers' own classes (no hub) or with
`hepta.build_model`, written with `hf_save.save_hf`, and opened with `from_pretrained`.
"""

import json
import subprocess
import sys

import pytest
import torch
from transformers import (AutoModelForCausalLM, MixtralConfig, MixtralForCausalLM, Qwen2MoeConfig,
                          Qwen2MoeForCausalLM)

import hepta
from hepta.errors import HeptaError
from hepta.interop.hf_save import INDEX_FILE, save_hf
from test_hf_deepseek import CASES as DEEPSEEK_CASES
from test_hf_load import CASES as LOAD_CASES
from test_hf_load import SHAPE
from test_hf_load import save_hf as save_transformers_model
from test_hf_deepseek import save_hf as save_deepseek

# the loader's cases, plus a Mixtral with its own head_dim, tied embeddings and another rope theta
CASES = {name: LOAD_CASES[name] for name in ("mixtral-4e-top2", "olmoe-8e-top2", "olmoe-6e-top3-normed",
                                             "qwen2_moe-dense-layer-1", "qwen2_moe-step-2-normed",
                                             "qwen3_moe-head-dim-32-normed", "qwen3_moe-dense-layer-0-square",
                                             "gpt_oss-window-4-yarn", "gpt_oss-window-6-no-attention-bias",
                                             "qwen3_5_moe_text-3-linear-1-full", "qwen3_5_moe-multimodal-folder")}
CASES["mixtral-8e-top3-theta-hd"] = (MixtralConfig, MixtralForCausalLM, dict(
    intermediate_size=32, num_local_experts=8, num_experts_per_tok=3, num_hidden_layers=3, head_dim=8,
    tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 5e5}))

# A representable hepta config per target (the shapes of hepta's own defaults, made small).
HEPTA = {"vocab_size": 160, "dim": 64, "num_layers": 2, "attention.num_heads": 4, "attention.num_kv_heads": 2,
         "attention.head_dim": 16, "max_seq_len": 128, "moe.num_experts": 4, "moe.top_k": 2,
         "moe.expert_hidden_dim": 32, "router.scoring": "softmax"}
HEPTA_TARGETS = {
    "mixtral": {"attention.qk_norm": False, "router.norm_topk_prob": True, "rope.theta": 1e6, "norm_eps": 1e-5,
                "attention.head_dim": 24},
    "olmoe": {"attention.qk_norm": True, "attention.qk_norm_per_head": False, "router.norm_topk_prob": False,
              "tie_embeddings": True},
    "qwen2_moe": {"attention.qk_norm": False, "attention.qkv_bias": True, "moe.num_shared_experts": 1,
                  "moe.shared_expert_hidden_dim": 48, "moe.shared_expert_gate": True, "moe.num_dense_layers": 1,
                  "moe.dense_hidden_dim": 80, "num_layers": 3},
    "qwen3_moe": {"attention.qk_norm": True, "attention.qk_norm_per_head": True, "router.norm_topk_prob": True,
                  "moe.dense_layers": (1,), "moe.dense_hidden_dim": 48, "num_layers": 3, "attention.head_dim": 24},
    "gpt_oss": {"attention.qk_norm": False, "attention.qkv_bias": True, "attention.o_bias": True, "attention.sinks": True,
                "attention.sliding_window": 3, "attention.sliding_window_layers": (1,), "router.logit_bias": True,
                "router.norm_topk_prob": True, "moe.expert_proj_bias": True, "moe.expert_activation": "clamped_swiglu",
                "moe.swiglu_limit": 0.05, "rope.type": "yarn", "rope.factor": 4.0, "rope.original_max_len": 32,
                "rope.truncate": False},
    "qwen3_5_moe_text": {"zero_centered_norms": True, "attention.gated": True, "attention.qk_norm": True,
                         "attention.qk_norm_per_head": True, "attention.rotary_dim": 8, "num_layers": 3,
                         "attention.linear_layers": (0, 2), "attention.linear_num_key_heads": 2,
                         "attention.linear_num_value_heads": 4, "attention.linear_key_head_dim": 8,
                         "attention.linear_value_head_dim": 8, "moe.num_shared_experts": 1,
                         "moe.shared_expert_gate": True, "router.norm_topk_prob": True},
}


def config(*changes: dict) -> hepta.ModelConfig:
    return hepta.ModelConfig().with_changes({k: v for change in changes for k, v in change.items()})


def logits(model, seq_len=11, seed=0):
    ids = torch.randint(0, 160, (2, seq_len), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        out = model(ids)
    return getattr(out, "logits", out)


def from_pretrained(folder):
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


@pytest.mark.parametrize("case", list(CASES))
def test_hf_to_hepta_to_hf_keeps_the_logits(case, tmp_path):
    config_cls, model_cls, extra = CASES[case]
    if case in LOAD_CASES:
        original = save_transformers_model(case, tmp_path / "hf")
    else:
        torch.manual_seed(0)
        original = model_cls(config_cls(**{**SHAPE, **extra})).eval()
        original.save_pretrained(tmp_path / "hf")
    ours = hepta.load(tmp_path / "hf")
    save_hf(ours, tmp_path / "back")
    written = json.loads((tmp_path / "back" / "config.json").read_text())
    # Qwen3.5-MoE comes back as its language model alone
    assert written["model_type"] == {"qwen3_5_moe": "qwen3_5_moe_text"}.get(original.config.model_type,
                                                                         original.config.model_type)
    reloaded = from_pretrained(tmp_path / "back")
    for seed, seq_len in ((0, 11), (1, 1)):
        assert (logits(reloaded, seq_len, seed) - logits(original, seq_len, seed)).abs().max().item() <= 1e-4


@pytest.mark.parametrize("target", list(HEPTA_TARGETS))
def test_hepta_model_opens_in_transformers_with_its_logits(target, tmp_path):
    cfg = config(HEPTA, HEPTA_TARGETS[target])
    model = hepta.build_model(cfg, seed=3).eval()
    save_hf(model, tmp_path / "hf", model_type=target, max_shard_bytes=64 * 1024)  # forces several shards
    index = json.loads((tmp_path / "hf" / INDEX_FILE).read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert not (tmp_path / "hf" / "model.safetensors").exists()
    hf = from_pretrained(tmp_path / "hf")
    assert type(hf).__name__ == {"mixtral": "MixtralForCausalLM", "olmoe": "OlmoeForCausalLM",
                                 "qwen2_moe": "Qwen2MoeForCausalLM", "qwen3_moe": "Qwen3MoeForCausalLM",
                                 "gpt_oss": "GptOssForCausalLM", "qwen3_5_moe_text": "Qwen3_5MoeForCausalLM"}[target]
    assert (logits(hf) - logits(model)).abs().max().item() <= 1e-4
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # no temporary folder left beside it


def test_type_is_inferred_from_the_qk_norm(tmp_path):
    for target, extra in HEPTA_TARGETS.items():
        model = hepta.build_model(config(HEPTA, extra), seed=0)
        save_hf(model, tmp_path / target)
        assert json.loads((tmp_path / target / "config.json").read_text())["model_type"] == target


@pytest.mark.parametrize("target, change, field", [
    ("mixtral", {"moe.num_shared_experts": 1}, "moe.num_shared_experts"),
    ("mixtral", {"moe.num_dense_layers": 1}, "moe.num_dense_layers"),
    ("mixtral", {"router.scoring": "sigmoid"}, "router.scoring"),
    ("mixtral", {"router.norm_topk_prob": False}, "router.norm_topk_prob"),
    ("mixtral", {"attention.qk_norm": True}, "attention.qk_norm"),
    ("mixtral", {"router.capacity_factor": 1.25}, "router.capacity_factor"),
    ("mixtral", {"router.route_scale": 2.0}, "router.route_scale"),
    ("mixtral", {"router.num_expert_groups": 2, "router.num_limited_groups": 1, "moe.top_k": 1},
     "router.num_limited_groups"),
    ("mixtral", {"moe.dense_layers": (1,)}, "moe.dense_layers"),
    ("mixtral", {"moe.layer_step": 2}, "moe.layer_step"),
    ("olmoe", {"moe.shared_expert_hidden_dim": 48}, "moe.shared_expert_hidden_dim"),
    ("olmoe", {"attention.qkv_bias": True}, "attention.qkv_bias"),
    ("olmoe", {"attention.qk_norm": True, "attention.qk_norm_per_head": True}, "attention.qk_norm_per_head"),
    ("olmoe", {"attention.qk_norm": False}, "attention.qk_norm"),
    ("olmoe", {"attention.head_dim": 8}, "attention.head_dim"),
    ("qwen3_moe", {"attention.qk_norm_per_head": False}, "attention.qk_norm_per_head"),
    ("qwen3_moe", {"moe.num_shared_experts": 1}, "moe.num_shared_experts"),
    ("qwen3_moe", {"attention.qkv_bias": True}, "attention.qkv_bias"),
    ("qwen3_moe", {"router.scoring": "sigmoid"}, "router.scoring"),
    ("qwen3_moe", {"attention.sinks": True}, "attention.sinks"),
    ("mixtral", {"attention.sliding_window": 8, "attention.sliding_window_layers": (0,)},
     "attention.sliding_window"),
    ("gpt_oss", {"attention.o_bias": False}, "attention.o_bias"),
    ("gpt_oss", {"moe.expert_activation": "swiglu"}, "moe.expert_activation"),
    ("gpt_oss", {"router.logit_bias": False}, "router.logit_bias"),
    ("gpt_oss", {"moe.num_dense_layers": 1}, "moe.num_dense_layers"),
    ("qwen3_5_moe_text", {"zero_centered_norms": False}, "zero_centered_norms"),
    ("qwen3_5_moe_text", {"moe.shared_expert_gate": False}, "moe.shared_expert_gate"),
    ("qwen3_moe", {"attention.linear_layers": (0,)}, "attention.linear_layers"),
])
def test_unrepresentable_configs_are_refused_by_name(target, change, field, tmp_path):
    cfg = config(HEPTA, HEPTA_TARGETS[target], change)
    with torch.device("meta"):
        model = hepta.build_model(cfg)
    with pytest.raises(HeptaError, match=rf"^{field}=.*{target}, which supports only"):
        save_hf(model, tmp_path / "out", model_type=target)
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_a_field_the_writer_does_not_know_is_refused_unless_default(tmp_path, monkeypatch):
    from hepta.interop import hf_save

    monkeypatch.setattr(hf_save, "_CHECKED_FIELDS", hf_save._CHECKED_FIELDS - {"router.z_loss_coef"})
    with torch.device("meta"):
        model = hepta.build_model(config(HEPTA, HEPTA_TARGETS["mixtral"], {"router.z_loss_coef": 1e-4}))
    with pytest.raises(HeptaError, match="router.z_loss_coef=0.0001 .* does not map router.z_loss_coef"):
        save_hf(model, tmp_path / "out")


def test_an_ungated_shared_expert_has_no_inferred_target_and_expert_bias_is_refused(tmp_path):
    # hepta's own presets: QK-norm per head (qwen3_moe) but a shared expert without a gate, which it lacks
    with torch.device("meta"):
        model = hepta.build_model(config(HEPTA, {"attention.qk_norm": True, "attention.qk_norm_per_head": True,
                                                 "moe.num_shared_experts": 1}))
    with pytest.raises(HeptaError, match="moe.num_shared_experts=1 cannot be written as qwen3_moe"):
        save_hf(model, tmp_path / "out")
    model = hepta.build_model(config(HEPTA, HEPTA_TARGETS["mixtral"]), seed=0)
    model.moe_layers()[1].router.expert_bias[2] = 0.5
    with pytest.raises(HeptaError, match="layer 1 has a nonzero router expert_bias"):
        save_hf(model, tmp_path / "out")
    with pytest.raises(HeptaError, match="'gpt2' cannot be written"):
        save_hf(model, tmp_path / "out", model_type="gpt2")


def test_existing_folder_is_refused_unless_overwrite(tmp_path):
    model = hepta.build_model(config(HEPTA, HEPTA_TARGETS["mixtral"]), seed=0)
    (tmp_path / "empty").mkdir()
    save_hf(model, tmp_path / "empty")  # an empty folder is fine
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(HeptaError, match="exists and is not empty"):
        save_hf(model, tmp_path / "full")
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]
    save_hf(model, tmp_path / "full", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["config.json", "model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "full"]


# --- hepta convert -------------------------------------------------------------------------


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "hepta", *args], capture_output=True, text=True, timeout=300)


def assert_one_line_error(proc, *words):
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_convert_both_directions(tmp_path):
    config_cls, model_cls, extra = CASES["olmoe-6e-top3-normed"]
    torch.manual_seed(0)
    original = model_cls(config_cls(**{**SHAPE, **extra})).eval()
    original.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "tokenizer_config.json").write_text('{"model_max_length": 256}')

    proc = run_cli("convert", "--from", str(tmp_path / "hf"), "--to", str(tmp_path / "hepta"))
    assert proc.returncode == 0, proc.stderr
    assert "(olmoe)" in proc.stdout and "(hepta)" in proc.stdout
    assert json.loads((tmp_path / "hepta" / "config.json").read_text())["model_type"] == "hepta"
    for name in ("tokenizer_config.json", "generation_config.json"):
        assert (tmp_path / "hepta" / name).read_bytes() == (tmp_path / "hf" / name).read_bytes()
    ours = hepta.load(tmp_path / "hepta")
    assert (logits(ours) - logits(original)).abs().max().item() <= 1e-4

    proc = run_cli("convert", "--from", str(tmp_path / "hepta"), "--to", str(tmp_path / "hf2"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "hf2" / "tokenizer_config.json").is_file()
    assert (logits(from_pretrained(tmp_path / "hf2")) - logits(original)).abs().max().item() <= 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hepta", "hf", "hf2"]


def test_convert_errors_are_one_line(tmp_path):
    assert_one_line_error(run_cli("convert", "--from", str(tmp_path / "nope"), "--to", str(tmp_path / "out")),
                          "--from", "does not exist")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run_cli("convert", "--from", str(tmp_path / "empty"), "--to", str(tmp_path / "out")),
                          "--from", "config.json")
    model = hepta.build_model(config(HEPTA, HEPTA_TARGETS["olmoe"]), seed=0)
    hepta.save_model(model, tmp_path / "hepta")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert_one_line_error(run_cli("convert", "--from", str(tmp_path / "hepta"), "--to", str(tmp_path / "full")),
                          "--to", "not empty")
    assert_one_line_error(run_cli("convert", "--from", str(tmp_path / "hepta"), "--to", str(tmp_path / "mx"),
                                  "--to-type", "mixtral"), "qk_norm=True", "mixtral")
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text('{"model_type": "gpt2"}')
    assert_one_line_error(run_cli("convert", "--from", str(tmp_path / "gpt2"), "--to", str(tmp_path / "o")), "'gpt2'")
    assert not (tmp_path / "mx").exists() and not (tmp_path / "o").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# --- DeepSeek-V3 (multi-head latent attention) ---------------------------------------------

DEEPSEEK = {"vocab_size": 160, "dim": 64, "num_layers": 3, "max_seq_len": 128,
            "attention.num_heads": 4, "attention.qk_norm": False, "attention.kind": "mla", "attention.q_lora_rank": 24,
            "attention.kv_lora_rank": 32, "attention.qk_rope_head_dim": 8, "attention.qk_nope_head_dim": 16,
            "attention.v_head_dim": 12, "moe.num_experts": 8, "moe.top_k": 2, "moe.expert_hidden_dim": 16,
            "moe.num_shared_experts": 2, "moe.num_dense_layers": 1, "moe.dense_hidden_dim": 48,
            "router.scoring": "sigmoid", "router.route_scale": 2.5, "router.num_expert_groups": 4,
            "router.num_limited_groups": 2, "rope.type": "yarn", "rope.factor": 4.0, "rope.original_max_len": 32,
            "rope.mscale": 0.707, "rope.mscale_all_dim": 1.0}


@pytest.mark.parametrize("case", list(DEEPSEEK_CASES))
def test_deepseek_v3_to_hepta_to_hf_keeps_the_logits(case, tmp_path):
    # low-rank and full-rank queries, plain RoPE and YaRN, checkpoints with and without the rope interleave
    original = save_deepseek(case, tmp_path / "hf")
    ours = hepta.load(tmp_path / "hf")
    save_hf(ours, tmp_path / "back")  # the type is inferred from attention.kind="mla"
    written = json.loads((tmp_path / "back" / "config.json").read_text())
    assert written["model_type"] == "deepseek_v3" and written["rope_interleave"] is True
    assert written["rope_parameters"]["rope_type"] == original.config.rope_parameters["rope_type"]
    reloaded = from_pretrained(tmp_path / "back")
    assert type(reloaded).__name__ == "DeepseekV3ForCausalLM"
    torch.testing.assert_close(reloaded.model.layers[-1].mlp.gate.e_score_correction_bias,
                               original.model.layers[-1].mlp.gate.e_score_correction_bias)
    for seed, seq_len in ((0, 11), (1, 1), (2, 90)):
        assert (logits(reloaded, seq_len, seed) - logits(original, seq_len, seed)).abs().max().item() <= 1e-4


@pytest.mark.parametrize("q_lora_rank", [24, None])
def test_hepta_mla_model_with_routing_bias_opens_in_transformers_with_its_logits(q_lora_rank, tmp_path):
    model = hepta.build_model(config(DEEPSEEK, {"attention.q_lora_rank": q_lora_rank}), seed=5).eval()
    with torch.no_grad():  # a trained balancing bias is part of the model for deepseek_v3
        for moe in model.moe_layers():
            moe.router.expert_bias.normal_(std=0.05)
    save_hf(model, tmp_path / "hf", max_shard_bytes=64 * 1024)
    assert len(set(json.loads((tmp_path / "hf" / INDEX_FILE).read_text())["weight_map"].values())) > 1
    hf = from_pretrained(tmp_path / "hf")
    for seed, seq_len in ((0, 11), (1, 70)):
        assert (logits(hf, seq_len, seed) - logits(model, seq_len, seed)).abs().max().item() <= 1e-4


@pytest.mark.parametrize("change, field", [
    ({"router.scoring": "softmax"}, "router.scoring"),
    ({"moe.num_shared_experts": 0}, "moe.num_shared_experts"),
    ({"moe.shared_expert_hidden_dim": 40}, "moe.shared_expert_hidden_dim"),
    ({"moe.shared_expert_gate": True}, "moe.shared_expert_gate"),
    ({"moe.dense_layers": (2,)}, "moe.dense_layers"),
    ({"moe.layer_step": 2}, "moe.layer_step"),
    ({"router.capacity_factor": 1.25}, "router.capacity_factor"),
    ({"router.num_expert_groups": 8, "router.num_limited_groups": 4}, "router.num_expert_groups"),
    ({"rope.type": "linear", "rope.mscale_all_dim": 1.0}, "rope.mscale_all_dim"),
])
def test_unrepresentable_deepseek_configs_are_refused_by_name(change, field, tmp_path):
    with torch.device("meta"):
        model = hepta.build_model(config(DEEPSEEK, change))
    with pytest.raises(HeptaError, match=rf"^{field}=.*deepseek_v3, which supports only"):
        save_hf(model, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_mla_and_rope_scaling_are_refused_for_the_other_targets(tmp_path):
    with torch.device("meta"):
        mla = hepta.build_model(config(DEEPSEEK))
        yarn = hepta.build_model(config(HEPTA, HEPTA_TARGETS["mixtral"], {"rope.type": "yarn", "rope.factor": 2.0}))
        gqa = hepta.build_model(config(HEPTA, HEPTA_TARGETS["mixtral"]))
    with pytest.raises(HeptaError, match=r"^attention.kind='mla' cannot be written as mixtral"):
        save_hf(mla, tmp_path / "out", model_type="mixtral")
    with pytest.raises(HeptaError, match=r"^rope.type='yarn' cannot be written as mixtral"):
        save_hf(yarn, tmp_path / "out")
    with pytest.raises(HeptaError, match=r"^attention.kind='gqa' cannot be written as deepseek_v3"):
        save_hf(gqa, tmp_path / "out", model_type="deepseek_v3")
    assert list(tmp_path.iterdir()) == []


def test_qwen2_moe_with_a_head_dim_other_than_dim_over_heads_round_trips(tmp_path):
    torch.manual_seed(0)
    original = Qwen2MoeForCausalLM(Qwen2MoeConfig(**{**SHAPE, **CASES["qwen2_moe-dense-layer-1"][2], "head_dim": 32})).eval()
    original.save_pretrained(tmp_path / "hf")
    save_hf(hepta.load(tmp_path / "hf"), tmp_path / "back")
    assert (logits(from_pretrained(tmp_path / "back")) - logits(original)).abs().max().item() <= 1e-4
