import json

import hepta
from hepta.config import count_params
from hepta.scale.memory import tp_local_config
from helpers import run_cli


def test_dry_run_of_a_planned_shard_group_agrees_with_the_analytic_memory():
    # 2^20 H200s: the plan's EP x FSDP group has 8192 ranks, sharded for real on a fake process group
    out = run_cli("plan", "--preset", "grok5-7t", "--gpus", "1048576", "--gpu", "h200", "--tokens", "30e12",
                  "--dry-run", "--json")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    dry = plan["dry_run"]
    assert dry["ranks"] == plan["layout"]["fsdp"] >= 4096 and dry["ep"] == plan["layout"]["ep"]
    measured, analytic = dry["measured"], dry["analytic"]
    print(f"dry run over {dry['ranks']} ranks: parameters per rank {measured['parameters'] / 1e9:.3f} GB measured, "
          f"{analytic['parameters'] / 1e9:.3f} GB analytic; step peak {measured['total'] / 1e9:.1f} GB measured, "
          f"{analytic['total'] / 1e9:.1f} GB analytic")
    # the analytic fp32 shard: an even share of the TP rank's parameters, plus rank 0's rounding up
    tp_rank_params = count_params(tp_local_config(hepta.get_preset("grok5-7t"), plan["layout"]["tp"])).total
    assert 1 <= analytic["parameters"] / (tp_rank_params * 4 / dry["ranks"]) < 1.05
    assert abs(measured["parameters"] / analytic["parameters"] - 1) < 0.05
    assert abs(measured["total"] / analytic["total"] - 1) < 0.20
    # the tracker saw a real step: activations kept, optimizer state, parameters gathered for compute
    peak = dry["peak_by_kind"]
    assert peak["Activation"] > 1e9 and peak["OptState"] > 0 and peak["Unsharded Param"] > 1e9
    assert dry["uneven_shards"] == []  # every large tensor splits evenly over its ranks in this layout
