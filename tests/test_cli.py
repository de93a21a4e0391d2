"""The command line as a user meets it: real subprocesses, exit codes, one-line errors."""

import json
from pathlib import Path

import pytest
import torch

import hepta
from helpers import micro_set_flags, run_cli


def assert_one_line_error(proc, *words):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, proc.stderr
    for word in words:
        assert word in error_lines[0], (word, error_lines[0])


def test_info_json_has_exact_counts():
    proc = run_cli("info", "grok5-7t", "--json")
    assert proc.returncode == 0
    data = json.loads(proc.stdout)
    count = hepta.count_params(hepta.get_preset("grok5-7t"))
    assert (data["total_params"], data["active_params"]) == (count.total, count.active)
    assert data["bf16_weight_bytes"] == 2 * count.total
    # the vocabulary holds the image and audio code blocks after the text and special ids, end to end
    blocks = data["vocab_blocks"]
    assert list(blocks) == ["text", "special", "image", "audio"]
    assert blocks["special"] == [blocks["text"][1], blocks["text"][1] + 32]
    assert blocks["image"] == [blocks["special"][1], blocks["special"][1] + 15360]
    assert blocks["audio"] == [blocks["image"][1], 131072] and blocks["audio"][1] - blocks["audio"][0] == 4375


def test_info_table_shows_components_and_the_vocabularys_blocks():
    proc = run_cli("info", "tiny")
    assert proc.returncode == 0
    assert "routed_experts" in proc.stdout and "active" in proc.stdout
    assert "a text model: no image or audio codes" in proc.stdout
    omni = run_cli("info", "omni-tiny", "--json")
    assert json.loads(omni.stdout)["vocab_blocks"] == {"text": [0, 4064], "special": [4064, 4096],
                                                       "image": [4096, 4221], "audio": [4221, 5221]}


def test_unknown_preset():
    assert_one_line_error(run_cli("info", "gpt-9"), "unknown preset", "grok5-7t")


@pytest.mark.parametrize("flag", ["moe.top_k=99", "top_k=99"])  # dotted, and the flat name of earlier versions
def test_invalid_config_value(tmp_path, corpus, flag):
    proc = run_cli("train", "--out", str(tmp_path / "r"), "--data", str(corpus), "--set", flag)
    assert_one_line_error(proc, "ModelConfig.moe.top_k=99", "between 1 and num_experts")
    assert not (tmp_path / "r").exists()


def test_unknown_config_field_lists_the_dotted_names(tmp_path, corpus):
    proc = run_cli("train", "--out", str(tmp_path / "r"), "--data", str(corpus), "--set", "moe.experts=4")
    assert_one_line_error(proc, "unknown ModelConfig field 'moe.experts'", "moe.num_experts")
    assert not (tmp_path / "r").exists()


def test_empty_corpus(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = run_cli("train", "--out", str(tmp_path / "r"), "--data", str(tmp_path / "empty"), *micro_set_flags(),
                   "--seq-len", "64")
    assert_one_line_error(proc, "no text")


def test_missing_checkpoint(tmp_path):
    assert_one_line_error(run_cli("generate", "--model", str(tmp_path / "nope"), "--prompt", "x"), "does not exist")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus) -> Path:
    out = tmp_path_factory.mktemp("trained") / "run"
    proc = run_cli("train", "--out", str(out), "--data", str(corpus), *micro_set_flags(), "--steps", "6",
                   "--batch-size", "4", "--seq-len", "64", "--save-every", "3", "--eval-every", "3", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "validation loss" in proc.stdout
    return out


def test_generate_streams_a_continuation(trained):
    proc = run_cli("generate", "--model", str(trained), "--prompt", "import ", "--max-tokens", "10", "--seed", "0")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("import ") and len(proc.stdout) > len("import \n")


def test_prompt_longer_than_context(trained):
    proc = run_cli("generate", "--model", str(trained), "--prompt", "word " * 500)
    assert_one_line_error(proc, "context", "shorten the prompt")


def test_corrupt_checkpoint(trained, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(trained, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert_one_line_error(run_cli("generate", "--model", str(broken), "--prompt", "x"), "model.safetensors", "corrupt")
    (broken / "config.json").write_text("{broken")
    assert_one_line_error(run_cli("generate", "--model", str(broken), "--prompt", "x"), "config.json")


def test_failed_run_into_an_existing_folder_changes_nothing(trained, corpus):
    before = {p.name: p.read_bytes() for p in trained.iterdir() if p.is_file()}
    proc = run_cli("train", "--out", str(trained), "--data", str(corpus), *micro_set_flags(), "--steps", "6")
    assert_one_line_error(proc, "already holds a training run", "--resume")
    proc = run_cli("train", "--out", str(trained), "--resume", "--lr", "1.0")
    assert_one_line_error(proc, "--lr")
    assert before == {p.name: p.read_bytes() for p in trained.iterdir() if p.is_file()}


def test_debug_shows_the_traceback():
    proc = run_cli("--debug", "info", "gpt-9")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


@pytest.mark.parametrize("saved, given", [
    ({"num_experts": 4, "router_scoring": "softmax"}, {"moe.num_experts": 4, "router.scoring": "softmax"}),
    ({"moe.num_experts": 4, "attention": "mla"}, {"num_experts": 4, "attention.kind": "mla"}),
    ({"moe.num_experts": 4}, {"moe.num_experts": 4}),
], ids=["saved-flat", "saved-dotted", "same-names"])
def test_resume_takes_the_saved_set_values_under_flat_or_dotted_names(tmp_path, saved, given):
    from hepta.cli import resume_changes
    from hepta.train.loop import TrainArgs

    run = TrainArgs(out=str(tmp_path), overrides=saved)
    assert resume_changes({"steps": 10}, given, run) == []
    assert resume_changes({}, {**given, "moe.top_k": 1}, run) == ["--set"]  # a new value is still refused
    assert resume_changes({"lr": 1.0}, given, run) == ["--lr"]
    assert resume_changes({"video_captions": False}, given, run) == ["--no-video-captions"]  # the flag as typed


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is there")
def test_a_gpu_asked_for_where_there_is_none_is_one_sentence_for_each_command(trained, corpus, tmp_path):
    for args in (("generate", "--model", str(trained), "--prompt", "x", "--device", "cuda"),
                 ("serve", "--model", str(trained), "--device", "cuda:1"),
                 ("train", "--out", str(tmp_path / "run"), "--data", str(corpus), "--steps", "1", "--device", "cuda")):
        assert_one_line_error(run_cli(*args), "--device cuda", "torch sees no CUDA GPU", "--device cpu")
    assert_one_line_error(run_cli("generate", "--model", str(trained), "--prompt", "x", "--device", "tpu"),
                          "auto, cpu, cuda or cuda:N")
    assert not (tmp_path / "run").exists()  # refused before anything was written
