"""`hepta train` on a preset with image and audio codes: the image and audio tokenizers, the
vocabulary, conversations beside the text corpus, the per-modality expert load, resume, and the
text-only baseline."""

import json

import numpy as np
import torch
import pytest
from helpers import micro_set_flags, run_cli

from hepta.loading import load, load_audio_codec, load_image_codec, load_tokenizer
from hepta.modality.image_io import encode_png, png_data_url
from hepta.modality.video_reading import VideoReading
from hepta.modality.video_span import StampForm
from hepta.tokenizer import NUM_SPECIAL_TOKENS
from hepta.train.loop import TrainArgs
from hepta.train.report import read_metrics

NUM_CODES = 125
NUM_AUDIO_CODES = 1000
# the micro model, its vocabulary made room for the image and audio code blocks
# and its context made room for the recipe's longest video clip
FLAGS = [*micro_set_flags(), "--set", f"vocab_size={512 + NUM_CODES + NUM_AUDIO_CODES}", "--set", "max_seq_len=6144",
         "--max-corpus-mb", "0.3",
         "--image-tokenizer-steps", "10", "--audio-tokenizer-steps", "5", "--speech-utterances", "6",
         "--chat-batch-size", "4", "--batch-size", "2", "--seq-len", "96", "--eval-batches", "1", "--quiet"]


@pytest.fixture(scope="module")
def omni_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("omni") / "run"
    result = run_cli("train", "--preset", "omni-tiny", "--out", str(out), "--steps", "3", "--save-every", "3",
                     "--eval-every", "3", *FLAGS)
    assert result.returncode == 0, result.stderr
    return out


def test_the_run_holds_an_image_tokenizer_and_a_vocabulary_with_its_codes(omni_run):
    tokenizer = load_tokenizer(omni_run)
    codec = load_image_codec(omni_run)
    assert (omni_run / "image_tokenizer" / "reconstructions.png").is_file()
    assert json.loads((omni_run / "image_tokenizer" / "report.json").read_text())["psnr_db"] > 0
    assert tokenizer.layout.num_image_codes == NUM_CODES
    assert not tokenizer.digit_tokens  # the recipe's text tokenizer holds two-digit numbers (--digit-tokens: not)
    assert codec.vocab.code_start == tokenizer.layout.text_vocab_size + NUM_SPECIAL_TOKENS
    assert tokenizer.vocab_size <= load(omni_run).config.vocab_size
    audio = load_audio_codec(omni_run)
    assert json.loads((omni_run / "audio_tokenizer" / "report.json").read_text())["mel_distance"] > 0
    # the audio block comes after the image block: nothing before it moved
    assert audio.vocab.code_start == codec.vocab.code_start + NUM_CODES
    assert tokenizer.layout.num_audio_codes == NUM_AUDIO_CODES == audio.vocab.num_codes
    pixels = codec.pixels(codec.codes(np.zeros((1, 1, 8, 8), dtype=np.float32)))
    assert pixels.shape == (1, 1, 8, 8)


def test_conversations_train_beside_text_and_the_expert_load_is_split_by_modality(omni_run):
    train = [r for r in read_metrics(omni_run) if r["kind"] == "train"]
    assert len(train) == 3 and all(r["chat_loss"] > 0 and r["video_loss"] > 0 for r in train)
    load = train[-1]["expert_load_by_modality"]
    num_moe_layers = 1  # micro: 2 layers, the first dense
    assert set(load) == {"text", "image", "audio", "video"}
    assert all(len(rows) == num_moe_layers and sum(rows[0]) > 0 for rows in load.values())
    assert (omni_run / "expert_modality.png").is_file() and (omni_run / "training.png").is_file()


def test_the_recipe_reads_video_question_first_with_captions_and_the_ablation_without(omni_run, tmp_path):
    assert VideoReading.load(omni_run) == VideoReading(question_first=True, captions=True, stamps=StampForm.TENS)
    out = tmp_path / "plain"
    result = run_cli("train", "--preset", "omni-tiny", "--out", str(out), "--steps", "1", "--no-video-captions",
                     "--no-video-stamp-digits", "--no-video-frame-views", "--digit-tokens", "--video-time-tokens", *FLAGS)
    assert result.returncode == 0, result.stderr
    # the question after the video, no captions to write, and the timestamps' digits in time tokens
    assert VideoReading.load(out) == VideoReading(stamps=StampForm.TIME)
    args_file = out / "train_args.json"
    saved = json.loads(args_file.read_text())
    assert saved["video_captions"] is False and saved["video_stamp_digits"] is False
    assert saved["video_frame_views"] is False
    assert saved["digit_tokens"] is True and load_tokenizer(out).digit_tokens
    # a run saved before the switch existed resumes reading its frames as it started, whatever the recipe says now
    del saved["video_stamp_digits"]
    args_file.write_text(json.dumps(saved))
    resumed = run_cli("train", "--out", str(out), "--resume", "--steps", "2")
    assert resumed.returncode == 0, resumed.stderr
    log = resumed.stderr
    assert "video: " in log and "each frame captioned" not in log and "a character a token" not in log
    assert "views of its scan" not in log  # the digits as the training scans only, as the run started
    assert "digits in time tokens" in log and VideoReading.load(out) == VideoReading(stamps=StampForm.TIME)


def test_the_stamp_form_is_the_one_named_else_a_switchs_else_the_recipes():
    recipe = StampForm.TENS
    assert TrainArgs(out="x").stamp_form(recipe) == StampForm.TENS
    assert TrainArgs(out="x", video_stamps="digits").stamp_form(recipe) == StampForm.DIGITS
    assert TrainArgs(out="x", video_stamp_digits=False).stamp_form(recipe) == StampForm.TEXT
    assert TrainArgs(out="x", video_time_tokens=True).stamp_form(recipe) == StampForm.TIME
    assert TrainArgs(out="x", video_stamp_digits=False, video_tens_tokens=True).stamp_form(recipe) == StampForm.TENS


def test_a_stamp_form_named_twice_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "twice"
    result = run_cli("train", "--preset", "omni-tiny", "--out", str(out), "--video-stamps", "digits",
                     "--video-time-tokens", *FLAGS)
    assert result.returncode != 0 and "--video-stamps names the timestamps' form alone" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()
    unknown = run_cli("train", "--preset", "omni-tiny", "--out", str(out), "--video-stamps", "roman", *FLAGS)
    assert unknown.returncode != 0 and "invalid choice: 'roman'" in unknown.stderr and not out.exists()


def test_an_anchor_for_marked_times_that_holds_a_digit_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "digit"
    result = run_cli("train", "--preset", "omni-tiny", "--out", str(out), "--video-mark-units-anchor", "5", *FLAGS)
    assert result.returncode != 0 and "--video-mark-units-anchor takes text without digits" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


@pytest.mark.parametrize("flag, value", [("--video-loss-weight", 9), ("--video-mark-weight", 20)])
def test_a_video_loss_weight_adds_gradient_and_leaves_the_logged_loss(omni_run, tmp_path, flag, value):
    """The whole video loss counted 9 times, or the decision after each frame's caption 20 times: the step's
    gradient grows, and the video loss it logs is the one the recipe's weights give."""
    out = tmp_path / "weighted"
    result = run_cli("train", "--preset", "omni-tiny", "--out", str(out), "--steps", "1", flag, str(value), *FLAGS)
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "train_args.json").read_text())[flag[2:].replace("-", "_")] == value
    weighted = next(r for r in read_metrics(out) if r["kind"] == "train")
    recipe = next(r for r in read_metrics(omni_run) if r["kind"] == "train")  # the same first step
    assert weighted["video_loss"] == pytest.approx(recipe["video_loss"], rel=1e-4)
    assert weighted["grad_norm"] > recipe["grad_norm"] * 1.01
    bad = run_cli("train", "--preset", "omni-tiny", "--out", str(tmp_path / "bad"), flag, "0", *FLAGS)
    assert bad.returncode != 0 and f"{flag} must be positive, got 0.0" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "bad").exists()


def test_padded_conversations_train_the_same_losses_as_the_packed_recipe(omni_run, tmp_path):
    """The ablation of packing: each length group a padded batch of its own. The first step's conversation and video
    losses are the packed run's (the same logits at every answer); only the routers saw padding."""
    out = tmp_path / "padded"
    result = run_cli("train", "--preset", "omni-tiny", "--out", str(out), "--steps", "1", "--padded-conversations",
                     *FLAGS)
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "train_args.json").read_text())["packed_conversations"] is False
    assert json.loads((omni_run / "train_args.json").read_text())["packed_conversations"] is True
    padded = next(r for r in read_metrics(out) if r["kind"] == "train")
    packed = next(r for r in read_metrics(omni_run) if r["kind"] == "train")
    for key in ("loss", "chat_loss", "video_loss"):
        assert padded[key] == pytest.approx(packed[key], rel=1e-4), key
    assert padded["router_loss"] != packed["router_loss"]  # the padding's routing, gone from the packed run


def test_an_omni_run_resumes(omni_run, tmp_path):
    result = run_cli("train", "--preset", "omni-tiny", "--out", str(omni_run), "--resume", "--steps", "4",
                     "--quiet")
    assert result.returncode == 0, result.stderr
    assert [r["step"] for r in read_metrics(omni_run) if r["kind"] == "train"] == [1, 2, 3, 4]


def test_the_text_only_baseline_trains_the_same_preset_without_conversations(tmp_path):
    out = tmp_path / "text"
    result = run_cli("train", "--preset", "omni-tiny", "--out", str(out), "--steps", "2", "--text-only", *FLAGS)
    assert result.returncode == 0, result.stderr
    train = [r for r in read_metrics(out) if r["kind"] == "train"]
    assert train and not any("chat_loss" in r for r in train)
    assert not (out / "image_tokenizer").exists() and not (out / "audio_tokenizer").exists()
    layout = load_tokenizer(out).layout  # the same id layout as the full run
    assert layout.num_image_codes == NUM_CODES and layout.num_audio_codes == NUM_AUDIO_CODES


def _conversations(folder, lines: int = 6) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(lines):
        pixels = rng.random((1, 8, 8)).astype(np.float32)
        (folder / f"img{i}.png").write_bytes(encode_png(pixels))
        url = f"img{i}.png" if i % 2 else png_data_url(encode_png(pixels))
        rows.append({"messages": [
            {"role": "user", "content": [{"type": "text", "text": "Describe"},
                                         {"type": "image_url", "image_url": {"url": url}}]},
            {"role": "assistant", "content": f"noise number {i}"}]})
        rows.append({"messages": [{"role": "user", "content": "Draw noise."},
                                  {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": url}}]}]})
    return rows


def test_a_chat_jsonl_with_image_parts_is_training_data(tmp_path):
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _conversations(tmp_path)))
    out = tmp_path / "run"
    result = run_cli("train", "--preset", "omni-tiny", "--out", str(out), "--data", str(data), "--steps", "2", *FLAGS)
    assert result.returncode == 0, result.stderr
    assert all(r["chat_loss"] > 0 for r in read_metrics(out) if r["kind"] == "train")


@pytest.mark.parametrize("line, words", [
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "missing.png"}}]}]},
     ("chat.jsonl:1 messages[0].content[0]: ", "missing.png is not a file")),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}}]}]},
     ("chat.jsonl:1 messages[0].content[0]: the data is not an image",)),
    ({"messages": [{"role": "robot", "content": "hi"}]}, ("chat.jsonl:1 messages[0] needs a role",)),
    ({"messages": [{"role": "user", "content": [{"type": "audio"}]}]}, ("messages[0].content[0] must be",)),
])
def test_bad_conversations_are_named_by_line_and_part(tmp_path, line, words):
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps(line) + "\n")
    result = run_cli("train", "--preset", "omni-tiny", "--out", str(tmp_path / "run"), "--data", str(data), *FLAGS)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert all(fragment in result.stderr for fragment in words), result.stderr
    assert result.stderr.count("\n") == 1


def test_conversations_need_a_preset_with_image_codes(tmp_path):
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    result = run_cli("train", "--out", str(tmp_path / "run"), "--data", str(data), "--steps", "1", "--quiet")
    assert result.returncode == 1 and "pass --preset omni-tiny" in result.stderr


def test_modality_separation_reads_zero_for_shared_experts_and_one_for_disjoint_ones():
    from hepta.train.report import modality_separation

    same = {"text": np.array([[0.5, 0.5, 0.0]]), "image": np.array([[0.5, 0.5, 0.0]])}
    disjoint = {"text": np.array([[1.0, 0.0, 0.0]]), "image": np.array([[0.0, 0.5, 0.5]])}
    assert modality_separation(same) == [0.0] and modality_separation(disjoint) == [1.0]


def test_each_answer_weighs_the_same_in_the_loss_whatever_its_length():
    from hepta.train.conversations import IGNORE, conversation_loss

    logits_BTV = torch.randn(4, 5, 11, generator=torch.Generator().manual_seed(0))
    targets = torch.full((4, 5), IGNORE)
    targets[0, 4] = 2  # a one-token answer
    targets[1, 1:5] = torch.tensor([1, 5, 7, 3])  # a long one
    # row 2 has no answer (all padding) and is left out
    targets[3, 0:2] = torch.tensor([4, 4])  # two answers in one conversation: two questions about one video
    targets[3, 3] = 6
    answer = targets != IGNORE
    per_token = torch.nn.functional.cross_entropy(logits_BTV[answer], targets[answer], reduction="none")
    expected = (per_token[0] + per_token[1:5].mean() + per_token[5:7].mean() + per_token[7]) / 4
    torch.testing.assert_close(conversation_loss(logits_BTV[answer], targets), expected)


def test_a_weighted_token_adds_its_extra_loss_to_its_answer_and_the_others_keep_theirs():
    from hepta.train.conversations import IGNORE, conversation_loss, first_in_each_answer

    logits_BTV = torch.randn(2, 6, 11, generator=torch.Generator().manual_seed(0))
    targets = torch.full((2, 6), IGNORE)
    targets[0, 0:3] = torch.tensor([4, 9, 2])  # a caption ending in its decision (9) and its end (2)
    targets[0, 4:6] = torch.tensor([2, 9])
    targets[1, 1:4] = torch.tensor([5, 6, 7])  # an answer without either
    decisions = first_in_each_answer(targets, [9, 2])
    assert decisions.nonzero().tolist() == [[0, 1], [0, 4]]
    answer = targets != IGNORE
    per_token = torch.nn.functional.cross_entropy(logits_BTV[answer], targets[answer], reduction="none")
    weighted = conversation_loss(logits_BTV[answer], targets, weights_BT=torch.where(decisions, 3.0, 1.0))
    extra = (2 * per_token[1] / 3 + 2 * per_token[3] / 2) / 3
    torch.testing.assert_close(weighted, conversation_loss(logits_BTV[answer], targets) + extra)
    # moved: each answer's mean divides by its summed weight, so every answer still weighs the same
    moved = conversation_loss(logits_BTV[answer], targets, weights_BT=torch.where(decisions, 3.0, 1.0),
                              weights_move=True)
    expected = ((per_token[0] + 3 * per_token[1] + per_token[2]) / 5 + (3 * per_token[3] + per_token[4]) / 4
                + per_token[5:8].mean()) / 3
    torch.testing.assert_close(moved, expected)


def test_length_groups_draw_the_same_rows_with_less_padding_and_the_same_loss():
    from hepta.train.conversations import IGNORE, conversation_loss, count_answers, pad_rows, sample_chat_batch
    from hepta.train.conversations import ChatExamples

    rng = np.random.default_rng(0)
    lengths = [5] * 30 + [40] * 10  # short questions beside long utterances
    rows = [(list(rng.integers(1, 50, n)), [False] * (n // 2) + [True] * (n - n // 2)) for n in lengths]
    examples = ChatExamples(*pad_rows(rows, pad=0))
    one = sample_chat_batch(examples, 16, torch.Generator().manual_seed(3))
    three = sample_chat_batch(examples, 16, torch.Generator().manual_seed(3), length_groups=3)
    assert len(one) == 1 and len(three) == 3
    (x1, y1), = one
    # the same draw, row for row once sorted; far fewer padded positions
    assert sorted(map(tuple, y1.tolist())) == sorted(tuple(r.tolist()) + (IGNORE,) * (x1.shape[1] - len(r))
                                                     for _, y in three for r in y)
    assert sum(x.numel() for x, _ in three) < 0.7 * x1.numel()
    # the groups' losses, each over the draw's answer count, add up to the one batch's loss
    table = torch.randn(50, 50, generator=torch.Generator().manual_seed(1))

    def loss(x, y, num_answers=None):
        return conversation_loss(table[x][y != IGNORE], y, num_answers=num_answers)

    answers = sum(count_answers(y) for _, y in three)
    assert answers == count_answers(y1) == 16
    torch.testing.assert_close(sum(loss(x, y, answers) for x, y in three), loss(x1, y1))
