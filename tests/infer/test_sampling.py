import pytest
import torch

from hepta.errors import HeptaError
from hepta.infer.sampling import SamplingParams, sample_next


def draws(logits, params, n=2000):
    gen = torch.Generator().manual_seed(0)
    return torch.stack([sample_next(logits, params, gen) for _ in range(n)]).flatten()


def test_temperature_zero_is_greedy():
    logits = torch.tensor([[0.1, 3.0, 2.9, -1.0]])
    assert draws(logits, SamplingParams(temperature=0), n=5).tolist() == [1] * 5


def test_a_vanishing_temperature_is_greedy_not_nan():
    logits = torch.tensor([[10.0, 9.0, float("-inf")]])
    assert draws(logits, SamplingParams(temperature=1e-38), n=5).tolist() == [0] * 5


def test_top_k_keeps_only_the_k_best():
    logits = torch.tensor([[1.0, 0.9, 0.8, 0.7, 0.6]])
    assert set(draws(logits, SamplingParams(top_k=2)).tolist()) == {0, 1}


def test_top_p_keeps_the_smallest_set_covering_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    seen = set(draws(probs.log(), SamplingParams(top_p=0.8)).tolist())
    assert seen == {0, 1}  # 0.5 + 0.3 reaches 0.8; the rest are cut
    assert set(draws(probs.log(), SamplingParams(top_p=0.81)).tolist()) == {0, 1, 2}


def test_sampling_follows_the_distribution_and_seed_reproduces():
    probs = torch.tensor([[0.7, 0.2, 0.1]])
    samples = draws(probs.log(), SamplingParams(temperature=1.0))
    freq = torch.bincount(samples, minlength=3).float() / samples.numel()
    torch.testing.assert_close(freq, probs[0], atol=0.04, rtol=0)
    assert torch.equal(samples, draws(probs.log(), SamplingParams(temperature=1.0)))


@pytest.mark.parametrize("kwargs", [{"temperature": -1}, {"top_p": 0}, {"top_p": 1.5}, {"top_k": -2}])
def test_invalid_parameters_are_refused(kwargs):
    with pytest.raises(HeptaError):
        SamplingParams(**kwargs)
