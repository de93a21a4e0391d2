"""The dry run's flash attention is seen by the dry run only: torch's own function before, after and
beside it (another thread during it), the padded flash kernel inside it, recomputation in
backward included."""

import dataclasses
import threading

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import _get_current_dispatch_mode

from hepta.config import get_preset
from hepta.scale.gpus import get_gpu
from hepta.scale.planner import PlanRequest, make_plan
from hepta.train.dryrun import fake_attention
from hepta.train.dryrun.fake_attention import flash_attention
from hepta.train.dryrun.measure import dry_run

TORCH_SDPA = torch._C._nn.scaled_dot_product_attention  # what torch.nn.functional exports


@pytest.fixture
def flash_calls(monkeypatch):
    """Every call that reaches the padded flash kernel, with whether it ran inside backward."""
    calls = []
    real = fake_attention.padded_flash

    def recording(*args, **kwargs):
        calls.append({"in_backward": torch._C._current_graph_task_id() != -1})
        return real(*args, **kwargs)

    monkeypatch.setattr(fake_attention, "padded_flash", recording)
    return calls


def _qkv(value_width: int):
    torch.manual_seed(0)
    q_BHTC, k_BHTC = torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    return q_BHTC, k_BHTC, torch.randn(1, 2, 5, value_width)


def test_torch_attention_is_untouched_outside_and_after_the_context_even_when_it_raises():
    assert F.scaled_dot_product_attention is TORCH_SDPA
    with flash_attention():
        assert F.scaled_dot_product_attention is not TORCH_SDPA
    assert F.scaled_dot_product_attention is TORCH_SDPA
    with pytest.raises(RuntimeError, match="inside"):
        with flash_attention():
            raise RuntimeError("inside")
    assert F.scaled_dot_product_attention is TORCH_SDPA


def test_inside_the_context_calls_take_the_padded_flash_kernel_and_give_the_same_attention(flash_calls):
    q, k, v_narrow = _qkv(value_width=6)  # MLA-like: values narrower than queries and keys
    expected = TORCH_SDPA(q, k, v_narrow, is_causal=True)
    with flash_attention():
        out = F.scaled_dot_product_attention(q, k, v_narrow, is_causal=True)
    assert len(flash_calls) == 1
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected)


def test_another_thread_during_the_context_gets_torchs_attention(flash_calls):
    q, k, v = _qkv(value_width=8)
    inside, outside_done = threading.Event(), threading.Event()
    seen = {}

    def other_thread():
        inside.wait(timeout=30)
        F.scaled_dot_product_attention(q, k, v)
        seen["calls_to_flash"] = len(flash_calls)
        outside_done.set()

    thread = threading.Thread(target=other_thread)
    thread.start()
    with flash_attention():
        inside.set()
        assert outside_done.wait(timeout=30)
        F.scaled_dot_product_attention(q, k, v)
    thread.join()
    assert seen["calls_to_flash"] == 0
    assert len(flash_calls) == 1  # the entering thread's own call


def test_a_dry_run_uses_the_flash_kernel_in_forward_and_in_recomputation_and_restores_torchs(flash_calls):
    request = PlanRequest(get_preset("tiny"), "tiny", 8, get_gpu("h200"), 1e9, tp=1, pp=1)
    plan = make_plan(request)
    # checkpointing on, so that backward recomputes the blocks' attention
    plan = dataclasses.replace(plan, fit=dataclasses.replace(plan.fit, checkpointing=True))
    assert F.scaled_dot_product_attention is TORCH_SDPA
    dry_run(plan)
    assert F.scaled_dot_product_attention is TORCH_SDPA
    assert _get_current_dispatch_mode() is None  # balanced routing, a dispatch mode, is popped as well
    assert any(not c["in_backward"] for c in flash_calls)
    assert any(c["in_backward"] for c in flash_calls)
