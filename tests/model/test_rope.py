import math

import torch

from hepta.model.rope import RopeScaling, rope_inv_freq, scaled_rope_cos_sin, softmax_scale_multiplier, yarn_mscale


def test_default_scaling_is_plain_rope_and_linear_divides_the_frequencies():
    positions = torch.arange(50)
    inv_freq = 1.0 / 10000.0 ** (torch.arange(0, 16, 2).float() / 16)  # RoPE as published
    angles = positions.float()[:, None] * inv_freq
    plain = (torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin())
    for got, expected in zip(scaled_rope_cos_sin(positions, 16, 10000.0, RopeScaling()), plain):
        torch.testing.assert_close(got, expected)
    inv_freq, factor = rope_inv_freq(16, 10000.0, RopeScaling("linear", factor=4.0))
    torch.testing.assert_close(inv_freq * 4, rope_inv_freq(16, 10000.0, RopeScaling())[0])
    assert factor == 1.0


def test_yarn_keeps_fast_dims_interpolates_slow_dims_and_sets_deepseek_temperatures():
    base = rope_inv_freq(64, 10000.0, RopeScaling())[0]
    scaling = RopeScaling("yarn", factor=40.0, original_max_len=4096, mscale=1.0, mscale_all_dim=1.0)
    inv_freq, attention_factor = rope_inv_freq(64, 10000.0, scaling)
    assert inv_freq[0] == base[0]  # highest frequency: extrapolated unchanged
    torch.testing.assert_close(inv_freq[-1], base[-1] / 40)  # lowest: interpolated
    assert attention_factor == 1.0  # mscale == mscale_all_dim: the cos/sin factor cancels ...
    assert math.isclose(softmax_scale_multiplier(scaling), (0.1 * math.log(40) + 1) ** 2)  # ... into the softmax
    assert math.isclose(rope_inv_freq(64, 1e4, RopeScaling("yarn", factor=4.0))[1], yarn_mscale(4.0))
    assert softmax_scale_multiplier(RopeScaling("yarn", factor=4.0)) == 1.0
