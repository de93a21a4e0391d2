"""The row-sum matrix-vector product gives the BLAS's results, compiled or eager, in fp32 and in bf16; a model
switched to it decodes the same logits, one token's experts in one kernel; the engine measures it only for weights
that outgrow the CPU's cache."""

import pytest
import torch
import torch.nn.functional as F

import hepta
from hepta.infer import matvec_choice
from hepta.infer.matvec_choice import MARGIN, choose_matvec
from hepta.model import decode_regions, matvec
from hepta.model.matvec import Linear, row_sum_matvec
from helpers import decoded_logits

# `tiny` with one dense and one MoE block: every path below, at half the blocks to compile
TINY = hepta.get_preset("tiny").with_changes({"num_layers": 2})


@pytest.mark.parametrize("rows, dim", [(7, 5), (4096, 192), (3000, 700)])  # blocks of rows that do not divide N
def test_row_sums_equal_the_blas_product(rows, dim):
    generator = torch.Generator().manual_seed(rows)
    weight, x = torch.randn(rows, dim, generator=generator), torch.randn(dim, generator=generator)
    assert (row_sum_matvec(x, weight) - weight @ x).abs().max() <= 1e-4


@pytest.fixture
def without_compiled_kernels(monkeypatch):
    """As on a machine where TorchInductor cannot build CPU kernels (no C++ compiler)."""
    def fail(fn):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(matvec, "_compiled", fail)
    monkeypatch.setattr(matvec, "_broken", [])
    matvec.fused_kernels.cache_clear()
    yield
    matvec.fused_kernels.cache_clear()


def test_without_a_compiler_the_eager_row_sums_give_the_same_product(without_compiled_kernels):
    generator = torch.Generator().manual_seed(0)
    weight, x = torch.randn(3000, 700, generator=generator), torch.randn(700, generator=generator)
    assert (row_sum_matvec(x, weight) - weight @ x).abs().max() <= 1e-4
    assert not matvec.fused_kernels() and "no C++ compiler" in matvec._broken[0]
    with torch.no_grad():  # eagerly a bf16 product would be rounded before it is summed, so bf16 keeps the BLAS
        assert matvec.row_sum_applies(x, weight) and not matvec.row_sum_applies(x.bfloat16(), weight.bfloat16())


def test_compiled_bf16_row_sums_sum_in_fp32():
    generator = torch.Generator().manual_seed(1)
    weight, x = torch.randn(512, 384, generator=generator).bfloat16(), torch.randn(384, generator=generator).bfloat16()
    with torch.no_grad():
        assert matvec.fused_kernels() and matvec.row_sum_applies(x, weight)
        rounded = row_sum_matvec(x, weight)
    exact = weight.float() @ x.float()
    assert rounded.dtype == torch.bfloat16
    # within the rounding of the result itself (2^-8 relative), where products rounded first would stray further
    assert ((rounded.float() - exact).abs() <= exact.abs() * 2 ** -8 + 1e-3).all()


def test_a_linear_switched_to_row_sums_uses_them_for_one_row_only():
    layer = Linear(64, 48, bias=True)
    layer.row_sum = True
    x = torch.randn(1, 1, 64)
    with torch.no_grad():
        assert (layer(x) - F.linear(x, layer.weight, layer.bias)).abs().max() <= 1e-5
        batch = torch.randn(3, 1, 64)
        assert torch.equal(layer(batch), F.linear(batch, layer.weight, layer.bias))  # the BLAS, bit for bit
    assert layer(x).requires_grad  # with autograd on, the BLAS path, which has a backward


def decode_logits(model, steps=6):
    cache = model.new_slot_cache(1, 32)
    ids = torch.randint(0, model.config.vocab_size, (1, 8), generator=torch.Generator().manual_seed(0))
    out = []
    with torch.no_grad():
        cache.set_window(0, 1, prompt_lengths=torch.tensor([8]))
        logits = model(ids, cache=cache)[:, -1]
        for _ in range(steps):
            cache.set_window(0, 1)
            logits = model(logits.argmax(-1, keepdim=True), cache=cache)[:, -1]
            out.append(logits)
    return torch.cat(out)


def counting(monkeypatch, name: str) -> list:
    """The results of each call of decode_regions' `name` from now on."""
    results, fn = [], getattr(decode_regions, name)

    def counted(*args):
        results.append(fn(*args))
        return results[-1]

    monkeypatch.setattr(decode_regions, name, counted)
    return results


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-4), (torch.bfloat16, 3e-2)])
def test_a_model_decoding_with_row_sums_gives_the_blas_logits(monkeypatch, dtype, tolerance):
    cfg = TINY.with_changes({"attention.qkv_bias": True, "attention.o_bias": True})
    model = hepta.build_model(cfg, seed=0).to(dtype).eval()
    expected = decode_logits(model)
    steps, regions = counting(monkeypatch, "decode_step"), counting(monkeypatch, "decode_block")
    model.use_row_sum_matvec(True)
    assert (decode_logits(model) - expected).abs().max() <= tolerance
    assert all(m.row_sum for m in model.modules() if isinstance(m, Linear))
    # each decode step ran its blocks as one compiled call, its cache update and the LM head inside (the prompt
    # did not)
    assert len(steps) == 6 and all(out.shape == (1, 1, cfg.vocab_size) for out in steps) and not regions


def test_blocks_with_a_sliding_window_decode_as_two_compiled_regions_each(monkeypatch):
    cfg = TINY.with_changes({"attention.sliding_window": 4, "attention.sliding_window_layers": (0,)})
    model = hepta.build_model(cfg, seed=0).eval()
    expected = decode_logits(model)  # past the window: 8 prompt tokens, then 6 steps
    steps, regions = counting(monkeypatch, "decode_step"), counting(monkeypatch, "decode_block")
    model.use_row_sum_matvec(True)
    assert (decode_logits(model) - expected).abs().max() <= 1e-4
    assert not steps and len(regions) == 6 * len(model.layers) and all(out is not None for out in regions)


def decode_batch_logits(model):
    """Logits of 4 sequences decoding 3 steps together after 4-token prompts."""
    ids = torch.randint(0, model.config.vocab_size, (4, 7), generator=torch.Generator().manual_seed(1))
    return decoded_logits(model, ids, prefill=4)[0]


def test_a_batch_decoding_with_row_sums_runs_each_block_as_compiled_regions(monkeypatch):
    model = hepta.build_model(TINY, seed=0).eval()
    expected = decode_batch_logits(model)
    steps, regions, kernels = counting(monkeypatch, "decode_step"), counting(monkeypatch, "decode_block"), []
    run_fused = matvec.run_fused
    monkeypatch.setattr("hepta.model.experts.run_fused", lambda fn, *args: kernels.append(fn) or run_fused(fn, *args))
    model.use_row_sum_matvec(True)
    assert (decode_batch_logits(model) - expected).abs().max() <= 1e-4
    # each of the 3 steps of the 4 sequences ran every block as its regions (a batch is not one call); the prompts'
    # experts took the row sums over their routed copies outside them
    assert len(regions) == 3 * len(model.layers) and all(out is not None for out in regions) and not steps
    assert [fn.__name__ for fn in kernels] == ["_token_copies"] * len(model.moe_layers())


@pytest.mark.parametrize("decode, kernel, steps", [
    (decode_logits, "_one_token_experts", 6),  # one sequence: each step, each MoE layer's token
    (decode_batch_logits, "_token_copies", 4),  # 4 sequences: their prompts and 3 steps
])
def test_without_block_regions_the_experts_are_row_sums_over_the_routed_copies(monkeypatch, decode, kernel, steps):
    monkeypatch.setattr(decode_regions, "applies", lambda *args: False)
    model = hepta.build_model(TINY, seed=0).eval()
    expected = decode(model)
    kernels = []
    run_fused = matvec.run_fused
    monkeypatch.setattr("hepta.model.experts.run_fused", lambda fn, *args: kernels.append(fn) or run_fused(fn, *args))
    model.use_row_sum_matvec(True)
    assert (decode(model) - expected).abs().max() <= 1e-4
    assert [fn.__name__ for fn in kernels].count(kernel) == steps * len(model.moe_layers()) > 0


def test_routed_copies_that_fail_to_compile_leave_the_blas_experts(monkeypatch, caplog):
    monkeypatch.setattr(decode_regions, "applies", lambda *args: False)
    model = hepta.build_model(TINY, seed=0).eval()
    expected = decode_batch_logits(model)
    calls = []

    def fail(fn):
        calls.append(fn)
        raise RuntimeError("inductor failed")

    monkeypatch.setattr(matvec, "_compiled", fail)
    monkeypatch.setattr(matvec, "_broken", [])
    monkeypatch.setattr(matvec, "fused_kernels", lambda: True)  # the probe passed earlier, as it would have
    model.use_row_sum_matvec(True)
    assert (decode_batch_logits(model) - expected).abs().max() <= 1e-4
    assert [fn.__name__ for fn in calls] == ["_token_copies"]  # tried once, then never again
    assert "decoding without compiled matrix-vector products" in caplog.text


def test_a_decode_step_that_fails_to_compile_leaves_the_eager_blocks(monkeypatch, caplog):
    def fail(fn, **options):
        raise RuntimeError("inductor failed")

    monkeypatch.setattr(decode_regions, "_compiled", fail)
    monkeypatch.setattr(matvec, "_broken", [])
    model = hepta.build_model(TINY, seed=0).eval()
    expected = decode_logits(model)
    model.use_row_sum_matvec(True)
    assert (decode_logits(model) - expected).abs().max() <= 1e-4
    assert matvec._broken == ["RuntimeError: inductor failed"]  # the step's one call failed; nothing else was tried
    assert "decoding without compiled decode steps" in caplog.text


def test_without_a_compiler_a_model_decodes_the_same_with_eager_row_sums(without_compiled_kernels):
    model = hepta.build_model(TINY, seed=0).eval()
    expected = decode_logits(model)
    model.use_row_sum_matvec(True)
    assert (decode_logits(model) - expected).abs().max() <= 1e-4


def test_weights_that_fit_in_the_cache_keep_the_blas_without_a_timing():
    model = hepta.build_model(TINY, seed=0).eval()
    choice = choose_matvec(model)
    assert not choice.row_sum and choice.blas_s is None and "cache" in choice.reason
    bf16 = hepta.build_model(TINY, seed=0).to(torch.bfloat16)
    assert "cache" in choose_matvec(bf16).reason, matvec._broken
    fp16 = hepta.build_model(TINY, seed=0).to(torch.float16)
    assert "fp32 and bf16" in choose_matvec(fp16).reason


def test_a_bf16_model_that_takes_row_sums_has_its_batch_step_compiled_at_once(monkeypatch):
    monkeypatch.setattr("hepta.infer.matvec_choice.last_level_cache_bytes", lambda: 1)  # every model outgrows it
    real, timed = matvec_choice._step_seconds, []

    def row_sums_faster(model, sequences, switch, steps):  # one sequence: as if the row sums won
        timed.append(sequences)
        return (1.0, 0.5) if sequences == 1 else real(model, sequences, switch, steps)

    monkeypatch.setattr(matvec_choice, "_step_seconds", row_sums_faster)
    regions = counting(monkeypatch, "decode_block")
    model = hepta.build_model(TINY, seed=0).to(torch.bfloat16).eval()
    assert choose_matvec(model).row_sum and timed == [1, matvec_choice.BATCH]
    assert regions and all(out is not None and out.shape[0] == matvec_choice.BATCH for out in regions)


def test_weights_past_the_cache_get_the_product_that_measured_faster(monkeypatch):
    monkeypatch.setattr("hepta.infer.matvec_choice.last_level_cache_bytes", lambda: 1)  # every model outgrows it
    model = hepta.build_model(TINY, seed=0).eval()
    choice = choose_matvec(model, steps=3)
    assert choice.blas_s > 0 and choice.row_sum_s > 0
    assert choice.row_sum == (choice.row_sum_s < MARGIN * choice.blas_s)
    assert all(m.row_sum == choice.row_sum for m in model.modules() if isinstance(m, Linear))
    assert choice.batch_blas_s > 0 and choice.batch_packed_s > 0
    assert choice.packed == (choice.batch_packed_s < MARGIN * choice.batch_blas_s)
    assert all((m.packed is not None) == choice.packed for m in model.modules() if isinstance(m, Linear))
    assert "oneDNN" in choice.reason


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_one_querys_attention_in_a_region_equals_torchs_kernel_with_grouped_heads(dtype, tolerance):
    generator = torch.Generator().manual_seed(3)
    B, H, G, S, Dh = 3, 8, 2, 11, 16
    q = torch.randn(B, H, 1, Dh, generator=generator).to(dtype)
    k, v = (torch.randn(B, G, S, Dh, generator=generator).to(dtype) for _ in range(2))
    mask = torch.arange(S)[None, None, None, :] <= torch.tensor([4, 10, 7])[:, None, None, None]  # each its length
    expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, enable_gqa=True)
    got = decode_regions._one_query_attention(q, k, v, mask)
    assert got.dtype == dtype and (got.float() - expected).abs().max() <= tolerance
