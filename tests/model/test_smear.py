"""Smear: each input embedding takes in a gated share of the previous token's (model/smear.py)."""

import pytest
import torch

import hepta
from hepta.config import count_params
from hepta.errors import HeptaError

SHAPE = {"vocab_size": 300, "dim": 64, "attention.num_heads": 4, "attention.num_kv_heads": 2,
         "attention.head_dim": 16, "moe.num_experts": 4, "moe.expert_hidden_dim": 32, "max_seq_len": 64}


def build(smear: bool):
    return hepta.build_model(hepta.get_preset("tiny").with_changes({**SHAPE, "smear": smear}), seed=0).eval()


def test_a_smear_starts_at_none_and_adds_its_gate_to_the_parameter_count():
    plain, smeared = build(False), build(True)
    smeared.load_state_dict(plain.state_dict(), strict=False)  # the same weights, the smear's own aside
    ids = torch.randint(0, 300, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(smeared(ids), plain(ids))
    cfg = hepta.get_preset("tiny").with_changes(SHAPE)
    assert count_params(cfg.with_changes({"smear": True})).total == count_params(cfg).total + 12 + 1 + 1


def test_each_embedding_takes_in_a_gated_share_of_the_one_before_it():
    model = build(True)
    with torch.no_grad():
        model.smear.scale.fill_(0.5)
        ids = torch.tensor([[5, 17, 42]])
        x = model.embed(ids)
        share = 0.5 * torch.sigmoid(model.smear.gate(x[..., :12]))
        want = torch.cat([x[:, :1], x[:, 1:] + share[:, 1:] * x[:, :-1]], 1)
        torch.testing.assert_close(model.smear(x, torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], 1)), want)
        # so a token's logits now depend on the token before it, and the first token's on nothing before
        other = model(torch.tensor([[6, 17, 42]]))
        mine = model(ids)
    assert not torch.allclose(other[0, 1], mine[0, 1])


def test_a_smeared_model_is_not_exported_as_a_transformers_checkpoint(tmp_path):
    from hepta.interop.hf_save import save_hf

    exportable = {**SHAPE, "moe.num_shared_experts": 0, "moe.num_dense_layers": 0, "router.scoring": "softmax"}
    cfg = hepta.get_preset("tiny").with_changes(exportable)
    save_hf(hepta.build_model(cfg, seed=0), tmp_path / "plain")
    with pytest.raises(HeptaError, match="smear=True cannot be written as qwen3_moe"):
        save_hf(hepta.build_model(cfg.with_changes({"smear": True}), seed=0), tmp_path / "smeared")
