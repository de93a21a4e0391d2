"""The embedded video data: clips in which handwritten digits appear and leave over time.

A clip is a scene that shows one digit at a time, or nothing. Whatever its length, 2 to 9
digits appear in it (fewer in a very short clip), so a longer clip holds longer appearances and
longer empty spells rather than more digits: length tests how far back the model can look, not
how high it can count. Every appearance and every gap lasts at least a second, on a
quarter-second grid, so sampling at 1 frame per second sees each of them. The
frames are scikit-learn's 8x8 scans enlarged 8x (64x64 pixels) and written as real H.264 MP4
files at 4 frames per second, so decoding and sampling are exercised as for any upload. Training
clips draw from the training digits; evaluation clips only from the held-out ones
(`digits.load_digits_split`), which neither the image tokenizer nor the model ever sees.

The questions are the four the video tasks measure, with their answers from the clip's ground
truth: which digit appeared k-th, when a digit first appeared, how many appeared, and what was on
screen at a time. Times are written m:ss.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hepta.modality.digits import Digits
from hepta.modality.video_span import clock, parse_clock

RENDER_FPS = 4  # frames per second written to the files
FRAME_SIDE = 64  # pixels: each 8x8 scan enlarged 8x
APPEARANCES = (2, 9)  # digits per clip, fewest and most
SHORTEST = 1.0  # seconds: the least an appearance or a gap lasts
FIRST_AT_MOST = 3.0  # seconds of empty screen before the first digit, at most
CLIP_LENGTHS = (30, 60, 180)  # the evaluation's clip lengths in seconds
NOTHING = "nothing"
EMPTY = "-"  # a frame caption for an empty screen (one token, as a digit is)

ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")
QUESTION_KINDS = ("order", "time", "count", "at")  # what the video tasks ask
TIMELINE = "timeline"  # training only: every appearance in order with its time, the others' common ground
MARK = " *"  # in the caption of the frame an order or time question asks about (marked_caption)
WALK_END = "; so "  # a walk's steps end here and its answer follows
ANSWER_TOKENS = 72  # the longest reply: a walk over 9 appearances (about 6 tokens each) and its answer


@dataclass(frozen=True)
class Appearance:
    digit: int
    start: float  # seconds: the first moment it is on screen
    end: float  # seconds: the first moment it is gone
    source: int  # its index in scikit-learn's digits


@dataclass(frozen=True)
class Clip:
    duration: float  # seconds
    appearances: tuple[Appearance, ...]
    # the clock at the clip's first moment: 0, or where a clip cut from a longer recording starts (`shifted`);
    # appearances, sample times and the questions' times all read this clock
    start: float = 0.0

    def on_screen(self, seconds: float) -> Appearance | None:
        for appearance in self.appearances:
            if appearance.start <= seconds < appearance.end:
                return appearance
        return None

    def to_json(self) -> str:
        return json.dumps({"duration": self.duration, "start": self.start,
                           "appearances": [asdict(a) for a in self.appearances]})

    @classmethod
    def from_json(cls, text: str) -> "Clip":
        data = json.loads(text)
        return cls(float(data["duration"]), tuple(Appearance(**a) for a in data["appearances"]),
                   float(data.get("start", 0.0)))


def shifted(clip: Clip, start: float) -> Clip:
    """`clip` with its clock starting at `start` seconds instead of its own, as if cut from a longer recording:
    the same frames, every time later by the difference."""
    moved = start - clip.start
    return Clip(clip.duration, tuple(dataclasses.replace(a, start=a.start + moved, end=a.end + moved)
                                     for a in clip.appearances), start)


@dataclass(frozen=True)
class VideoQuestion:
    kind: str  # one of QUESTION_KINDS
    question: str
    answer: str  # what a right answer says
    truth: float | int | str  # what the scorer compares against (a time in seconds for "time")
    asked_about: int | None = None  # order and time: the index of the appearance the answer names


def plan_clip(rng: np.random.Generator, duration: float, digits: Digits) -> Clip:
    """2 to 9 appearances (at most one per 3 seconds) spread over `duration` seconds, each a random
    scan from `digits`: every appearance and the gap after it get SHORTEST seconds plus a random
    share of the rest, appearances twice the share of gaps on average."""
    quarter = 1 / RENDER_FPS
    lead = _on_grid(rng.uniform(0, min(FIRST_AT_MOST, duration / 10)), quarter)
    room = duration - lead
    count = int(rng.integers(APPEARANCES[0], max(APPEARANCES[0], min(APPEARANCES[1], int(room // 3))) + 1))
    spare = room - 2 * count * SHORTEST
    # shares of the spare time: appearance, gap, appearance, gap, ...; the last gap runs to the end
    shares = rng.dirichlet(np.tile([2.0, 1.0], count)) * spare
    appearances, t = [], lead
    for n in range(count):
        shown = SHORTEST + _down_to_grid(shares[2 * n], quarter)
        pick = int(rng.integers(len(digits.labels)))
        appearances.append(Appearance(int(digits.labels[pick]), t, t + shown, int(digits.indices[pick])))
        t += shown + SHORTEST + _down_to_grid(shares[2 * n + 1], quarter)
    return Clip(float(duration), tuple(appearances))


def images_by_source(digits: Digits) -> dict[int, np.ndarray]:
    """Each scan's [1, 8, 8] pixels by its index in scikit-learn's digits (`Appearance.source`)."""
    return dict(zip(digits.indices.tolist(), digits.images))


def render_frames(clip: Clip, images_by_source: dict[int, np.ndarray]) -> np.ndarray:
    """float32 [N, 1, 64, 64]: the clip at RENDER_FPS; `images_by_source` maps a scan's index to
    its [1, 8, 8] pixels."""
    count = round(clip.duration * RENDER_FPS)
    frames = np.zeros((count, 1, FRAME_SIDE, FRAME_SIDE), dtype=np.float32)
    scale = FRAME_SIDE // 8
    for appearance in clip.appearances:
        big = np.kron(images_by_source[appearance.source], np.ones((1, scale, scale), dtype=np.float32))
        begin, end = appearance.start - clip.start, appearance.end - clip.start
        frames[round(begin * RENDER_FPS):round(end * RENDER_FPS)] = big
    return frames


def write_clip(folder: Path, name: str, clip: Clip, digits: Digits) -> Path:
    """`name.mp4` and its ground truth `name.json` in `folder`; returns the video's path."""
    from hepta.modality.video_io import encode_video

    folder.mkdir(parents=True, exist_ok=True)
    video = folder / f"{name}.mp4"
    video.write_bytes(encode_video(render_frames(clip, images_by_source(digits)), RENDER_FPS))
    (folder / f"{name}.json").write_text(clip.to_json() + "\n")
    return video


def sources_on_screen(clip: Clip, fps: float = 1.0) -> tuple[list[int | None], tuple[float, ...]]:
    """The scan on screen (its index in scikit-learn's digits, None for an empty screen) at the clip's
    start, 1/fps later, ... and those times."""
    times = tuple(clip.start + k / fps for k in range(math.ceil(clip.duration * fps - 1e-9)))
    return [shown.source if (shown := clip.on_screen(t)) else None for t in times], times


def sampled_frames(clip: Clip, images_by_source: dict[int, np.ndarray], fps: float = 1.0
                   ) -> tuple[np.ndarray, tuple[float, ...]]:
    """The frames [N, 1, 8, 8] on screen at the clip's start, 1/fps later, ... and their times, straight from the ground
    truth: what decoding the clip's MP4 at `fps` gives, without the file's compression error
    (under 0.6% of full scale; tests/modality/test_video_data.py checks the two agree)."""
    sources, times = sources_on_screen(clip, fps)
    blank = np.zeros((1, 8, 8), dtype=np.float32)
    return np.stack([blank if s is None else images_by_source[s] for s in sources]).astype(np.float32), times


# --- questions -----------------------------------------------------------------------------------

def caption(clip: Clip, seconds: float, joiner: str = "=") -> str:
    """What the caption of the frame at `seconds` says: the appearance's number and its digit ("3=7":
    the third digit to appear, a 7), or EMPTY. The running number makes "which came k-th" a lookup of
    the caption that starts with k, where otherwise the k-th of many would have to be counted out. The
    "=" keeps the caption's digit a token without a leading space ("7"), unlike the digit a question
    asks about (" 7" in "When did the 7 first appear?"), so the question's digit is the only one of its
    kind in the prompt and easy to find from every frame (with a space, a probe answered 0.275 of the
    time questions against 0.400: docs/multimodal.md; `joiner` " " writes that earlier form)."""
    shown = clip.on_screen(seconds)
    return EMPTY if shown is None else f"{clip.appearances.index(shown) + 1}{joiner}{shown.digit}"


def marked_caption(q: VideoQuestion, clip: Clip, fps: float, joiner: str = " ", units_anchor: str = ""
                   ) -> tuple[float, str] | None:
    """For an order or time question asked before the video: the time of the frame that answers it (where
    the appearance asked about is first seen) and what its caption adds, the mark and the answer ("3=7 * 7",
    "3=7 * 0m14"). Whether a frame answers is decided as it is read, from the question and the frame's own
    caption, and the reply after the video has one marked caption to find instead of the k-th of many: each
    token of the reply is the one after a token found in the marked caption only (the mark, the "m"). A time
    is written 0m14, not 0:14, because every frame's timestamp has a ":". (With the answer's tokens before
    their anchors instead, "3=7 *" and "0m14s", the probe answered order questions about 30 s clips half as
    often: docs/multimodal.md.) `joiner` goes between the mark and the answer: after "" the answer's first
    digit is the very token the timestamps and the reply write ("2"), after a space another (" 2"). A
    `units_anchor` goes before a time's last digit ("0m1,4"): with every number a digit a token, each digit of
    the reply is then the one after a token only the mark holds, where otherwise the last is the one after the
    digit before it, which every timestamp holds too."""
    if q.asked_about is None:
        return None
    seen = first_seen(clip.appearances[q.asked_about].start, fps)
    time = clock(seen).replace(":", "m")
    return seen, MARK + joiner + (time[:-1] + units_anchor + time[-1] if q.kind == "time" else q.answer)


def ordinal(k: int) -> str:
    if k <= len(ORDINALS):
        return ORDINALS[k - 1]
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


def first_seen(start: float, fps: float) -> float:
    """The first sample time at `fps` at which something that starts at `start` is on screen."""
    return math.ceil(start * fps - 1e-9) / fps


def question(kind: str, clip: Clip, rng: np.random.Generator, fps: float = 1.0, walk: bool = False,
             cite: bool = False) -> VideoQuestion:
    """One question of `kind` about `clip`, its answer as a model sampling at `fps` should give it;
    with `walk`, an order or time question's answer first walks the appearances up to the one asked
    about (`walked`); with `cite`, it first cites the caption of that appearance (`cited`)."""
    q = _question(kind, clip, rng, fps)
    if q.asked_about is None:
        return q
    return walked(q, clip, fps) if walk else cited(q, clip) if cite else q


def cited(q: VideoQuestion, clip: Clip) -> VideoQuestion:
    """`q` answered after citing the frame caption of the appearance it asks about ("3 5; so 5"):
    writing the caption's number first turns finding it into copying what followed that number in
    the prompt."""
    a = clip.appearances[q.asked_about]
    return dataclasses.replace(q, answer=f"{q.asked_about + 1} {a.digit}{WALK_END}{q.answer}")


def walked(q: VideoQuestion, clip: Clip, fps: float) -> VideoQuestion:
    """`q` answered by a walk: each appearance up to the one asked about, numbered, with its time
    and digit, then the answer ("1 0:03 9, 2 0:08 4, 3 0:12 5; so 5"). Each step is then a local
    read: the next scene after the time just written, not the k-th of up to nine found at once."""
    steps = ", ".join(f"{n + 1} {clock(first_seen(a.start, fps))} {a.digit}"
                      for n, a in enumerate(clip.appearances[:q.asked_about + 1]))
    return dataclasses.replace(q, answer=steps + WALK_END + q.answer)


def final_answer(reply: str) -> str:
    """What a reply answers: after a walk's end, or the whole reply."""
    return reply.rsplit(WALK_END, 1)[-1]


def _question(kind: str, clip: Clip, rng: np.random.Generator, fps: float) -> VideoQuestion:
    appearances = clip.appearances
    if kind == "count":
        return VideoQuestion(kind, "How many digits appeared?", str(len(appearances)), len(appearances))
    if kind == "order":
        k = int(rng.integers(1, min(len(appearances), len(ORDINALS)) + 1))
        digit = appearances[k - 1].digit
        return VideoQuestion(kind, f"Which digit appeared {ordinal(k)}?", str(digit), digit, asked_about=k - 1)
    if kind == "time":
        digit = int(rng.choice(sorted({a.digit for a in appearances})))
        first = next(n for n, a in enumerate(appearances) if a.digit == digit)
        start = appearances[first].start
        return VideoQuestion(kind, f"When did the {digit} first appear?", clock(first_seen(start, fps)), start,
                             asked_about=first)
    if kind == TIMELINE:
        answer = ", ".join(f"{clock(first_seen(a.start, fps))} {a.digit}" for a in appearances)
        return VideoQuestion(kind, "List the digits as they appeared, with their times.", answer, answer)
    if kind == "at":
        seconds = int(clip.start) + int(rng.integers(0, int(clip.duration)))
        shown = clip.on_screen(seconds)
        answer = str(shown.digit) if shown else NOTHING
        return VideoQuestion(kind, f"What was on screen at {clock(seconds)}?", answer, answer)
    raise ValueError(f"unknown question kind {kind!r}")


def is_right(q: VideoQuestion, reply: str) -> bool:
    """Whether a model's reply answers `q`: the same digit, count or "nothing", or for "time" a
    time within one second of the true first appearance. A walk is judged by its answer alone."""
    reply = final_answer(reply).strip().rstrip(".").lower()
    if q.kind == "time":
        seconds = parse_clock(reply)
        return seconds is not None and abs(seconds - float(q.truth)) <= 1.0
    return reply == str(q.truth).lower()


def _on_grid(seconds: float, step: float) -> float:
    return round(seconds / step) * step


def _down_to_grid(seconds: float, step: float) -> float:
    return math.floor(seconds / step + 1e-9) * step


def question_turns(video_part, questions: list[VideoQuestion], answered: bool = True,
                   question_first: bool = False) -> list:
    """A conversation about one video: the video and the first question (with `question_first`, the
    question and then the video), then each further question in its own user turn; with `answered`,
    each followed by its answer (training)."""
    from hepta.modality.chat import Turn

    turns = []
    for i, q in enumerate(questions):
        first = (q.question, video_part) if question_first else (video_part, q.question)
        turns.append(Turn("user", first if i == 0 else (q.question,)))
        if answered:
            turns.append(Turn("assistant", (q.answer,)))
    return turns
