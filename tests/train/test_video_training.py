"""The video side of a run: each step's clips fill about the recipe's tokens, answers are the only
targets, a step's clips depend only on its seed, and frames can go without timestamps."""

import numpy as np
import pytest
import torch
from omni_fixture import make_omni_folder

from hepta.errors import HeptaError
from hepta.loading import load_image_codec, load_tokenizer
from hepta.modality import video_data
from hepta.modality.chat import video_vocab
from hepta.train.conversations import IGNORE
from hepta.train.data import batch_generator
from hepta.train.recipes import image_recipe
from hepta.train.video_setup import VideoData

RECIPE = image_recipe("omni-tiny").video


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_omni_folder(tmp_path_factory.mktemp("video") / "omni", max_seq_len=6144)


def _data(folder) -> VideoData:
    tokenizer = load_tokenizer(folder)
    return VideoData.build(RECIPE, load_image_codec(folder, tokenizer), tokenizer, max_seq_len=6144)


def test_a_step_holds_clips_of_one_length_filling_about_the_recipes_tokens(folder):
    data = _data(folder)
    tokenizer = data.tokenizer
    vocab = video_vocab(tokenizer, data.codec.vocab.grid)
    sizes = []
    for step in range(6):
        x, y = data.batch(batch_generator(0, step, 0))
        assert x.shape == y.shape and x.dtype == torch.long
        assert (x == vocab.start_id).sum(dim=1).tolist() == [1] * len(x)  # one clip a row
        frames = (x == vocab.frame_id).sum(dim=1)
        assert len(set(frames.tolist())) == 1  # every clip of a step is as long
        assert RECIPE.seconds[0] <= int(frames[0]) <= RECIPE.seconds[1]
        sizes.append(x.numel())
        # the targets are the answers only: nothing inside the video span is ever a target
        inside = vocab.video_mask(x.flatten()).view_as(x)
        assert (y[inside] == IGNORE).all() and (y != IGNORE).any()
        answers = (x == tokenizer.special_ids["<|assistant|>"]).sum(dim=1)
        assert (answers >= len(("order", "time", "count", "at"))).all()
    assert all(RECIPE.tokens_per_step <= n < 2.2 * RECIPE.tokens_per_step for n in sizes), sizes


def test_a_steps_clips_depend_only_on_its_seed_and_ranks_split_them(folder):
    data = _data(folder)
    a, b = data.batch(batch_generator(0, 3, 0)), data.batch(batch_generator(0, 3, 0))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], data.batch(batch_generator(1, 3, 0))[1])
    first, second = (data.batch(batch_generator(0, 3, 0), shard=(rank, 2))[0] for rank in (0, 1))
    assert len(first) == len(second) >= 1 and not torch.equal(first, second)


def test_the_answers_are_the_clips_ground_truth(folder):
    data = _data(folder)
    rng = np.random.default_rng(0)
    clip = video_data.plan_clip(rng, 40, data.scans)
    turns = data.clip_turns(clip, rng)
    said = {turns[i].parts[-1]: turns[i + 1].parts[0] for i in range(0, len(turns), 2)}
    assert said["How many digits appeared?"] == str(len(clip.appearances))
    timeline = said["List the digits as they appeared, with their times."]
    assert [int(entry.split()[1]) for entry in timeline.split(", ")] == [a.digit for a in clip.appearances]


def test_frames_without_timestamps_and_a_context_too_short_for_the_longest_clip(folder):
    tokenizer = load_tokenizer(folder)
    codec = load_image_codec(folder, tokenizer)
    timed = VideoData.build(RECIPE, codec, tokenizer, max_seq_len=6144)
    untimed = VideoData.build(RECIPE, codec, tokenizer, max_seq_len=6144, with_time=False)
    x_timed = timed.batch(batch_generator(0, 1, 0))[0]
    x_untimed = untimed.batch(batch_generator(0, 1, 0))[0]
    assert x_untimed.shape[1] < x_timed.shape[1]
    assert "0:01" in tokenizer.decode(x_timed[0].tolist()) and untimed.tokens_per_clip(60) < timed.tokens_per_clip(60)
    with pytest.raises(HeptaError, match="raise max_seq_len"):
        VideoData.build(RECIPE, codec, tokenizer, max_seq_len=512)
