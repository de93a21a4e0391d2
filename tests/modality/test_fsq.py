import torch

from hepta.modality.fsq import FSQ


def test_codes_and_latents_round_trip_over_the_whole_codebook():
    fsq = FSQ((8, 5, 5))
    codes = torch.arange(fsq.codebook_size).view(1, 10, 20)
    assert torch.equal(fsq.to_codes(fsq.from_codes(codes)), codes)


def test_quantized_latents_take_exactly_the_level_counts():
    fsq = FSQ((4, 5))
    q = fsq(torch.randn(64, 2, 8, 8) * 3)
    assert [q[:, c].unique().numel() for c in range(2)] == [4, 5]
    assert q.abs().max() <= 1.0


def test_gradients_pass_the_rounding():
    fsq = FSQ((5, 5, 5))
    z = torch.randn(2, 3, 4, 4, requires_grad=True)
    fsq(z).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
