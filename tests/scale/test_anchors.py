"""The planner's FLOPs model against published training runs."""

import pytest

from hepta.config import get_preset
from hepta.scale.gpus import get_gpu
from hepta.scale.planner import PlanRequest, make_plan


@pytest.mark.parametrize("mfu", [0.38, 0.43])
def test_llama3_405b_gpu_hours_match_metas_published_figure(mfu):
    # Inputs: Llama 3.1 405B (dense, 126 layers, d 16384), 15.6T pretraining tokens, 8192-token
    # sequences, H100 SXM at the 38-43% BF16 MFU Meta reports (Llama 3 Herd of Models, 2024, table 4).
    # Published: 30.84M H100 GPU-hours for 405B (Llama 3.1 model card, "Training Energy Use").
    plan = make_plan(PlanRequest(get_preset("llama3-405b"), "llama3-405b", 16384, get_gpu("h100"), 15.6e12,
                                 mfu=mfu, seq_len=8192))
    print(f"llama3-405b at MFU {mfu:.0%}: {plan.gpu_hours / 1e6:.2f}M H100 GPU-hours (published 30.84M)")
    assert abs(plan.gpu_hours - 30.84e6) / 30.84e6 < 0.20


def test_deepseek_v3_published_gpu_hours_imply_a_plausible_mfu():
    # Inputs: DeepSeek-V3 shape (671B, 37B active, MLA), 14.8T pretraining tokens of 4096, 2048 H800s.
    # Published: 2.664M H800 GPU-hours of pre-training (DeepSeek-V3 Technical Report, arXiv:2412.19437, table 1).
    # At MFU 1 the plan gives the least GPU-hours; the published figure divided into it is the implied MFU.
    plan = make_plan(PlanRequest(get_preset("deepseek-v3"), "deepseek-v3", 2048, get_gpu("h800"), 14.8e12,
                                 mfu=1.0, seq_len=4096))
    implied_mfu = plan.gpu_hours / 2.664e6
    print(f"deepseek-v3: implied MFU {implied_mfu:.1%} of H800 BF16 peak")
    assert 0.15 <= implied_mfu <= 0.50
