"""The model folder: config.json + model.safetensors (sharded with an index when large).

Weights are read and written with safetensors only; nothing here unpickles.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hepta.config import ModelConfig
from hepta.errors import HeptaError
from hepta.fileio import atomic_path, atomic_write_text
from hepta.model import Transformer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 5 * 2**30
T = TypeVar("T")  # a tensor, or anything with numel() and element_size()


def build_model(cfg: ModelConfig, seed: int | None = None) -> Transformer:
    """Build and initialise a model on the current default device (meta: no memory, no init)."""
    model = Transformer(cfg)
    if model.embed.weight.device.type != "meta":
        model.init_weights(seed)
    return model


def _weights_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    if model.config.tie_embeddings:
        state.pop("output.weight")  # the same tensor as embed.weight; safetensors stores it once
    return {k: v.detach().contiguous() for k, v in state.items()}


def shard_groups(named: list[tuple[str, T]], max_shard_bytes: int) -> list[list[tuple[str, T]]]:
    """Consecutive (name, tensor) runs of at most `max_shard_bytes` each (one larger tensor stands alone)."""
    groups: list[list[tuple[str, T]]] = []
    size = 0
    for name, tensor in named:
        nbytes = tensor.numel() * tensor.element_size()
        if not groups or (groups[-1] and size + nbytes > max_shard_bytes):
            groups.append([])
            size = 0
        groups[-1].append((name, tensor))
        size += nbytes
    return groups


def save_weights(model: Transformer, folder: Path, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> None:
    """Write the weights so that a crash at any moment leaves the previous complete set readable.

    One file: written beside and renamed over `model.safetensors`. Shards: written under names
    no earlier save used, then the index is renamed into place; that rename is the commit,
    and only after it are files the index no longer lists removed.
    """
    folder.mkdir(parents=True, exist_ok=True)
    state = _weights_state_dict(model)
    shards = [dict(group) for group in shard_groups(list(state.items()), max_shard_bytes)] or [{}]
    metadata = {"format": "pt"}
    if len(shards) == 1:
        with atomic_path(folder / WEIGHTS_FILE) as tmp:
            save_file(shards[0], str(tmp), metadata=metadata)
        (folder / INDEX_FILE).unlink(missing_ok=True)
        _remove_unlisted_shards(folder, keep=set())
        return
    tag = secrets.token_hex(4)
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        name = f"model-{tag}-{i:05d}-of-{len(shards):05d}.safetensors"
        with atomic_path(folder / name) as tmp:
            save_file(shard, str(tmp), metadata=metadata)
        weight_map.update({k: name for k in shard})
    total = sum(t.numel() * t.element_size() for t in state.values())
    atomic_write_text(folder / INDEX_FILE, json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    (folder / WEIGHTS_FILE).unlink(missing_ok=True)
    _remove_unlisted_shards(folder, keep=set(weight_map.values()))


def _remove_unlisted_shards(folder: Path, keep: set[str]) -> None:
    for shard in folder.glob("model-*-of-*.safetensors"):
        if shard.name not in keep:
            shard.unlink(missing_ok=True)


def save_model(model: Transformer, folder: str | Path) -> None:
    folder = Path(folder)
    model.config.save(folder / CONFIG_FILE)
    save_weights(model, folder)


def read_config(folder: Path) -> ModelConfig:
    path = folder / CONFIG_FILE
    if not folder.is_dir():
        raise HeptaError(f"model folder {str(folder)!r} does not exist; pass the output folder of `hepta train`")
    if not path.is_file():
        raise HeptaError(f"{path} is missing; a model folder holds config.json and model.safetensors")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HeptaError(f"{path} is not valid JSON ({e}); restore it or re-export the model") from e
    model_type = data.get("model_type", "hepta")
    if model_type != "hepta":
        raise HeptaError(f"{path} describes a {model_type!r} model, not a hepta folder; open it with hepta.load")
    try:
        return ModelConfig.from_dict(data)
    except (TypeError, ValueError) as e:
        raise HeptaError(f"{path} is not a valid hepta config: {e}") from e


def _weight_files(folder: Path) -> list[Path]:
    """The files of the newest complete save: the index's shards, or `model.safetensors`.

    Both can exist only after a crash between a save's commit and its clean-up; the newer wins.
    """
    index, single = folder / INDEX_FILE, folder / WEIGHTS_FILE
    if not index.is_file() or (single.is_file() and single.stat().st_mtime_ns > index.stat().st_mtime_ns):
        return [single]
    return index_files(index)


def index_files(index: Path) -> list[Path]:
    """The shard files an index (`*.index.json`, safetensors or pickle) lists, beside it."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return sorted({index.parent / name for name in weight_map.values()})
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
        raise HeptaError(f"{index} is not a valid shard index ({type(e).__name__}: {e}); "
                         "restore it or re-export the model") from e


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for file in _weight_files(folder):
        if not file.is_file():
            raise HeptaError(f"{file} is missing; the checkpoint is incomplete, re-run or re-export it")
        try:
            state.update(load_file(str(file)))
        except (SafetensorError, OSError, ValueError) as e:
            raise HeptaError(f"{file} is corrupt or truncated ({e}); restore it from a complete checkpoint") from e
    return state


def load_hepta_folder(path: str | Path, device: str | torch.device = "cpu") -> Transformer:
    """Open a hepta model folder (not a Hugging Face one: `hepta.load` opens both) in eval mode."""
    folder = Path(path)
    cfg = read_config(folder)
    state = read_weights(folder)
    with torch.device("meta"):
        model = Transformer(cfg)
    expected = _weights_state_dict_names(model)
    missing = sorted(expected - state.keys())
    unexpected = sorted(state.keys() - expected)
    if missing or unexpected:
        raise HeptaError(f"{folder} does not match its config.json (missing {missing[:3]}, unexpected {unexpected[:3]}); "
                         "the weights and config come from different models")
    for name, tensor in model.state_dict().items():
        if name in state and state[name].shape != tensor.shape:
            raise HeptaError(f"tensor {name!r} in {folder} has shape {tuple(state[name].shape)}, "
                             f"config.json needs {tuple(tensor.shape)}")
    model.load_state_dict(state, strict=False, assign=True)
    if cfg.tie_embeddings:
        model.output.weight = model.embed.weight
    # non-persistent buffers are not in the file: materialise them
    for moe in model.moe_layers():
        moe.last_load = torch.zeros(cfg.moe.num_experts)
        moe.load_since_update = torch.zeros(cfg.moe.num_experts)
    return model.to(device).eval()


def _weights_state_dict_names(model: Transformer) -> set[str]:
    names = set(model.state_dict().keys())
    if model.config.tie_embeddings:
        names.discard("output.weight")
    return names
