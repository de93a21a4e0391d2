"""The embedded video clips: real MP4 files whose sampled frames agree with their ground truth, and
questions whose answers follow from it."""

import numpy as np
import pytest

from hepta.modality import video_data as vd
from hepta.modality.digits import Digits
from hepta.modality.video_io import decode_video


def _digits(count: int = 30) -> Digits:
    rng = np.random.default_rng(1)
    images = rng.uniform(0.2, 1.0, size=(count, 1, 8, 8)).astype(np.float32)
    return Digits(images, (np.arange(count) % 10).astype(np.int64), np.arange(500, 500 + count))


@pytest.mark.parametrize("seconds", [30, 60])
def test_a_written_clip_sampled_at_one_per_second_shows_its_ground_truth(tmp_path, seconds):
    digits = _digits()
    clip = vd.plan_clip(np.random.default_rng(seconds), seconds, digits)
    path = vd.write_clip(tmp_path, "clip", clip, digits)
    assert vd.Clip.from_json((tmp_path / "clip.json").read_text()) == clip
    video = decode_video(path.read_bytes(), image_size=8, fps=1.0)
    assert len(video.times) == seconds
    by_source = vd.images_by_source(digits)
    for pixels, t in zip(video.pixels, video.times):
        shown = clip.on_screen(t)
        expected = by_source[shown.source] if shown else np.zeros((1, 8, 8), np.float32)
        assert np.abs(pixels - expected).max() < 0.05, f"the frame at {t} s"


def test_every_appearance_and_gap_is_seen_at_one_frame_per_second():
    digits = _digits()
    for seed, seconds in zip(range(30), [30, 60, 180] * 10):
        clip = vd.plan_clip(np.random.default_rng(seed), seconds, digits)
        assert 2 <= len(clip.appearances) <= 9
        assert clip.appearances[-1].end <= seconds
        sampled = [clip.on_screen(t) for t in range(seconds)]
        shown = [a for i, a in enumerate(sampled) if a is not None and (i == 0 or sampled[i - 1] is not a)]
        assert shown == list(clip.appearances)  # each appears, and two in a row are told apart by a gap


CLIP = vd.Clip(20.0, (vd.Appearance(4, 2.25, 6.0, 1), vd.Appearance(7, 8.0, 12.5, 2),
                      vd.Appearance(4, 14.75, 17.0, 3)))


def _asked(walk: bool = False, cite: bool = False) -> dict[str, vd.VideoQuestion]:
    """Every question CLIP is asked (400 draws), by its wording."""
    rng = np.random.default_rng(0)
    questions = (vd.question(rng.choice(vd.QUESTION_KINDS), CLIP, rng, walk=walk, cite=cite) for _ in range(400))
    return {q.question: q for q in questions}


def test_answers_follow_from_the_ground_truth():
    asked = _asked()
    assert asked["How many digits appeared?"].answer == "3"
    assert asked["Which digit appeared third?"].answer == "4"
    assert asked["When did the 4 first appear?"].answer == "0:03"  # the first whole second it is on screen
    assert asked["When did the 7 first appear?"].answer == "0:08"
    assert asked["What was on screen at 0:07?"].answer == "nothing"
    assert asked["What was on screen at 0:15?"].answer == "4"


def test_replies_are_scored_as_the_tasks_define():
    when = vd.VideoQuestion("time", "When did the 4 first appear?", "0:03", 2.25)
    assert vd.is_right(when, "0:03") and vd.is_right(when, "0:02") and vd.is_right(when, "3")
    assert not vd.is_right(when, "0:04") and not vd.is_right(when, "soon")
    which = vd.VideoQuestion("order", "Which digit appeared third?", "4", 4)
    assert vd.is_right(which, "4.") and not vd.is_right(which, "7")
    nothing = vd.VideoQuestion("at", "What was on screen at 0:07?", "nothing", "nothing")
    assert vd.is_right(nothing, "Nothing") and not vd.is_right(nothing, "4")


def test_a_walk_steps_through_the_appearances_up_to_the_one_asked_about_and_is_judged_by_its_answer():
    asked = _asked(walk=True)
    assert asked["Which digit appeared second?"].answer == "1 0:03 4, 2 0:08 7; so 7"
    assert asked["Which digit appeared third?"].answer == "1 0:03 4, 2 0:08 7, 3 0:15 4; so 4"
    assert asked["When did the 4 first appear?"].answer == "1 0:03 4; so 0:03"  # stops at the first 4
    assert asked["How many digits appeared?"].answer == "3"  # counting and "at" are answered directly
    third = asked["Which digit appeared third?"]
    assert vd.is_right(third, third.answer) and vd.is_right(third, "4")
    assert not vd.is_right(third, "1 0:03 4, 2 0:08 7, 3 0:15 4; so 7")  # a right walk, a wrong answer
    assert not vd.is_right(third, "1 0:03 4, 2 0:08 7, 3 0:15 4")  # no answer after the walk


def test_frame_captions_number_the_appearances_and_a_cited_answer_quotes_the_one_asked_about():
    assert [vd.caption(CLIP, t) for t in (0, 3, 7, 8, 15)] == ["-", "1=4", "-", "2=7", "3=4"]
    asked = _asked(cite=True)
    assert asked["Which digit appeared third?"].answer == "3 4; so 4"
    assert asked["When did the 4 first appear?"].answer == "1 4; so 0:03"
    assert asked["How many digits appeared?"].answer == "3"
    assert vd.is_right(asked["Which digit appeared third?"], "3 4; so 4")


def test_the_frame_that_answers_is_marked_and_a_time_is_written_apart_from_the_timestamps():
    asked = _asked()
    third, fours = asked["Which digit appeared third?"], asked["When did the 4 first appear?"]
    assert vd.marked_caption(third, CLIP, fps=1.0) == (15.0, " * 4")  # "3=4 * 4": the third, first seen at 0:15
    assert vd.marked_caption(fours, CLIP, fps=1.0) == (3.0, " * 0m03")  # the first 4, seen from 0:03
    assert vd.marked_caption(fours, CLIP, fps=1.0, joiner="") == (3.0, " *0m03")  # the minute's "0" as stamps write it
    assert vd.marked_caption(fours, CLIP, fps=1.0, units_anchor=",") == (3.0, " * 0m0,3")  # the last digit anchored
    assert vd.marked_caption(third, CLIP, fps=1.0, units_anchor=",") == (15.0, " * 4")  # a digit is no time
    assert vd.marked_caption(asked["How many digits appeared?"], CLIP, fps=1.0) is None
    late = vd.Clip(200.0, (vd.Appearance(7, 125.5, 130.0, 1),))
    question = vd.question("time", late, np.random.default_rng(0))
    assert question.answer == "2:06" and vd.marked_caption(question, late, fps=1.0) == (126.0, " * 2m06")


def test_a_shifted_clip_shows_the_same_frames_and_asks_in_its_own_clock():
    digits = _digits()
    clip = vd.plan_clip(np.random.default_rng(2), 30, digits)
    later = vd.shifted(clip, 437.0)  # as if cut from a recording at 7:17
    assert vd.shifted(later, 0.0) == clip and vd.Clip.from_json(later.to_json()) == later
    sources, times = vd.sources_on_screen(later)
    assert sources == vd.sources_on_screen(clip)[0] and times[0] == 437.0 and times[-1] == 466.0
    by_source = vd.images_by_source(digits)
    assert np.array_equal(vd.render_frames(later, by_source), vd.render_frames(clip, by_source))
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = vd.question(str(rng.choice(["time", "at"])), later, rng)
        if q.kind == "time":  # the answer and the mark read the shifted clock: minute 7
            assert q.answer.startswith("7:") and vd.marked_caption(q, later, 1.0)[1].startswith(" * 7m")
            assert vd.is_right(q, q.answer) and not vd.is_right(vd.question("time", clip, rng), q.answer)
        else:
            at = vd.parse_clock(q.question.removeprefix("What was on screen at ").rstrip("?"))
            assert 437 <= at < 467 and q.answer == (str(later.on_screen(at).digit) if later.on_screen(at)
                                                    else vd.NOTHING)


def test_times_and_ordinals_are_written_as_people_write_them():
    assert vd.clock(42) == "0:42" and vd.clock(180) == "3:00" and vd.parse_clock("2:05") == 125
    assert [vd.ordinal(k) for k in (1, 3, 10, 11, 12, 21, 22, 23)] == \
        ["first", "third", "tenth", "11th", "12th", "21st", "22nd", "23rd"]


def test_clock_reads_what_it_writes():
    from hepta.modality.video_span import clock, parse_clock

    for seconds in (0, 7, 59, 60, 179, 3599, 3600, 36000):
        assert parse_clock(clock(seconds)) == seconds
    assert clock(3600 * 15) == "15:00:00" and parse_clock("0:-5") is None and parse_clock("a:b") is None


def test_frames_sampled_from_the_ground_truth_equal_the_decoded_file(tmp_path):
    digits = _digits()
    clip = vd.plan_clip(np.random.default_rng(7), 30, digits)
    by_source = vd.images_by_source(digits)
    frames, times = vd.sampled_frames(clip, by_source)
    video = decode_video(vd.write_clip(tmp_path, "c", clip, digits).read_bytes(), image_size=8)
    assert times == tuple(video.times.tolist()) and np.abs(frames - video.pixels).max() < 0.01


def test_a_conversation_asks_several_questions_about_one_video():
    from hepta.modality.chat import VideoCodes

    clip = vd.Clip(20.0, (vd.Appearance(4, 2.25, 6.0, 1),))
    rng = np.random.default_rng(0)
    questions = [vd.question(kind, clip, rng) for kind in vd.QUESTION_KINDS]
    part = VideoCodes(np.zeros((20, 4, 4), dtype=np.int64), tuple(float(t) for t in range(20)))
    turns = vd.question_turns(part, questions)
    assert [t.role for t in turns] == ["user", "assistant"] * 4
    assert turns[0].parts[0] is part and all(part not in t.parts for t in turns[1:])
    assert [t.parts[0] for t in turns[1::2]] == [q.answer for q in questions]
    assert [t.role for t in vd.question_turns(part, questions[:1], answered=False)] == ["user"]
    first = vd.question_turns(part, questions, question_first=True)
    assert first[0].parts == (questions[0].question, part) and first[1:] == turns[1:]


def test_only_frames_that_show_something_new_are_kept():
    import torch

    from hepta.modality.video_span import changes_only

    blank, four, seven = torch.zeros(4, 4, dtype=torch.long), torch.full((4, 4), 4), torch.full((4, 4), 7)
    noisy_four = four.clone()
    noisy_four[0, 0] = 9  # one position of sixteen: decoding noise, not a new scene
    frames = torch.stack([blank, blank, four, noisy_four, four, blank, seven, seven])
    kept, times = changes_only(frames, [float(t) for t in range(8)])
    assert times == (0.0, 2.0, 5.0, 6.0) and torch.equal(kept, torch.stack([blank, four, blank, seven]))
    # a drift of one position a frame adds up against the last kept frame until it counts as new
    drifting = torch.stack([blank] + [torch.cat([torch.ones(k), torch.zeros(16 - k)]).long().reshape(4, 4)
                                      for k in range(1, 6)])
    assert changes_only(drifting, range(6))[1] == (0.0, 4.0)
    assert changes_only(frames[:0], [])[1] == ()
