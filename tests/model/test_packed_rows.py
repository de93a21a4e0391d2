"""Rows packed end to end (model/packed_rows.py) give the logits and the gradients of the same rows padded."""

import pytest
import torch

from hepta.checkpoint import build_model
from hepta.config import ModelConfig
from hepta.model.packed_rows import PackedRows

PAD = 0


def config(changes: dict | None = None) -> ModelConfig:
    base = {"vocab_size": 64, "dim": 32, "num_layers": 2, "attention.num_heads": 4, "attention.num_kv_heads": 2,
            "attention.head_dim": 8, "moe.num_experts": 8, "moe.top_k": 2, "moe.expert_hidden_dim": 24,
            "moe.num_shared_experts": 1}
    return ModelConfig().with_changes({**base, **(changes or {})})


def padded_batches(generator: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two batches of rows of different lengths, right-padded, with targets on some positions only."""
    batches = []
    for lengths in ([3, 7, 5], [11, 9]):
        x = torch.full((len(lengths), max(lengths)), PAD)
        y = torch.full_like(x, -100)
        for row, length in enumerate(lengths):
            x[row, :length] = torch.randint(1, 64, (length,), generator=generator)
            y[row, length // 2:length] = torch.randint(1, 64, (length - length // 2,), generator=generator)
        batches.append((x, y))
    return batches


@pytest.mark.parametrize("changes", [{}, {"attention.sliding_window": 4, "attention.sliding_window_layers": (0,)},
                                     {"attention.sinks": True, "attention.gated": True}],
                         ids=["moe", "sliding-window", "sinks-gated"])
def test_packed_rows_give_the_padded_logits_and_gradients(changes):
    model = build_model(config(changes), seed=0)
    batches = padded_batches(torch.Generator().manual_seed(1))

    padded = torch.cat([model(x, logits_at_BT=y != -100) for x, y in batches])
    padded.square().sum().backward()
    padded_grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    x_1N, y_1N, rows = PackedRows.pack(batches, PAD)
    assert x_1N.shape == (1, 3 + 7 + 5 + 11 + 9)
    packed = model(x_1N, logits_at_BT=y_1N != -100, rows=rows)
    torch.testing.assert_close(packed, padded, rtol=1e-5, atol=1e-5)
    packed.square().sum().backward()
    for name, p in model.named_parameters():
        if name in padded_grads:
            torch.testing.assert_close(p.grad, padded_grads[name], rtol=1e-4, atol=1e-5, msg=name)


def test_a_token_does_not_see_the_row_before_it():
    model = build_model(config(), seed=0)
    batches = padded_batches(torch.Generator().manual_seed(2))
    x_1N, y_1N, rows = PackedRows.pack(batches, PAD)
    before = model(x_1N, rows=rows)
    changed = x_1N.clone()
    changed[0, :3] = (changed[0, :3] % 63) + 1  # the first row's tokens, all different
    after = model(changed, rows=rows)
    torch.testing.assert_close(after[0, 3:], before[0, 3:])
    assert not torch.allclose(after[0, :3], before[0, :3])


def test_left_padding_is_refused():
    x = torch.tensor([[PAD, 5, 6]])
    with pytest.raises(ValueError, match="right-padded"):
        PackedRows.pack([(x, x)], PAD)


def test_a_model_with_linear_attention_is_refused():
    model = build_model(config({"attention.linear_layers": (0,)}), seed=0)
    x_1N, _, rows = PackedRows.pack(padded_batches(torch.Generator().manual_seed(3)), PAD)
    with pytest.raises(ValueError, match="softmax attention"):
        model(x_1N, rows=rows)
