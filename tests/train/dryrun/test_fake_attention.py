"""The dry run's flash attention is the attention kernel of the dry run's own model only: torch's
function is never replaced (before, during and after a dry run), the dry-run model's modules run
the padded flash kernel in forward and in recomputation inside backward, and a model built
outside the dry run keeps torch's kernel."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import _get_current_dispatch_mode

from hepta.config import get_preset
from hepta.model.attention import Attention
from hepta.model.mla import MultiHeadLatentAttention
from hepta.model.transformer import Transformer
from hepta.scale.gpus import get_gpu
from hepta.scale.planner import PlanRequest, make_plan
from hepta.train.dryrun import fake_attention
from hepta.train.dryrun.fake_attention import use_flash_attention
from hepta.train.dryrun.measure import dry_run

TORCH_SDPA = torch._C._nn.scaled_dot_product_attention  # what torch.nn.functional exports
ATTENTION_MODULES = (Attention, MultiHeadLatentAttention)
MLA = {"attention.qk_norm": False, "attention.kind": "mla", "attention.kv_lora_rank": 16,
       "attention.q_lora_rank": 24, "attention.qk_nope_head_dim": 8, "attention.qk_rope_head_dim": 6,
       "attention.v_head_dim": 8}


@pytest.fixture
def flash_calls(monkeypatch):
    """Every call that reaches the padded flash kernel: whether it ran inside backward, and
    whether torch's function was still torch's own at that moment."""
    calls = []
    real = fake_attention.padded_flash

    def recording(*args, **kwargs):
        calls.append({"in_backward": torch._C._current_graph_task_id() != -1,
                      "torch_sdpa_untouched": F.scaled_dot_product_attention is TORCH_SDPA})
        return real(*args, **kwargs)

    monkeypatch.setattr(fake_attention, "padded_flash", recording)
    return calls


def _qkv(value_width: int):
    torch.manual_seed(0)
    q_BHTC, k_BHTC = torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    return q_BHTC, k_BHTC, torch.randn(1, 2, 5, value_width)


def _attention_modules(model):
    return [m for m in model.modules() if isinstance(m, ATTENTION_MODULES)]


def test_the_padded_flash_kernel_gives_torchs_attention_for_values_narrower_than_queries():
    q, k, v_narrow = _qkv(value_width=6)  # MLA-like: values narrower than queries and keys
    expected = TORCH_SDPA(q, k, v_narrow, is_causal=True)
    out = fake_attention.padded_flash(q, k, v_narrow, is_causal=True)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("changes", [{}, MLA], ids=["gqa", "mla"])
def test_use_flash_attention_sets_the_stand_in_on_that_model_only(changes, flash_calls):
    torch.manual_seed(0)
    cfg = get_preset("tiny").with_changes(changes)
    flashed, untouched = Transformer(cfg), Transformer(cfg)
    use_flash_attention(flashed)
    assert _attention_modules(flashed) and _attention_modules(untouched)
    assert all(m.attention_kernel is fake_attention.padded_flash for m in _attention_modules(flashed))
    assert all(m.attention_kernel is TORCH_SDPA for m in _attention_modules(untouched))
    untouched(torch.randint(0, cfg.vocab_size, (1, 8)))
    assert flash_calls == []
    flashed(torch.randint(0, cfg.vocab_size, (1, 8)))
    assert len(flash_calls) == cfg.num_layers
    assert F.scaled_dot_product_attention is TORCH_SDPA


def test_a_dry_run_uses_the_flash_kernel_in_forward_and_in_recomputation_and_never_replaces_torchs(flash_calls):
    request = PlanRequest(get_preset("tiny"), "tiny", 8, get_gpu("h200"), 1e9, tp=1, pp=1)
    plan = make_plan(request)
    # checkpointing on, so that backward recomputes the blocks' attention
    plan = dataclasses.replace(plan, fit=dataclasses.replace(plan.fit, checkpointing=True))
    assert F.scaled_dot_product_attention is TORCH_SDPA
    dry_run(plan)
    assert F.scaled_dot_product_attention is TORCH_SDPA
    assert all(c["torch_sdpa_untouched"] for c in flash_calls)  # during the run as well
    assert _get_current_dispatch_mode() is None  # balanced routing, a dispatch mode, is popped as well
    assert any(not c["in_backward"] for c in flash_calls)
    assert any(c["in_backward"] for c in flash_calls)

    cfg = get_preset("tiny")
    after = Transformer(cfg)  # built outside the dry run, after it: torch's kernel
    assert all(m.attention_kernel is TORCH_SDPA for m in _attention_modules(after))
    calls_before = len(flash_calls)
    after(torch.randint(0, cfg.vocab_size, (1, 8)))
    assert len(flash_calls) == calls_before
