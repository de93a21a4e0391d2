import json

from helpers import run_cli


def test_dry_run_of_a_planned_shard_group_agrees_with_the_analytic_parameter_memory():
    # 2^20 H200s: the plan's EP x FSDP group has 8192 ranks, built for real on a fake process group
    out = run_cli("plan", "--preset", "grok5-7t", "--gpus", "1048576", "--gpu", "h200", "--tokens", "30e12",
                  "--dry-run", "--json")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    dry = plan["dry_run"]
    assert dry["ranks"] == plan["layout"]["fsdp"] >= 4096 and dry["ep"] == plan["layout"]["ep"]
    print(f"dry run: {dry['ranks']} ranks, parameters per rank measured {dry['measured']['parameters'] / 1e9:.3f} GB "
          f"vs analytic {dry['analytic']['parameters'] / 1e9:.3f} GB (ratio {dry['ratio']:.3f})")
    assert abs(dry["ratio"] - 1) < 0.05
    # one MoE block on rank 0: one of the 32 experts (ep 32), its weights split over the other 256 ranks
    assert dry["bytes_per_moe_block"] < dry["bytes_per_dense_block"] * 10
