"""The analytic model, checked against hand computations and the model's own parameter count."""

import pytest

import hepta
from hepta.config import count_params, preset_names
from hepta.scale.flops import inference_flops_per_token, train_flops_per_token
from hepta.scale.gpus import GPUS, get_gpu
from hepta.scale.inference import inference_plan, kv_bytes_per_token, weight_bytes_read
from hepta.scale.memory import (Layout, block_params, expert_params_per_rank, expert_shard_dim, root_params,
                                stage_layers, tp_local_config, train_memory)
from hepta.scale.planner import PlanRequest, make_plan


@pytest.mark.parametrize("name", preset_names())
def test_tensor_lists_add_up_to_the_exact_parameter_count(name):
    cfg = hepta.get_preset(name)
    blocks = sum(sum(block_params(cfg, layer)) for layer in range(cfg.num_layers))
    assert blocks + root_params(cfg) == count_params(cfg).total


def test_gpu_table_has_the_four_gpus_with_sources():
    assert {"h100", "h200", "b200", "h800"} <= set(GPUS)
    for gpu in GPUS.values():
        assert gpu.bf16_flops > 5e14 and gpu.hbm_bytes >= 80e9 and gpu.board_watts >= 700
        assert "datasheet" in gpu.source or "DeepSeek" in gpu.source
    assert get_gpu("H200").hbm_bytes == 141e9


def test_flops_per_token_by_hand_for_llama():
    cfg = hepta.get_preset("llama3-405b")
    n = count_params(cfg).total - cfg.vocab_size * cfg.dim  # the input embedding is a lookup
    attention = 2 * 126 * 128 * (128 + 128) * 8192  # scores and values over 8192 keys, all layers, forward
    assert train_flops_per_token(cfg, 8192) == 6 * n + 3 * attention
    assert inference_flops_per_token(cfg, 8192) == 2 * n + attention


def test_kv_cache_per_token_by_hand():
    assert kv_bytes_per_token(hepta.get_preset("grok5-7t")) == 96 * 2 * 16 * 128 * 2  # K and V, 16 KV heads, bf16
    assert kv_bytes_per_token(hepta.get_preset("deepseek-v3")) == 61 * (512 + 64) * 2  # MLA latent + rope key


def test_batch_one_decode_reads_exactly_the_active_weights():
    cfg = hepta.get_preset("grok5-7t")
    assert weight_bytes_read(cfg, 1) == pytest.approx(count_params(cfg).active * 2)
    assert weight_bytes_read(cfg, 10_000) == pytest.approx(count_params(cfg).total * 2)
    plan = inference_plan(cfg, get_gpu("h200"), context=8192)
    assert plan.gpus_for_weights * 0.9 * 141e9 >= count_params(cfg).total * 2
    assert plan.replica_gpus % 8 == 0 and plan.decode_tokens_per_s_batch > plan.decode_tokens_per_s_batch1


def test_sharded_state_is_16_bytes_per_parameter_over_the_group():
    cfg = hepta.get_preset("mixtral-8x7b")  # every row count divides 8 evenly
    memory = train_memory(cfg, Layout(ep=8, fsdp=8), 4096, checkpointing=True)
    assert memory.parameters + memory.gradients + memory.optimizer == count_params(cfg).total * 16 / 8


def test_checkpointing_keeps_only_block_inputs():
    cfg = hepta.get_preset("grok5-7t")
    layout = Layout(tp=2, ep=32, fsdp=8192)
    with_ac = train_memory(cfg, layout, 8192, checkpointing=True)
    without = train_memory(cfg, layout, 8192, checkpointing=False)
    assert without.activations > 10 * with_ac.activations
    assert with_ac.activations > 96 * 2 * 24576 * 8192  # every block's bf16 input is kept
    assert train_memory(cfg, layout, 4096, checkpointing=False).activations == pytest.approx(without.activations / 2)


def test_tensor_parallel_rank_holds_a_slice_of_heads_widths_and_vocabulary():
    cfg = hepta.get_preset("grok5-7t")
    local = tp_local_config(cfg, 8)
    assert (local.attention.num_heads, local.attention.num_kv_heads, local.moe.expert_hidden_dim,
            local.moe.dense_hidden_dim, local.vocab_size, local.dim) == (24, 2, 3680, 12288, 16384, 24576)
    # norms and routers stay whole on every rank; everything else divides
    assert 8 * count_params(local).total == pytest.approx(count_params(cfg).total, rel=1e-3)


def test_expert_shards_split_evenly_or_with_the_least_padding():
    assert expert_shard_dim((8, 29440, 24576), 4) == 0
    assert expert_shard_dim((2, 29440, 24576), 256) == 1
    assert expert_shard_dim((2, 29440, 24576), 625) == 0  # FSDP2 shards unevenly only on dim 0


def test_one_rank_holds_every_routed_expert_weight_of_a_layer():
    cfg = hepta.get_preset("small")  # dim == 2 x expert width: gate_up_proj and down_proj have the same dims
    assert cfg.dim == 2 * cfg.moe.expert_hidden_dim
    assert expert_params_per_rank(cfg, 1, 1) == cfg.moe.num_experts * 3 * cfg.dim * cfg.moe.expert_hidden_dim


def test_pipeline_stages_cover_the_layers_once():
    cfg = hepta.get_preset("deepseek-v3")
    stages = stage_layers(cfg, 8)
    assert [layer for stage in stages for layer in stage] == list(range(61))
    assert max(map(len, stages)) - min(map(len, stages)) == 1


def test_a_small_model_trains_without_recomputation_or_model_parallelism():
    plan = make_plan(PlanRequest(hepta.get_preset("small"), "small", 8, get_gpu("h100"), 1e9))
    assert (plan.fit.layout.tp, plan.fit.layout.pp, plan.fit.checkpointing) == (1, 1, False)
    assert plan.fit.layout.fsdp == 8  # the whole world when it is below the usual shard group


def test_days_scale_inversely_with_gpus_and_mfu():
    cfg = hepta.get_preset("deepseek-v3")
    base = make_plan(PlanRequest(cfg, "deepseek-v3", 2048, get_gpu("h800"), 14.8e12, mfu=0.4))
    double = make_plan(PlanRequest(cfg, "deepseek-v3", 4096, get_gpu("h800"), 14.8e12, mfu=0.4))
    faster = make_plan(PlanRequest(cfg, "deepseek-v3", 2048, get_gpu("h800"), 14.8e12, mfu=0.5))
    assert double.train_days == pytest.approx(base.train_days / 2)
    assert faster.train_days == pytest.approx(base.train_days * 0.4 / 0.5)
    assert double.energy.energy_mwh == pytest.approx(base.energy.energy_mwh)  # same GPU-hours, same energy


@pytest.mark.parametrize("field, value, words", [("pue", 0.9, "--pue 0.9 is below 1"),
                                                 ("min_shard_group", 0, "--min-shard-group must be a positive")])
def test_make_plan_refuses_a_pue_below_one_and_an_empty_shard_group(field, value, words):
    req = PlanRequest(hepta.get_preset("small"), "small", 8, get_gpu("h100"), 1e9, **{field: value})
    with pytest.raises(hepta.errors.HeptaError, match=words):
        make_plan(req)
