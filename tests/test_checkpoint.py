import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import hepta
from hepta.checkpoint import save_weights
from hepta.errors import HeptaError


def tiny_model(**overrides):
    cfg = hepta.get_preset("tiny").with_changes({
        "vocab_size": 300, "dim": 64, "attention.num_heads": 2, "attention.num_kv_heads": 1, "attention.head_dim": 32,
        "moe.num_experts": 4, "moe.expert_hidden_dim": 32, **overrides})
    return hepta.build_model(cfg, seed=1).eval()


@pytest.mark.parametrize("overrides", [{}, {"tie_embeddings": True}])
def test_save_then_load_gives_the_same_logits(tmp_path, overrides):
    model = tiny_model(**overrides)
    with torch.no_grad():
        model.moe_layers()[0].router.expert_bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))  # routing state too
    hepta.save_model(model, tmp_path)
    again = hepta.load(tmp_path)
    ids = torch.randint(0, 300, (2, 9))
    torch.testing.assert_close(again(ids), model(ids), atol=1e-6, rtol=1e-6)
    if overrides.get("tie_embeddings"):
        assert again.output.weight is again.embed.weight


def test_large_models_are_sharded_with_an_index(tmp_path):
    model = tiny_model()
    save_weights(model, tmp_path, max_shard_bytes=200_000)
    model.config.save(tmp_path / "config.json")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and not (tmp_path / "model.safetensors").exists()
    ids = torch.randint(0, 300, (1, 5))
    # (not bit-exact: BLAS may pick other kernels for differently aligned buffers)
    torch.testing.assert_close(hepta.load(tmp_path)(ids), model(ids), atol=1e-6, rtol=1e-6)


def test_missing_tensor_and_wrong_shape_are_named(tmp_path):
    model = tiny_model()
    hepta.save_model(model, tmp_path)
    weights = load_file(str(tmp_path / "model.safetensors"))
    name = "layers.1.ffn.experts.down_proj"
    save_file({k: v for k, v in weights.items() if k != name}, str(tmp_path / "model.safetensors"))
    with pytest.raises(HeptaError, match="missing"):
        hepta.load(tmp_path)
    weights[name] = torch.zeros(3, 3)
    save_file(weights, str(tmp_path / "model.safetensors"))
    with pytest.raises(HeptaError, match=name):
        hepta.load(tmp_path)


def test_foreign_config_is_refused_by_name(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(HeptaError, match="llama"):
        hepta.load(tmp_path)


def test_a_crash_in_the_middle_of_a_sharded_save_leaves_the_previous_weights(tmp_path, monkeypatch):
    import hepta.checkpoint as checkpoint

    old, new = tiny_model(), tiny_model()
    with torch.no_grad():
        for p in new.parameters():
            p.add_(1.0)
    save_weights(old, tmp_path, max_shard_bytes=200_000)
    old.config.save(tmp_path / "config.json")
    real_save_file, calls = checkpoint.save_file, []

    def crash_on_second_shard(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed mid-save")
        real_save_file(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", crash_on_second_shard)
    with pytest.raises(KeyboardInterrupt):
        save_weights(new, tmp_path, max_shard_bytes=200_000)
    monkeypatch.setattr(checkpoint, "save_file", real_save_file)
    torch.testing.assert_close(hepta.load(tmp_path).state_dict(), old.state_dict(), atol=0, rtol=0)
    # then a completed save to a single file replaces the shards entirely
    save_weights(new, tmp_path)
    assert not list(tmp_path.glob("model-*-of-*.safetensors")) and not (tmp_path / "model.safetensors.index.json").exists()
    torch.testing.assert_close(hepta.load(tmp_path).state_dict(), new.state_dict(), atol=0, rtol=0)


def test_a_broken_shard_index_is_named(tmp_path):
    model = tiny_model()
    save_weights(model, tmp_path, max_shard_bytes=200_000)
    model.config.save(tmp_path / "config.json")
    (tmp_path / "model.safetensors.index.json").write_text('{"metadata": {}}')
    with pytest.raises(HeptaError, match="index.json"):
        hepta.load(tmp_path)


def test_a_folder_whose_config_json_has_the_flat_first_format_still_loads(tmp_path):
    # tests/fixtures/config_v1/tiny.json was written by the flat ModelConfig from the tiny preset
    flat = (Path(__file__).parent / "fixtures" / "config_v1" / "tiny.json").read_text()
    model = hepta.build_model(hepta.get_preset("tiny"), seed=0).eval()
    hepta.save_model(model, tmp_path)
    assert isinstance(json.loads((tmp_path / "config.json").read_text())["moe"], dict)  # written in sections
    (tmp_path / "config.json").write_text(flat)
    again = hepta.load(tmp_path).eval()
    assert again.config == model.config
    ids = torch.randint(0, 4096, (1, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(again(ids), model(ids), atol=0, rtol=0)
