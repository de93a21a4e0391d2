import threading

import pytest
import torch
import torch.nn.functional as F

import hepta
from hepta.config import ModelConfig
from hepta.model import expert_threads
from hepta.model import experts as experts_module
from hepta.model.experts import EXPERTS_IMPLEMENTATIONS, GroupedExperts, weighted_combine
from hepta.model.moe import MoE
from hepta.model.transformer import Transformer


def moe_config(changes: dict | None = None) -> ModelConfig:
    """A one-layer config with `changes` by dotted field name, e.g. {"moe.top_k": 1}."""
    base = {"vocab_size": 64, "dim": 32, "num_layers": 1, "attention.num_heads": 2, "attention.num_kv_heads": 1,
            "attention.head_dim": 16, "moe.num_experts": 8, "moe.top_k": 2, "moe.expert_hidden_dim": 24,
            "moe.num_shared_experts": 1}
    return ModelConfig().with_changes({**base, **(changes or {})})


def naive_moe(moe: MoE, x_BTD: torch.Tensor) -> torch.Tensor:
    """Token by token, expert by expert: the definition the fast dispatch must match."""
    cfg = moe.cfg
    x_ND = x_BTD.reshape(-1, cfg.dim)
    routing = moe.router(x_ND)
    Fh = cfg.moe.expert_hidden_dim
    rows = []
    for n in range(x_ND.shape[0]):
        y = torch.zeros(cfg.dim, dtype=x_ND.dtype)
        for k in range(cfg.moe.top_k):
            e = routing.experts_NK[n, k]
            h = moe.experts.gate_up_proj[e] @ x_ND[n]
            y = y + routing.weights_NK[n, k] * (moe.experts.down_proj[e] @ (F.silu(h[:Fh]) * h[Fh:]))
        rows.append(y)
    out = torch.stack(rows)
    if moe.shared_experts is not None:
        out = out + moe.shared_experts(x_ND)
    return out.view_as(x_BTD)


def init(moe: MoE) -> MoE:
    moe.reset_parameters()
    for p in moe.parameters():
        if p.dim() > 1:
            torch.nn.init.normal_(p, std=0.3)
    return moe


@pytest.mark.parametrize("implementation", ["fused", "grouped_mm"])
@pytest.mark.parametrize("overrides", [
    {},
    {"router.scoring": "sigmoid", "router.route_scale": 2.5, "moe.num_shared_experts": 0},
    {"router.num_expert_groups": 4, "router.num_limited_groups": 2, "router.scoring": "sigmoid", "moe.top_k": 3},
    {"router.norm_topk_prob": False, "moe.top_k": 1},
])
def test_dispatch_matches_naive_reference_outputs_and_gradients(implementation, overrides):
    if implementation == "grouped_mm" and not hasattr(torch, "_grouped_mm"):
        pytest.skip("torch._grouped_mm not available")
    moe = init(MoE(moe_config(overrides), experts_implementation=implementation))
    moe.router.expert_bias.copy_(torch.randn(8) * 0.1)  # selection bias must not change the math
    x = torch.randn(3, 7, 32, requires_grad=True)

    fast = moe(x)
    g_out = torch.randn_like(fast)
    grads_fast = torch.autograd.grad(fast, [x, *moe.parameters()], g_out)
    ref = naive_moe(moe, x)
    grads_ref = torch.autograd.grad(ref, [x, *moe.parameters()], g_out)

    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    names = ["x"] + [n for n, _ in moe.named_parameters()]
    for name, a, b in zip(names, grads_fast, grads_ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=lambda m: f"gradient of {name}: {m}")


def test_an_unknown_experts_implementation_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="implementation='triton' is unknown: use one of 'auto', 'fused', 'grouped_mm'"):
        GroupedExperts(4, 32, 24, implementation="triton")
    with pytest.raises(ValueError, match="implementation='GROUPED_MM' is unknown"):  # reaches the experts of every layer
        Transformer(moe_config(), experts_implementation="GROUPED_MM")
    assert Transformer(moe_config(), experts_implementation="fused").layers[0].ffn.experts.implementation == "fused"


@pytest.mark.parametrize("num_tokens, grad", [(21, True), (3, False)])  # 3 tokens without grad: the few-rows loop
def test_every_experts_implementation_gives_the_same_output(num_tokens, grad):
    torch.manual_seed(0)
    reference = init(MoE(moe_config({"moe.num_shared_experts": 0})))
    x = torch.randn(1, num_tokens, 32)
    outputs = {}
    for implementation in EXPERTS_IMPLEMENTATIONS:
        moe = MoE(reference.cfg, experts_implementation=implementation)
        moe.load_state_dict(reference.state_dict())
        with torch.set_grad_enabled(grad):
            outputs[implementation] = moe(x)
    assert set(outputs) == {"auto", "fused", "grouped_mm"}
    for implementation, out in outputs.items():
        torch.testing.assert_close(out, outputs["fused"], atol=1e-5, rtol=1e-5,
                                   msg=lambda m: f"{implementation} vs fused: {m}")
    assert outputs["fused"].abs().sum() > 0


def test_auto_picks_the_grouped_gemm_on_gpus_and_the_loop_only_for_decoding_on_cpus():
    from hepta.model.experts import experts_kernel

    assert experts_kernel("auto", on_cuda=True, rows=3, grad=False) == "grouped_mm"  # tests/gpu runs it
    assert experts_kernel("auto", on_cuda=True, rows=4096, grad=True) == "grouped_mm"
    assert experts_kernel("auto", on_cuda=False, rows=16, grad=False) == "few_rows"
    assert experts_kernel("auto", on_cuda=False, rows=16, grad=True) == "fused"  # the loop writes with out=, no autograd
    assert experts_kernel("auto", on_cuda=False, rows=17, grad=False) == "fused"
    assert experts_kernel("fused", on_cuda=True, rows=3, grad=False) == "fused"  # a named kernel is kept anywhere
    assert experts_kernel("grouped_mm", on_cuda=False, rows=3, grad=False) == "grouped_mm"


def test_row_sums_over_the_routed_copies_take_up_to_four_copies_an_expert_and_no_capacity():
    cfg = hepta.get_preset("tiny")  # 16 experts, top-2
    moe = MoE(cfg).eval()
    assert not moe.takes_copies(1)  # until an engine that measured them switches the row sums on
    moe.experts.row_sum = True
    assert moe.takes_copies(1) and moe.takes_copies(32) and not moe.takes_copies(33)  # 64 copies: 4 an expert
    capped = MoE(cfg.with_changes({"router.capacity_factor": 1.25})).eval()
    capped.experts.row_sum = True
    assert capped.takes_copies(1) and not capped.takes_copies(2)  # a capacity may drop copies of several tokens


def test_weighted_combine_sums_the_weighted_copies_of_each_token_in_the_outputs_dtype():
    y_MD = torch.tensor([[1.0, 2.0], [10.0, 20.0], [100.0, 200.0]], dtype=torch.bfloat16)
    weight_M = torch.tensor([0.5, 2.0, 1.0])  # fp32 gate weights, as the router gives them
    token_M = torch.tensor([2, 0, 2])
    out_ND = weighted_combine(y_MD, weight_M, token_M, num_tokens=4)
    assert out_ND.dtype == torch.bfloat16
    assert out_ND.tolist() == [[20.0, 40.0], [0.0, 0.0], [100.5, 201.0], [0.0, 0.0]]


def test_fused_experts_match_reference_across_chunks_and_idle_experts(monkeypatch):
    # Chunks of one or two experts (instead of all of them at these tiny sizes), with experts that
    # get no tokens in between: every chunk boundary and skipped expert must keep the math exact.
    monkeypatch.setattr(experts_module, "_CHUNK_BYTES", 2 * 24 * 4 * 10)  # 10 rows of pre-activations
    moe = init(MoE(moe_config({"moe.num_experts": 8, "moe.top_k": 2, "moe.num_shared_experts": 0})))
    moe.router.expert_bias.copy_(torch.tensor([0.0, -9, 0, 0, -9, 0, 0, -9]))  # experts 1, 4, 7 stay idle
    x = torch.randn(2, 9, 32, requires_grad=True)

    fast = moe(x)
    assert moe.last_load[[1, 4, 7]].sum() == 0
    g_out = torch.randn_like(fast)
    grads_fast = torch.autograd.grad(fast, [x, *moe.parameters()], g_out)
    ref = naive_moe(moe, x)
    grads_ref = torch.autograd.grad(ref, [x, *moe.parameters()], g_out)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads_fast, grads_ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_chunks_cover_every_routed_row_once_in_expert_order():
    counts = [3, 0, 5, 1, 0, 0, 4]
    chunks = experts_module._chunks(counts, min_rows=4)
    assert [(start, end) for start, end, _, _ in chunks] == [(0, 8), (8, 13)]
    assert [(experts, sizes) for _, _, experts, sizes in chunks] == [([0, 2], [3, 5]), ([3, 6], [1, 4])]


def test_experts_that_receive_no_tokens_get_zero_gradient():
    moe = init(MoE(moe_config({"moe.num_experts": 8, "moe.top_k": 1})))
    moe.router.expert_bias.copy_(torch.tensor([10.0, 0, 0, 0, 0, 0, 0, 0]))  # everything to expert 0
    x = torch.randn(1, 5, 32)
    moe(x).sum().backward()
    assert moe.last_load.tolist() == [5, 0, 0, 0, 0, 0, 0, 0]
    assert moe.experts.gate_up_proj.grad[0].abs().sum() > 0
    assert moe.experts.gate_up_proj.grad[1:].abs().sum() == 0


def test_expert_load_is_observable_after_each_forward():
    moe = init(MoE(moe_config()))
    moe(torch.randn(2, 10, 32))
    assert moe.last_load.sum().item() == 2 * 10 * 2
    moe(torch.randn(1, 3, 32))
    assert moe.last_load.sum().item() == 1 * 3 * 2
    assert moe.load_since_update.sum().item() == 46


def test_capacity_factor_drops_overflow_tokens_in_arrival_order():
    moe = init(MoE(moe_config({"moe.num_experts": 4, "moe.top_k": 1, "router.capacity_factor": 1.0,
                               "moe.num_shared_experts": 0})))
    moe.router.expert_bias.copy_(torch.tensor([10.0, 0, 0, 0]))  # all 8 tokens pick expert 0; capacity is 2
    x = torch.randn(1, 8, 32)
    y = moe(x)[0]
    assert y[:2].abs().sum(dim=-1).gt(0).all()
    assert y[2:].abs().sum() == 0


def test_router_losses_are_weighted_and_differentiable():
    moe = init(MoE(moe_config({"router.aux_loss_coef": 0.01, "router.z_loss_coef": 0.001})))
    moe(torch.randn(2, 16, 32))
    loss = moe.router_losses.total
    assert moe.router_losses.aux.item() > 0 and moe.router_losses.z.item() > 0
    loss.backward()
    assert moe.router.weight.grad.abs().sum() > 0


def test_router_losses_of_several_batches_pool_to_the_loss_of_one():
    # The balance loss of batches run apart equals the one of their rows in a single batch, and it
    # sees their joint load: two batches that each lean on other experts balance each other out.
    moe = init(MoE(moe_config({"router.aux_loss_coef": 0.01, "router.z_loss_coef": 0.001,
                               "moe.num_shared_experts": 0})))
    a, b = torch.randn(2, 16, 32), torch.randn(3, 8, 32) + 2.0
    moe(torch.cat([a.reshape(-1, 32), b.reshape(-1, 32)])[None])
    whole = moe.router_losses.total
    parts = []
    for x in (a, b):
        moe(x)
        parts.append(moe.router_losses)
    pooled = moe.router.pooled_loss(parts)
    torch.testing.assert_close(pooled, whole)
    separately = sum(p.total * p.num_tokens for p in parts) / sum(p.num_tokens for p in parts)
    assert not torch.allclose(pooled, separately)
    pooled.backward()
    assert moe.router.weight.grad.abs().sum() > 0


def test_bf16_autocast_runs_experts_in_bf16_and_stays_close_to_fp32():
    moe = init(MoE(moe_config()))
    x = torch.randn(2, 16, 32)
    ref = moe(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = moe(x)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), ref, atol=0.15, rtol=0.05)


@pytest.mark.parametrize("num_tokens", [1, 5])
def test_inference_on_a_few_tokens_matches_reference_and_skips_the_router_losses(num_tokens):
    # decoding: a handful of routed copies take the small-batch loop, without gradients
    moe = init(MoE(moe_config({"router.scoring": "sigmoid", "router.aux_loss_coef": 0.01,
                               "router.z_loss_coef": 1e-3}))).eval()
    x = torch.randn(num_tokens, 1, 32)
    with torch.no_grad():
        fast = moe(x)
        assert float(moe.router_losses.total) == 0.0  # losses exist to be backpropagated; none is built here
        assert moe.last_load.sum() == num_tokens * 2 and moe.load_since_update.sum() == 0
        torch.testing.assert_close(fast, naive_moe(moe, x), atol=1e-5, rtol=1e-5)


def test_expert_shares_cover_the_chunks_in_order_with_about_equal_rows():
    chunks = experts_module._chunks([5, 3, 0, 6, 2, 4, 4, 1, 7], min_rows=4)
    shares = expert_threads.shares(chunks, dim=512, hidden=128)
    assert [c for share in shares for c in share] == chunks
    if torch.get_num_threads() >= 2:
        assert len(shares) == min(torch.get_num_threads(), len(chunks))
        rows = [share[-1][1] - share[0][0] for share in shares]
        assert max(rows) - min(rows) <= max(end - start for start, end, _, _ in chunks)
    # large products (32 rows an expert here, at width 4,096): each product over all cores
    assert expert_threads.shares(chunks, dim=4096, hidden=4096) == [chunks]


@pytest.mark.parametrize("inference", [False, True])
def test_experts_run_by_core_match_experts_run_in_one_thread(monkeypatch, request, inference):
    # Many small chunks, so that each core takes a share of the experts on a thread of its own: outputs and
    # every gradient must match the same layer run in the caller's thread, and inference mode must carry over.
    request.addfinalizer(lambda threads=torch.get_num_threads(): torch.set_num_threads(threads))
    torch.set_num_threads(2)
    monkeypatch.setattr(experts_module, "_CHUNK_BYTES", 2 * 24 * 4 * 6)
    moe = init(MoE(moe_config({"moe.num_experts": 16, "moe.top_k": 4, "moe.num_shared_experts": 0})))
    x = torch.randn(2, 20, 32, requires_grad=not inference)
    calls = []
    run = expert_threads.run
    monkeypatch.setattr(expert_threads, "run", lambda fn, args: calls.append(len(args)) or run(fn, args))

    def forward_backward(by_core: bool):
        monkeypatch.setattr(expert_threads, "enabled", by_core)
        if inference:
            with torch.inference_mode():
                return [moe(x).clone()]
        out = moe(x)
        return [out, *torch.autograd.grad(out, [x, *moe.parameters()], torch.ones_like(out))]

    by_core, one_thread = forward_backward(True), forward_backward(False)
    assert calls[0] == 2 and calls[-1] == 1
    for a, b in zip(by_core, one_thread):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # the workers' single thread stays theirs: a thread started now still gets the process's two
    new_thread = []
    thread = threading.Thread(target=lambda: new_thread.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert torch.get_num_threads() == 2 and new_thread == [2]
