import json

import pytest

from helpers import run_cli

GROK = ("plan", "--preset", "grok5-7t", "--gpu", "h200", "--tokens", "30e12")


def test_plan_json_is_one_object_with_the_figures_a_team_needs(tmp_path):
    chart = tmp_path / "plan.png"
    out = run_cli(*GROK, "--gpus", "1500000", "--json", "--plot", str(chart))
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["total_params"] == 7017177858048 and plan["active_params"] == 2172505079808
    layout = plan["layout"]
    assert layout["tp"] * layout["pp"] * layout["dp"] == 1_500_000
    assert layout["fsdp"] >= 4096 and layout["fsdp"] % layout["ep"] == 0 and 32 % layout["ep"] == 0
    assert plan["memory_per_gpu_bytes"] <= 0.9 * 141e9
    assert plan["memory_without_activation_checkpointing"]["activations"] > \
        plan["memory_with_activation_checkpointing"]["activations"]
    # days = tokens x FLOPs per token / (GPUs x peak x MFU), stretched by the pipeline's idle share;
    # power = GPUs x 700 W x PUE 1.2
    busy = 1 - plan["pipeline_bubble"]
    days = 30e12 * plan["train_flops_per_token"] / (1.5e6 * 989.4e12 * 0.4) / 86400 / busy
    assert plan["train_days"] == pytest.approx(days)
    assert plan["avg_power_mw"] == pytest.approx(1.5e6 * 700 * 1.2 / 1e6)
    assert plan["energy_mwh"] == pytest.approx(1.5e6 * 700 * 1.2 / 1e6 * days * 24)
    assert plan["comms_per_step"]["all_to_all_bytes"] > 0
    assert plan["inference"]["gpus_for_weights"] * 0.9 * 141e9 >= plan["total_params"] * 2
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plan_prints_tables():
    out = run_cli(*GROK, "--gpus", "1500000")
    assert out.returncode == 0, out.stderr
    for words in ("layout: tp", "memory per GPU", "optimizer", "activations", "training time", "MWh",
                  "KV cache per 1k tokens", "decode tokens/s"):
        assert words in out.stdout


@pytest.mark.parametrize("args, words", [
    (("--gpus", "4096", "--ep", "5"), ["--ep 5 does not divide", "nearest that do: 2, 4, 8"]),
    (("--gpus", "4100", "--tp", "8", "--fsdp", "512"), ["--gpus 4100 is not a multiple", "4096, 8192"]),
    (("--gpus", "64", "--gpu", "h100"), ["does not fit on 64 H100s", "nearest that work: --gpus"]),
])
def test_impossible_layouts_are_refused_with_the_nearest_that_work(args, words):
    out = run_cli(*GROK, *args)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    for w in words:
        assert w in lines[0]


def test_a_batch_cap_trades_data_parallelism_for_pipeline_stages_and_shows_the_bubble():
    free = json.loads(run_cli(*GROK, "--gpus", "1500000", "--json").stdout)
    capped = json.loads(run_cli(*GROK, "--gpus", "1500000", "--batch-tokens", "256e6", "--json").stdout)
    assert capped["global_batch_tokens"] <= 256e6 < free["global_batch_tokens"]
    layout = capped["layout"]
    assert layout["tp"] * layout["pp"] * layout["dp"] == 1_500_000 and layout["pp"] > 1
    m, pp = capped["microbatches_per_step"], layout["pp"]
    assert capped["pipeline_bubble"] == pytest.approx((pp - 1) / (m + pp - 1))
    # the same work at the same MFU, stretched by the idle share of the pipeline
    assert capped["train_days"] == pytest.approx(
        free["train_days"] * (1 - free["pipeline_bubble"]) / (1 - capped["pipeline_bubble"]))


def test_a_batch_cap_below_one_sequence_per_rank_is_refused_with_the_least_that_works():
    out = run_cli(*GROK, "--gpus", "1500000", "--batch-tokens", "1e6")
    assert out.returncode == 1
    line = out.stderr.strip()
    assert line.startswith("error: --batch-tokens 1e+06 is less than one 8192-token sequence per data-parallel rank")
    assert "raise --batch-tokens to" in line and "\n" not in line
