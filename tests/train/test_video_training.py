"""The video side of a run: each step's clips fill about the recipe's tokens with one question each,
answers and frame captions are the only targets, clips grow longer over the run, a step's clips depend only on its
seed, and frames can go without timestamps."""

import dataclasses
import re

import numpy as np
import pytest
import torch
from omni_fixture import make_omni_folder

from hepta.errors import HeptaError
from hepta.loading import load_image_codec, load_tokenizer
from hepta.modality import video_data
from hepta.modality.chat import video_vocab
from hepta.modality.video_span import StampForm
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


def test_a_step_holds_clips_with_one_question_each_filling_about_the_recipes_tokens(folder):
    data = _data(folder)
    tokenizer = data.tokenizer
    vocab = video_vocab(tokenizer, data.codec.vocab.grid)
    sizes = []
    for step in range(6):
        x, y = data.batch(batch_generator(0, step, 0))
        assert x.shape == y.shape and x.dtype == torch.long
        assert (x == vocab.start_id).sum(dim=1).tolist() == [1] * len(x)  # one clip a row
        assert (x == tokenizer.special_ids["<|assistant|>"]).sum(dim=1).tolist() == [1] * len(x)  # one answer
        sizes.append(x.shape[0] * (x.shape[1] + 1))  # the rows' tokens: the last of each is only a target
        # inside the video span the model writes its frame captions, never the frames themselves
        inside = vocab.video_mask(x.flatten()).view_as(x)
        written = y[inside & (y != IGNORE)]
        assert len(written) and not data.codec.vocab.image_mask(written).any()
        assert not (written == vocab.frame_id).any() and (written == tokenizer.end_id).any()
        # and after it the answer
        assert ((y != IGNORE) & ~inside).any()
    assert all(RECIPE.tokens_per_step <= n < 1.5 * RECIPE.tokens_per_step for n in sizes), sizes


def test_clips_start_short_and_reach_the_longest_by_the_ramp(folder):
    data = _data(folder)
    rng = np.random.default_rng(0)
    first = [data.step_seconds(rng, 0.0) for _ in range(200)]
    late = [data.step_seconds(rng, RECIPE.ramp) for _ in range(200)]
    assert RECIPE.seconds[0] <= min(first) and max(first) <= RECIPE.first_longest
    assert max(late) > 0.8 * RECIPE.seconds[1] and max(late) <= RECIPE.seconds[1]
    assert data.longest(0.0) < data.longest(RECIPE.ramp / 2) < data.longest(1.0) == RECIPE.seconds[1]
    # log-uniform: short clips stay common to the end
    assert np.mean(np.array(late) <= 20) > 0.25


def test_a_long_finish_trains_the_end_of_the_run_on_long_clips_only(folder):
    tokenizer = load_tokenizer(folder)
    recipe = dataclasses.replace(RECIPE, long_finish=0.2, long_shortest=100)
    data = VideoData.build(recipe, load_image_codec(folder, tokenizer), tokenizer, max_seq_len=6144)
    rng = np.random.default_rng(0)
    before = [data.step_seconds(rng, 0.79) for _ in range(200)]
    finish = [data.step_seconds(rng, 0.8) for _ in range(200)] + [data.step_seconds(rng, 0.99) for _ in range(200)]
    assert min(before) < 20  # the log-uniform draw, short clips common
    assert 100 <= min(finish) and max(finish) <= RECIPE.seconds[1] and max(finish) > 160
    assert "100 s and more in the last 20% of the run), one question each (order" in data.source


def test_a_share_of_the_clips_has_its_clock_start_after_zero(folder):
    tokenizer = load_tokenizer(folder)
    codec = load_image_codec(folder, tokenizer)
    data = VideoData.build(RECIPE, codec, tokenizer, max_seq_len=6144)
    assert RECIPE.shifted_share == 0.5 and "50% of the clips' clocks started before 10:00" in data.source
    from_zero = VideoData.build(dataclasses.replace(RECIPE, shifted_share=0.0), codec, tokenizer, max_seq_len=6144)
    assert "clocks started" not in from_zero.source
    rng = np.random.default_rng(0)
    clips = [data.clocked(video_data.plan_clip(rng, seconds, data.scans), rng) for seconds in [30, 180] * 100]
    starts = np.array([clip.start for clip in clips])
    assert 0.35 < np.mean(starts > 0) < 0.65  # about the share, the rest from 0:00
    assert all(start + clip.duration <= 600 and start == int(start) for start, clip in zip(starts, clips))
    minutes = {int(start // 60) for start in starts}
    assert len(minutes) >= 8  # nearly every minute digit comes up, however long the clip
    shifted = next(clip for clip in clips if clip.start > 60)
    video = data.clip_frames(shifted)
    assert video.times[0] == shifted.start  # the timestamps read the shifted clock
    assert all(from_zero.clocked(clip, rng) is clip for clip in clips[:20])


def test_each_digit_of_a_training_clip_shows_one_view_of_its_scan_for_the_whole_clip(folder):
    tokenizer = load_tokenizer(folder)
    codec = load_image_codec(folder, tokenizer)
    data = VideoData.build(RECIPE, codec, tokenizer, max_seq_len=6144)
    assert RECIPE.frame_views and "each digit shown as one of 13 views of its scan" in data.source
    rng = np.random.default_rng(0)
    clip = video_data.plan_clip(rng, 60, data.scans)
    source = clip.appearances[0].source
    views = data.views_by_source[source]
    scan = data.scans.images[list(data.scans.indices).index(source)]
    assert views.shape[0] == 13 and torch.equal(views[0], codec.codes(scan[None])[0])  # the scan itself first
    assert len({tuple(view.flatten().tolist()) for view in views}) > 6  # its views read as other code grids

    def shown(part, appearance):  # the code grids of the frames on screen while `appearance` is
        return [frame for frame, t in zip(part.frames, part.times) if appearance.start <= t < appearance.end]

    seen = set()
    for _ in range(40):
        part = data.clip_frames(clip, rng=rng)
        for appearance in clip.appearances:
            frames = shown(part, appearance)
            assert frames and all(torch.equal(f, frames[0]) for f in frames)  # one view for the whole appearance
            assert any(torch.equal(frames[0], view) for view in data.views_by_source[appearance.source])
        seen.add(tuple(shown(part, clip.appearances[0])[0].flatten().tolist()))
    assert len(seen) >= 5  # drawn anew for each clip
    # without a draw (as probes read a clip), and in the ablation, each digit is its training scan
    assert torch.equal(shown(data.clip_frames(clip), clip.appearances[0])[0], views[0])
    plain = VideoData.build(dataclasses.replace(RECIPE, frame_views=False), codec, tokenizer, max_seq_len=6144)
    assert "views" not in plain.source and plain.views_by_source[source].shape[0] == 1
    assert torch.equal(shown(plain.clip_frames(clip, rng=rng), clip.appearances[0])[0], views[0])


def test_questions_come_in_the_recipes_proportions(folder):
    data = _data(folder)
    rng = np.random.default_rng(1)
    asked = [next(part for part in data.clip_turns(video_data.plan_clip(rng, 30, data.scans), rng)[0].parts
                  if isinstance(part, str)) for _ in range(400)]
    kinds = dict(RECIPE.kinds)
    order = sum(q.startswith("Which digit appeared") for q in asked) / len(asked)
    count = sum(q == "How many digits appeared?" for q in asked) / len(asked)
    assert abs(order - kinds["order"] / sum(kinds.values())) < 0.08
    assert abs(count - kinds["count"] / sum(kinds.values())) < 0.06


def test_a_steps_clips_depend_only_on_its_seed_and_ranks_split_them(folder):
    data = _data(folder)
    a, b = data.batch(batch_generator(0, 3, 0)), data.batch(batch_generator(0, 3, 0))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], data.batch(batch_generator(1, 3, 0))[1])
    first, second = (data.batch(batch_generator(0, 3, 0), shard=(rank, 2))[0] for rank in (0, 1))
    assert len(first) == len(second) >= 1 and not torch.equal(first, second)


def test_the_answers_are_the_clips_ground_truth(folder):
    data = _data(folder)
    data.recipe = dataclasses.replace(RECIPE, kinds=(("count", 1), ("timeline", 1)))  # timeline: probes ask it
    rng = np.random.default_rng(0)
    count, timeline = "How many digits appeared?", "List the digits as they appeared, with their times."
    said = {}
    for _ in range(200):  # until both kinds have been asked
        clip = video_data.plan_clip(rng, 40, data.scans)
        question, answer = data.clip_turns(clip, rng)
        said[question.parts[0]] = (clip, answer.parts[0])  # the recipe asks before the video
        if count in said and timeline in said:
            break
    clip, answer = said[count]
    assert answer == str(len(clip.appearances))
    clip, answer = said[timeline]
    assert [int(entry.split()[1]) for entry in answer.split(", ")] == [a.digit for a in clip.appearances]


def test_frames_without_timestamps_and_a_context_too_short_for_the_longest_clip(folder):
    tokenizer = load_tokenizer(folder)
    codec = load_image_codec(folder, tokenizer)
    from_zero = dataclasses.replace(RECIPE, shifted_share=0.0)  # every clock starts at 0:00
    timed = VideoData.build(from_zero, codec, tokenizer, max_seq_len=6144)
    untimed = VideoData.build(from_zero, codec, tokenizer, max_seq_len=6144, with_time=False)
    x_timed = timed.batch(batch_generator(0, 1, 0))[0]
    x_untimed = untimed.batch(batch_generator(0, 1, 0))[0]
    assert x_untimed.shape[1] < x_timed.shape[1]
    assert "<|frame|>0:00" in tokenizer.decode(x_timed[0].tolist())
    assert "<|frame|><|image_start|>" in tokenizer.decode(x_untimed[0].tolist())
    assert untimed.tokens_per_clip(60) < timed.tokens_per_clip(60)
    with pytest.raises(HeptaError, match="raise max_seq_len"):
        VideoData.build(RECIPE, codec, tokenizer, max_seq_len=512)


def test_timestamps_can_be_written_a_character_a_token(folder):
    tokenizer = load_tokenizer(folder)
    data = VideoData.build(RECIPE, load_image_codec(folder, tokenizer), tokenizer, max_seq_len=6144,
                           stamps=StampForm.DIGITS)
    rng = np.random.default_rng(0)
    part = data.clip_frames(video_data.plan_clip(rng, 30, data.scans))
    assert part.stamps == StampForm.DIGITS and "timestamps a character a token" in data.source
    assert _data(folder).clip_frames(video_data.plan_clip(rng, 30, data.scans)).stamps == StampForm.TEXT
    for form in (StampForm.TIME, StampForm.TENS):
        timed = VideoData.build(RECIPE, data.codec, tokenizer, max_seq_len=6144, stamps=form)
        part = timed.clip_frames(video_data.plan_clip(rng, 30, data.scans))
        assert part.stamps == form and "digits in time tokens" in timed.source
        assert ("tens in tens tokens" in timed.source) == (form == StampForm.TENS)
        assert timed.tokens_per_clip(60) == data.tokens_per_clip(60)  # a token a digit either way


def test_frame_captions_follow_each_frame_and_are_targets(folder):
    tokenizer = load_tokenizer(folder)
    data = VideoData.build(RECIPE, load_image_codec(folder, tokenizer), tokenizer, max_seq_len=6144, captions=True)
    clip = video_data.plan_clip(np.random.default_rng(3), 20, data.scans)
    part = data.clip_frames(clip)
    assert part.captions == tuple(video_data.caption(clip, t) for t in part.times)
    assert ([c for c in part.captions if c != video_data.EMPTY]
            == [f"{n}={a.digit}" for n, a in enumerate(clip.appearances, 1)])
    x, y = data.batch(batch_generator(0, 1, 0))
    image_end = tokenizer.special_ids["<|image_end|>"]
    after_frames = y[x == image_end]  # every frame's image span is followed by its caption, a target
    assert len(after_frames) and (after_frames != IGNORE).all()
    said = {tokenizer.decode([int(i)]) for i in after_frames}  # the caption's first token
    assert said <= {video_data.EMPTY, *map(str, range(1, 10))} and video_data.EMPTY in said


def test_with_marks_the_question_comes_first_and_the_answering_frame_is_marked(folder):
    import dataclasses

    tokenizer = load_tokenizer(folder)
    recipe = dataclasses.replace(RECIPE, kinds=(("order", 1.0), ("time", 1.0)))
    data = VideoData.build(recipe, load_image_codec(folder, tokenizer), tokenizer, max_seq_len=6144)
    assert data.captions  # the recipe's captions switch them on
    rng = np.random.default_rng(4)
    for _ in range(6):
        clip = video_data.plan_clip(rng, 20, data.scans)
        question, answer = data.clip_turns(clip, rng)
        asked, video = question.parts
        assert isinstance(asked, str) and video.captions is not None  # the question before the video
        marked = [c for c in video.captions if video_data.MARK in c]
        kind = "order" if asked.startswith("Which") else "time"
        q = video_data.VideoQuestion(kind, asked, answer.parts[0], None, asked_about=_asked_about(clip, asked))
        expected_time, mark = video_data.marked_caption(q, clip, 1.0)
        assert marked == [video.captions[video.times.index(expected_time)]] and marked[0].endswith(mark)
    x, y = data.batch(batch_generator(0, 2, 0))
    end = tokenizer.end_id
    closing = y[(y == end) & (x != tokenizer.special_ids["<|assistant|>"])]
    assert len(closing) > len(x)  # every caption is closed by the end id, a target, besides each answer's


def _asked_about(clip, asked: str) -> int:
    """The appearance an order or time question asks about, read from its wording."""
    if asked.startswith("Which"):
        word = asked.split()[-1].rstrip("?")
        return video_data.ORDINALS.index(word)
    digit = int(asked.split()[3])
    return next(n for n, a in enumerate(clip.appearances) if a.digit == digit)


def test_an_anchor_before_a_marked_times_last_digit_reaches_the_training_rows(folder):
    tokenizer = load_tokenizer(folder)
    recipe = dataclasses.replace(RECIPE, mark_units_anchor=",")
    data = VideoData.build(recipe, load_image_codec(folder, tokenizer), tokenizer, max_seq_len=6144)
    assert "a marked time's last digit after ','" in data.source and "last digit" not in _data(folder).source

    def words(data: VideoData) -> str:  # the training rows' text, frames and structure left out
        text = ""
        for step in range(4):
            x, _ = data.batch(batch_generator(0, step, 0))
            text += tokenizer.decode([i for i in x.flatten().tolist() if i < tokenizer.layout.text_vocab_size])
        return text

    anchored, plain = words(data), words(_data(folder))
    assert re.search(r"\* \dm\d,\d", anchored) and not re.search(r"\* \dm\d\d", anchored)
    assert re.search(r"\* \dm\d\d", plain) and not re.search(r"\* \dm\d,\d", plain)


def test_a_mark_weight_weighs_the_decision_after_each_caption_and_nothing_else(folder):
    tokenizer = load_tokenizer(folder)
    codec = load_image_codec(folder, tokenizer)
    unweighted = VideoData.build(dataclasses.replace(RECIPE, mark_weight=1.0), codec, tokenizer, max_seq_len=6144)
    assert unweighted.decision_weights(torch.zeros(1, 1, dtype=torch.long)) is None
    assert "mark decision 4 times" in _data(folder).source  # the recipe's
    data = VideoData.build(dataclasses.replace(RECIPE, mark_weight=5.0), codec, tokenizer, max_seq_len=6144)
    assert "mark decision 5 times" in data.source and "mark decision" not in unweighted.source
    assert "taken from its caption's other tokens" not in data.source
    moving = VideoData.build(dataclasses.replace(RECIPE, mark_weight=5.0, mark_weight_moves=True), codec, tokenizer,
                             max_seq_len=6144)
    assert "mark decision 5 times, taken from its caption's other tokens" in moving.source
    x, y = data.batch(batch_generator(0, 3, 0))
    weights = data.decision_weights(y)
    mark_first = tokenizer.encode(video_data.MARK)[0]
    image_end, end = tokenizer.special_ids["<|image_end|>"], tokenizer.end_id
    assert set(weights.unique().tolist()) == {1.0, 5.0}
    assert (y[weights == 5.0] == mark_first).any() and (y[weights == 5.0] == end).any()  # marked frames and others
    for row_x, row_y, row_w in zip(x, y, weights):
        frames = (row_x == image_end).nonzero().flatten().tolist()
        # after each frame, its caption: the first of its targets that is the mark or the end is the one weighted
        for frame in frames:
            caption = row_y[frame:]
            decision = next(n for n, t in enumerate(caption.tolist()) if t in (mark_first, end))
            assert row_w[frame + decision] == 5.0
            assert (row_w[frame:frame + decision] == 1.0).all() and (row_y[frame:frame + decision] != IGNORE).all()
        assert int((row_w == 5.0).sum()) == len(frames) + 1  # and one in the reply
        assert (row_y[row_w == 5.0] != IGNORE).all()
