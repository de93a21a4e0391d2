"""`hepta eval`: the judge, the scoring on known outputs, and each task end to end on a small model."""

import json

import numpy as np
import pytest
from helpers import run_cli
from omni_fixture import make_omni_folder

from hepta.eval.judge import digit_judge
from hepta.eval.scoring import editing_scores, generation_accuracy, recognition_accuracy
from hepta.modality import digits


def test_the_judge_reads_held_out_digits_it_never_saw():
    judge = digit_judge()
    held_out = digits.load_digits_split("held_out")
    assert judge.accuracy_on_originals >= 0.9
    assert len(judge.classifier.support_) <= digits.HELD_OUT_FROM  # fitted on the training 80% only
    assert set(digits.load_digits_split("train").indices) .isdisjoint(held_out.indices)


def test_exact_edits_score_zero_error_and_the_judges_own_accuracy():
    judge = digit_judge()
    held_out = digits.load_digits_split("held_out")
    for edit, apply in digits.EDITS.items():
        scores = editing_scores(judge, edit, apply(held_out.images), held_out.images, held_out.labels)
        assert scores["mae"] == 0.0
        assert scores["accuracy"] == pytest.approx(judge.accuracy_on_originals, abs=0.02)
    # an unedited copy is caught: the error is large for an inversion
    assert editing_scores(judge, "invert", held_out.images, held_out.images, held_out.labels)["mae"] > 0.5


def test_recognition_and_generation_scoring():
    labels = np.array([3, 1, 4])
    assert recognition_accuracy(["3", " 1<|end|>", "x"], labels) == pytest.approx(2 / 3)
    held_out = digits.load_digits_split("held_out")
    assert generation_accuracy(digit_judge(), held_out.images[:50], held_out.labels[:50]) >= 0.9


@pytest.fixture(scope="module")
def omni_dir(tmp_path_factory):
    return make_omni_folder(tmp_path_factory.mktemp("eval") / "omni")


@pytest.mark.parametrize("task, keys, n", [
    ("image-recognition", {"accuracy"}, 5),
    ("image-generation", {"accuracy", "temperature", "seed"}, 5),
    ("image-editing", {"accuracy", "mae", "per_edit"}, 15),
])
def test_each_image_task_runs_through_the_engine_and_prints_one_json_object(omni_dir, task, keys, n):
    result = run_cli("eval", "--model", str(omni_dir), "--task", task, "--limit", "5", "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["task"] == task and report["n"] == n and keys <= set(report)
    assert 0.0 <= report["accuracy"] <= 1.0 and report["judge_accuracy_on_originals"] >= 0.9


def test_a_text_only_model_is_refused_image_tasks_in_one_sentence(omni_dir, tmp_path):
    import shutil

    text_only = tmp_path / "text"
    shutil.copytree(omni_dir, text_only)
    shutil.rmtree(text_only / "image_tokenizer")
    result = run_cli("eval", "--model", str(text_only), "--task", "image-recognition")
    assert result.returncode == 1 and "reads and writes text only" in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    result = run_cli("eval", "--model", str(omni_dir), "--task", "poetry")
    assert result.returncode == 1 and ("image-recognition, image-generation, image-editing, asr, tts, asr-real, "
                                       "audio-tokenizer, video-order, video-time, video-count, text") in result.stderr


def test_text_loss_against_a_baseline_and_a_baseline_that_tokenizes_otherwise_is_refused(omni_dir, tmp_path):
    import shutil

    from hepta.tokenizer import Tokenizer

    other_weights = make_omni_folder(tmp_path / "other", seed=1)  # the same tokenizer, other weights
    result = run_cli("eval", "--model", str(omni_dir), "--task", "text", "--baseline", str(other_weights), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["n"] == 256 and report["loss"] > 0 and report["baseline_loss"] > 0
    assert report["loss"] != report["baseline_loss"]
    assert report["ratio"] == pytest.approx(report["loss"] / report["baseline_loss"])

    other_tokens = tmp_path / "other_tokens"
    shutil.copytree(omni_dir, other_tokens)
    codes = Tokenizer.load(omni_dir).layout.num_image_codes
    Tokenizer.train(["zebra quartz " * 50] * 20, text_vocab_size=300).with_image_codes(codes).save(other_tokens)
    result = run_cli("eval", "--model", str(omni_dir), "--task", "text", "--baseline", str(other_tokens))
    assert result.returncode == 1 and "splits text into other tokens" in result.stderr
