"""fp32 products through oneDNN on packed weights give the BLAS's results, follow a weight changed in place, and
stay out of autograd and of other dtypes; a model switched to them decodes a batch with the same logits."""

import pytest
import torch
import torch.nn.functional as F

import hepta
from hepta.model import packed_linear
from hepta.model.matvec import Linear
from helpers import decoded_logits

pytestmark = pytest.mark.skipif(not packed_linear.available(), reason="torch built without oneDNN")


def test_packed_products_equal_the_blas_for_any_number_of_rows():
    layer = Linear(96, 200, bias=True)
    layer.use_packed(True)
    assert layer.packed is not None
    with torch.no_grad():
        for shape in [(1, 96), (3, 96), (4, 1, 96), (2, 37, 96)]:
            x = torch.randn(*shape)
            assert (layer(x) - F.linear(x, layer.weight, layer.bias)).abs().max() <= 1e-4
            assert layer(x).shape == (*shape[:-1], 200)


def test_a_weight_changed_in_place_is_packed_again():
    layer = Linear(64, 32, bias=False)
    layer.use_packed(True)
    x = torch.randn(5, 64)
    with torch.no_grad():
        layer(x)
        layer.weight.mul_(-2.0)  # as a load or an optimizer step would
        assert (layer(x) - x @ layer.weight.t()).abs().max() <= 1e-4


def test_autograd_and_other_dtypes_keep_the_blas():
    layer = Linear(64, 32)
    layer.use_packed(True)
    x = torch.randn(5, 64)
    out = layer(x)
    assert out.requires_grad and out.grad_fn is not None  # with autograd on: F.linear, which has a backward
    assert packed_linear.pack(layer.weight.detach().bfloat16()) is None  # bf16 products already go through oneDNN
    layer.use_packed(False)
    assert layer.packed is None


def test_a_model_decoding_a_batch_with_packed_weights_gives_the_blas_logits():
    ids = torch.randint(0, 256, (4, 7), generator=torch.Generator().manual_seed(1))
    model = hepta.build_model(hepta.get_preset("tiny"), seed=0).eval()
    expected = decoded_logits(model, ids, prefill=4)[0]
    model.use_packed_linear(True)
    assert all(m.packed is not None for m in model.modules() if isinstance(m, Linear))
    assert (decoded_logits(model, ids, prefill=4)[0] - expected).abs().max() <= 1e-4
