"""The speech side of `hepta eval`: the independent recogniser, word error rate on known outputs,
and the asr, tts and asr-real tasks end to end on a small model."""

import json

import numpy as np
import pytest
from helpers import run_cli
from omni_fixture import make_omni_folder

from hepta.eval.recogniser import domain_recogniser, word_error_rate
from hepta.eval.speech_eval import normalise, real_recordings
from hepta.modality import speech_data


def test_word_error_rate_counts_substitutions_deletions_and_insertions():
    assert word_error_rate(["turn on the lights"], ["turn on the lights"]) == 0.0
    assert word_error_rate(["turn on the lights"], ["turn off the lights"]) == pytest.approx(1 / 4)
    assert word_error_rate(["open the door", "stop"], ["open door", "stop stop"]) == pytest.approx(2 / 4)
    assert word_error_rate(["yes"], [""]) == 1.0  # silence is a deletion, not an error of the scorer
    assert normalise("Turn ON the lights!") == "turn on the lights"


def test_the_recogniser_hears_the_house_voice_and_not_silence():
    judge = domain_recogniser()
    utterances = speech_data.house_utterances("held_out", 12, seed=5)
    heard = [judge.transcribe(u.wave) for u in utterances]
    assert word_error_rate([u.text for u in utterances], heard) < 0.35
    assert judge.transcribe(np.zeros(16000, dtype=np.float32)) == ""


@pytest.fixture(scope="module")
def omni(tmp_path_factory):
    return make_omni_folder(tmp_path_factory.mktemp("omni") / "model")


@pytest.mark.parametrize("task, keys", [("asr", {"wer", "sentence_accuracy", "voices"}),
                                        ("tts", {"wer", "reference_wer", "ratio"}),
                                        ("audio-tokenizer", {"wer", "reference_wer", "mel_distance"})])
def test_speech_tasks_report_their_metrics_as_json(omni, task, keys):
    result = run_cli("eval", "--model", str(omni), "--task", task, "--limit", "2", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["task"] == task and report["n"] == 2 and keys <= set(report)
    assert report["wer"] >= 0.5  # an untrained model: the metric is not fooled by garbage


def test_asr_real_reports_per_source_or_names_the_packages(omni):
    result = run_cli("eval", "--model", str(omni), "--task", "asr-real", "--json")
    if real_recordings():
        report = json.loads(result.stdout)
        assert result.returncode == 0 and report["n"] == sum(s["n"] for s in report["by_source"].values())
    else:
        assert result.returncode != 0 and "apt-get install alsa-utils klettres-data" in result.stderr


def test_a_model_without_speech_is_refused_with_the_reason(tmp_path):
    folder = make_omni_folder(tmp_path / "images_only", audio=False)
    result = run_cli("eval", "--model", str(folder), "--task", "asr", "--limit", "2")
    assert result.returncode != 0 and "does not hear or speak" in result.stderr and "Traceback" not in result.stderr
