"""Hugging Face Hub ids as --model, resolved by huggingface_hub against a cache the test lays out
itself (no network): revisions, offline mode, what is fetched, and one-line failures."""

import json
import os
import shutil

import pytest
from huggingface_hub.utils import filter_repo_objects

from helpers import run_cli
from hepta.interop.hub import FETCHED_FILES
from test_hf_generate import make_folder

COMMITS = {"main": "a" * 40, "v1": "b" * 40}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """HF_HUB_CACHE holding Org/Tiny at two revisions: main (2 layers) and the tag v1 (3 layers)."""
    root = tmp_path_factory.mktemp("hub")
    repo = root / "models--Org--Tiny"
    for revision, commit in COMMITS.items():
        snapshot = repo / "snapshots" / commit
        make_folder(snapshot)
        if revision == "v1":  # another model at the tag: one more layer
            config = json.loads((snapshot / "config.json").read_text())
            source = tmp_path_factory.mktemp("v1")
            from transformers import OlmoeConfig, OlmoeForCausalLM

            OlmoeForCausalLM(OlmoeConfig(**{**config, "num_hidden_layers": 3})).save_pretrained(source)
            for name in ("config.json", "model.safetensors"):
                shutil.copyfile(source / name, snapshot / name)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / revision).write_text(commit)
    return root


def hub_env(cache, **extra) -> dict:
    return {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_DISABLE_TELEMETRY": "1", **extra}


def test_a_hub_id_generates_as_its_cached_snapshot_does(hub):
    env = hub_env(hub, HF_HUB_OFFLINE="1")
    by_id = run_cli("generate", "--model", "Org/Tiny", "--prompt", "the quick", "--max-tokens", "6",
                    "--temperature", "0", env=env)
    assert by_id.returncode == 0, by_id.stderr
    folder = hub / "models--Org--Tiny" / "snapshots" / COMMITS["main"]
    by_folder = run_cli("generate", "--model", str(folder), "--prompt", "the quick", "--max-tokens", "6",
                        "--temperature", "0")
    assert by_id.stdout == by_folder.stdout and by_id.stdout.startswith("the quick")


def test_a_revision_picks_the_tag_and_convert_reads_hub_ids(hub, tmp_path):
    env = hub_env(hub, HF_HUB_OFFLINE="1")
    for revision, layers in ((None, 2), ("v1", 3), (COMMITS["v1"], 3)):
        out = tmp_path / f"hepta-{revision}"
        flags = ["--revision", revision] if revision else []
        proc = run_cli("convert", "--from", "Org/Tiny", *flags, "--to", str(out), env=env)
        assert proc.returncode == 0, proc.stderr
        assert json.loads((out / "config.json").read_text())["num_layers"] == layers


@pytest.mark.parametrize("command", [["generate", "--prompt", "x"], ["serve"], ["convert", "--to", "unused"]])
def test_an_id_missing_from_the_cache_offline_is_one_line(hub, command, tmp_path):
    flag = "--from" if command[0] == "convert" else "--model"
    args = [command[0], flag, "Org/Missing", *command[1:]]
    if command[0] == "convert":
        args[-1] = str(tmp_path / "out")
    proc = run_cli(*args, env=hub_env(hub, HF_HUB_OFFLINE="1"))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "Org/Missing is not in the Hugging Face cache" in proc.stderr and "HF_HUB_OFFLINE" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_an_unreachable_hub_is_one_line_and_a_bad_revision_or_name_is_named(hub):
    env = hub_env(hub, HF_ENDPOINT="http://127.0.0.1:9")  # nothing listens there
    proc = run_cli("generate", "--model", "Org/Missing", "--prompt", "x", env=env)
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1
    assert "could not reach the Hugging Face Hub (http://127.0.0.1:9)" in proc.stderr
    proc = run_cli("generate", "--model", "not//an id", "--prompt", "x", env=env)
    assert "it does not exist, and it is not a Hugging Face Hub id" in proc.stderr
    proc = run_cli("generate", "--model", str(hub), "--revision", "v1", "--prompt", "x", env=env)
    assert "--revision applies to Hugging Face Hub ids" in proc.stderr


def test_only_weights_configs_and_tokenizer_files_are_fetched():
    repo = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json",
            "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
            "pytorch_model.bin", "original/consolidated.00.pth", "modeling_custom.py", "README.md",
            "onnx/model.onnx", "metal/model.bin"]
    fetched = set(filter_repo_objects(repo, allow_patterns=FETCHED_FILES))
    assert fetched == set(repo[:8])
