"""`hepta eval` video tasks: the scoring on known replies, and each task end to end on real MP4 clips."""

import json

import pytest
from helpers import run_cli
from omni_fixture import make_omni_folder

from hepta.eval.video_tasks import score, tokens_per_minute
from hepta.modality import video_data as vd


def test_accuracy_overall_and_per_clip_length():
    questions = [vd.VideoQuestion("order", "Which digit appeared first?", "7", 7),
                 vd.VideoQuestion("time", "When did the 3 first appear?", "0:42", 41.25),
                 vd.VideoQuestion("count", "How many digits appeared?", "5", 5),
                 vd.VideoQuestion("time", "When did the 1 first appear?", "2:01", 120.5)]
    replies = ["7", " 0:41 ", "4", "2:03"]  # right, right (within a second), wrong, wrong (2.5 s off)
    result = score(questions, replies, [30, 30, 60, 180])
    assert result["accuracy"] == 0.5 and result["n"] == 4
    assert result["by_length"] == {"30": {"accuracy": 1.0, "n": 2}, "60": {"accuracy": 0.0, "n": 1},
                                   "180": {"accuracy": 0.0, "n": 1}}
    assert result["examples"][0] == {"seconds": 30, "question": "Which digit appeared first?", "reply": "7",
                                     "answer": "7"}
    assert tokens_per_minute([[0] * 780, [0] * 1560], [30, 60]) == 1560


@pytest.fixture(scope="module")
def omni_dir(tmp_path_factory):
    return make_omni_folder(tmp_path_factory.mktemp("video-eval") / "omni", max_seq_len=6144)


@pytest.mark.parametrize("task", ["video-order", "video-time", "video-count"])
def test_each_video_task_asks_about_clips_of_every_length(omni_dir, task):
    result = run_cli("eval", "--model", str(omni_dir), "--task", task, "--limit", "1", "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["task"] == task and report["n"] == 3 and report["with_time"] is True
    assert set(report["by_length"]) == {"30", "60", "180"}
    assert all(v["n"] == 1 and 0 <= v["accuracy"] <= 1 for v in report["by_length"].values())
    # ~26 tokens a frame, but only the frames of new scenes (2 to 9 digits and the gaps between them):
    # all 1 frame a second of them would be over 1,500 tokens a minute
    assert 50 < report["prompt_tokens_per_minute"] < 700


def test_without_time_the_prompts_are_shorter_and_the_flag_is_for_video_tasks_only(omni_dir):
    timed = json.loads(run_cli("eval", "--model", str(omni_dir), "--task", "video-time", "--limit", "1",
                               "--json", "--quiet").stdout)
    result = run_cli("eval", "--model", str(omni_dir), "--task", "video-time", "--limit", "1", "--no-time",
                     "--json", "--quiet")
    untimed = json.loads(result.stdout)
    assert untimed["with_time"] is False
    assert untimed["prompt_tokens_per_minute"] < 0.95 * timed["prompt_tokens_per_minute"]
    refused = run_cli("eval", "--model", str(omni_dir), "--task", "image-recognition", "--no-time")
    assert refused.returncode != 0 and "--no-time applies to the video tasks" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_model_trained_to_caption_writes_its_captions_while_it_reads(omni_dir, tmp_path):
    import shutil

    from hepta.modality.video_reading import FILE, VideoReading

    captioning = tmp_path / "captioning"
    shutil.copytree(omni_dir, captioning)
    VideoReading(question_first=True, captions=True).save(captioning)
    assert VideoReading.load(captioning) == VideoReading(True, True) and VideoReading.load(omni_dir) == VideoReading()
    plain = json.loads(run_cli("eval", "--model", str(omni_dir), "--task", "video-order", "--limit", "1",
                               "--json", "--quiet").stdout)
    result = run_cli("eval", "--model", str(captioning), "--task", "video-order", "--limit", "1", "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    written = json.loads(result.stdout)
    assert written["n"] == 3 and set(written["by_length"]) == {"30", "60", "180"}
    # each kept frame gains at least its caption's end id, and what the model wrote before it
    assert written["prompt_tokens_per_minute"] > plain["prompt_tokens_per_minute"] * 1.03
    VideoReading().save(captioning)  # the plain way of reading leaves no file behind
    assert not (captioning / FILE).exists()


def test_a_folder_saved_before_the_stamp_forms_had_names_reads_its_frames_as_it_was_trained(tmp_path):
    from hepta.modality.video_reading import FILE, VideoReading
    from hepta.modality.video_span import StampForm

    for older, form in (({"stamp_digits": True, "time_tokens": False}, StampForm.DIGITS),
                        ({"stamp_digits": True, "time_tokens": True}, StampForm.TIME),
                        ({"stamp_digits": False}, StampForm.TEXT)):
        (tmp_path / FILE).write_text(json.dumps({"question_first": True, "captions": True, **older}))
        assert VideoReading.load(tmp_path) == VideoReading(True, True, form)
    VideoReading(True, True, StampForm.TENS).save(tmp_path)
    assert json.loads((tmp_path / FILE).read_text())["stamps"] == "tens"
    assert VideoReading.load(tmp_path) == VideoReading(True, True, StampForm.TENS)


def test_a_model_is_prompted_with_its_timestamps_written_as_it_was_trained(omni_dir, tmp_path):
    import shutil

    from hepta.eval.video_tasks import VideoEval
    from hepta.loading import load, load_image_codec, load_tokenizer
    from hepta.modality.video_reading import VideoReading
    from hepta.modality.video_span import StampForm

    digits = tmp_path / "digits"
    shutil.copytree(omni_dir, digits)
    VideoReading(stamps=StampForm.DIGITS).save(digits)
    assert VideoReading.load(digits) == VideoReading(stamps=StampForm.DIGITS)
    timed = tmp_path / "timed"
    shutil.copytree(omni_dir, timed)
    VideoReading(stamps=StampForm.TIME).save(timed)
    for folder, stamped in ((omni_dir, StampForm.TEXT), (digits, StampForm.DIGITS), (timed, StampForm.TIME)):
        tokenizer = load_tokenizer(folder)
        evaluation = VideoEval.open(load(folder).eval(), tokenizer, load_image_codec(folder, tokenizer), folder, 1)
        parts, video = [], evaluation.codec.video
        object.__setattr__(evaluation.codec, "video", lambda *a, **k: parts.append(video(*a, **k)) or parts[-1])
        answered = evaluation.answer("count", lengths=(30,))
        evaluation.close()
        assert len(answered) == 1 and [part.stamps for part in parts] == [stamped]
        # each answer keeps the ground truth of the clip it is about
        assert answered[0].question.truth == len(answered[0].clip.appearances) >= 2


def test_clips_show_held_out_digits_unless_the_training_ones_are_asked_for(omni_dir):
    import dataclasses

    from hepta.eval.video_tasks import VideoEval
    from hepta.loading import load, load_image_codec, load_tokenizer
    from hepta.modality import digits

    tokenizer = load_tokenizer(omni_dir)
    evaluation = VideoEval.open(load(omni_dir).eval(), tokenizer, load_image_codec(omni_dir, tokenizer), omni_dir, 2)
    try:
        for split in ("held_out", "train"):
            clips = dataclasses.replace(evaluation, digits_split=split).clips(30)
            sources = {a.source for clip in clips for a in clip.clip.appearances}
            assert len(clips) == 2 and sources
            assert sources <= set(digits.load_digits_split(split).indices.tolist())
    finally:
        evaluation.close()
