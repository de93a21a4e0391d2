"""The video side of a run: clips planned afresh every step from the training digits, each sampled
frame read through the run's image tokenizer, and one question asked about each clip.

A step's clips all have one length, drawn anew each step (log-uniformly, under a bound that grows
over the run: `VideoRecipe.first_longest`), and as many of them as fill about `tokens_per_step`
tokens with their questions. Only the frames that show something new are kept
(`video_span.changes_only`), so a clip costs its scenes, not its seconds. One question a clip: a
second question could be answered from the first one's answer rather than from the frames. A
clip's frames are looked up from codes of every training scan computed once (with the recipe's
`frame_views`, of its moved and turned views too, one drawn for each digit of a clip), so a step's
video costs its forward and backward pass and nothing else. The clips of a step depend only on
(seed, step), like the text batches, so resuming needs no saved data position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from hepta.errors import HeptaError
from hepta.modality import digits, video_data
from hepta.modality.chat import Turn, VideoCodes, encode_chat, video_vocab
from hepta.modality.codec import ImageCodec
from hepta.modality.video_span import StampForm, changes_only, clock
from hepta.tokenizer import Tokenizer
from hepta.train.conversations import first_in_each_answer, pad_rows, recognition_views
from hepta.train.recipes import VideoRecipe

# how the data's description names each form of the frames' timestamps
STAMP_FORMS = {StampForm.TEXT: "", StampForm.DIGITS: ", timestamps a character a token",
               StampForm.TIME: ", timestamps' digits in time tokens",
               StampForm.TENS: ", timestamps' digits in time tokens, the seconds' tens in tens tokens"}


def log_uniform_seconds(rng: np.random.Generator, low: float, high: float) -> int:
    """A clip length from `low` to `high` seconds (`low` if high is below it), log-uniformly: short clips stay
    as frequent as long ones are rare."""
    return int(round(np.exp(rng.uniform(np.log(low), np.log(max(low, high))))))


@dataclass
class VideoData:
    recipe: VideoRecipe
    tokenizer: Tokenizer
    codec: ImageCodec
    scans: digits.Digits
    # each training scan's code grids [V, g, g]: the scan itself, then with the recipe's frame_views its views
    views_by_source: dict[int, torch.Tensor]
    blank: torch.Tensor  # the empty screen's code grid
    with_time: bool = True  # False: frames without timestamps (the ablation of the time stamps)
    stamps: StampForm = StampForm.TEXT  # how each frame's timestamp is written (video_span.StampForm)
    all_frames: bool = False  # True: repeated frames kept too (the ablation of keeping changes only)
    captions: bool = False  # True: each frame followed by what it shows, as a target (video_span.VideoVocab.span)
    # what a frame's caption says, given the clip and the frame's time (video_data.caption unless a probe says else)
    caption_of: Callable[[video_data.Clip, float], str] = video_data.caption

    @classmethod
    def build(cls, recipe: VideoRecipe, codec: ImageCodec, tokenizer: Tokenizer, max_seq_len: int,
              with_time: bool = True, all_frames: bool = False, captions: bool = False,
              split: str = "train", stamps: StampForm = StampForm.TEXT) -> "VideoData":
        scans = digits.load_digits_split(split)
        views = [scans.images] + (recognition_views(scans.images) if recipe.frame_views else [])
        codes = torch.stack([codec.codes(view) for view in views], dim=1)
        blank = codec.codes(np.zeros((1, codec.channels, codec.image_size, codec.image_size), np.float32))[0]
        data = cls(recipe, tokenizer, codec, scans, dict(zip(scans.indices.tolist(), codes)), blank, with_time,
                   stamps, all_frames, captions or recipe.captions)
        longest = data.tokens_per_clip(recipe.seconds[1]) + 60  # every frame kept, and the longest answer
        if longest > max_seq_len:
            raise HeptaError(f"a {recipe.seconds[1]}-second training clip takes about {longest} tokens, more than the "
                             f"model's context of {max_seq_len}; raise max_seq_len")
        return data

    @property
    def source(self) -> str:
        low, high = self.recipe.seconds
        kinds = ", ".join(f"{kind} {weight:g}" for kind, weight in self.recipe.kinds)
        return (f"video: {low}-{high} s clips of the training digits at {self.recipe.fps:g} frame/s (at most "
                f"{self.recipe.first_longest} s at first"
                + (f", {self.recipe.long_shortest} s and more in the last {self.recipe.long_finish:.0%} of the run"
                   if self.recipe.long_finish else "") + f"), one question each ({kinds}), about "
                f"{self.recipe.tokens_per_step:,} tokens a step"
                + ("" if self.with_time else ", without timestamps") + (", all frames" if self.all_frames else "")
                + (STAMP_FORMS[self.stamps] if self.with_time else "")
                + (", the question first" if self.recipe.question_first else "")
                + (", each frame captioned" + (", the answering one marked" if self.recipe.mark else "")
                                            + (f", a marked time's last digit after {self.recipe.mark_units_anchor!r}"
                                               if self.recipe.mark and self.recipe.mark_units_anchor else "")
                   if self.captions else "")
                + (f", {self.recipe.shifted_share:.0%} of the clips' clocks started before "
                   f"{clock(self.recipe.shift_before)}" if self.recipe.shifted_share else "")
                + (f", each digit shown as one of {len(next(iter(self.views_by_source.values())))} views of its scan"
                   if self.recipe.frame_views else "")
                + (f", its loss counted {self.recipe.loss_weight:g} times" if self.recipe.loss_weight != 1 else "")
                + (f", each caption's mark decision {self.recipe.mark_weight:g} times"
                   + (", taken from its caption's other tokens" if self.recipe.mark_weight_moves else "")
                   if self.weighs_decisions else ""))

    @property
    def weighs_decisions(self) -> bool:
        """Whether the loss weighs the decision after each caption: the recipe's `mark_weight`, where marks are
        written."""
        return self.captions and self.recipe.mark and self.recipe.mark_weight != 1

    def decision_weights(self, targets_BT: torch.Tensor) -> torch.Tensor | None:
        """Each target's weight in the video loss (conversation_loss): the recipe's `mark_weight` on the token after
        each frame's caption, the mark's first or `<|end|>`, where the model decides whether the frame answers; 1
        elsewhere; None where nothing is weighted. (A caption holds neither token before its decision; the reply's
        own first one is weighted too, its `<|end|>` in the recipe's vocabulary, a token learned early.)"""
        if not self.weighs_decisions:
            return None
        decisions = first_in_each_answer(targets_BT, [self.tokenizer.encode(video_data.MARK)[0], self.tokenizer.end_id])
        return torch.where(decisions, self.recipe.mark_weight, 1.0)

    def tokens_per_clip(self, seconds: float) -> int:
        vocab = video_vocab(self.tokenizer, self.codec.vocab.grid)
        frames = int(np.ceil(seconds * self.recipe.fps))
        return vocab.span_length(self.tokenizer.encode, frames, seconds, self.with_time, self.stamps)

    def clip_frames(self, clip: video_data.Clip, q: video_data.VideoQuestion | None = None,
                    rng: np.random.Generator | None = None) -> VideoCodes:
        """The clip as a video part: its sampled frames' codes (those that show something new, unless
        `all_frames`) and their times; with the recipe's `mark`, the caption of the frame that answers `q`
        is marked (video_data.marked_caption). With `rng` and the recipe's `frame_views`, each digit shows one
        of its scan's views, drawn once for the clip; otherwise the scan itself."""
        sources, times = video_data.sources_on_screen(clip, self.recipe.fps)
        # drawn in order of appearance, so a seed draws alike
        shown = {s: self._view(s, rng) for s in dict.fromkeys(sources) if s is not None}
        frames = torch.stack([self.blank if s is None else shown[s] for s in sources])
        captions = {t: self.caption_of(clip, t) for t in times}
        marked = (video_data.marked_caption(q, clip, self.recipe.fps, self.recipe.mark_joiner,
                                            self.recipe.mark_units_anchor) if q is not None else None)
        if self.recipe.mark and marked:
            captions[marked[0]] += marked[1]
        if not self.all_frames:
            frames, times = changes_only(frames, times)
        return VideoCodes(frames, times, self.with_time,
                          tuple(captions[t] for t in times) if self.captions else None, self.stamps)

    def _view(self, source: int, rng: np.random.Generator | None) -> torch.Tensor:
        """The code grid a scan shows in a clip: one of its views drawn by `rng`, else the scan itself. Where a scan
        has one view nothing is drawn, so a run without views draws the clips a run before them did."""
        views = self.views_by_source[source]
        return views[0] if rng is None or len(views) == 1 else views[rng.integers(len(views))]

    def clip_turns(self, clip: video_data.Clip, rng: np.random.Generator) -> list[Turn]:
        """The clip's frames and one question about them, of a kind drawn by the recipe's weights, answered."""
        kinds, weights = zip(*self.recipe.kinds)
        kind = str(rng.choice(kinds, p=np.asarray(weights) / sum(weights)))
        q = video_data.question(kind, clip, rng, self.recipe.fps, walk=self.recipe.walk, cite=self.recipe.cite)
        return video_data.question_turns(self.clip_frames(clip, q, rng), [q], question_first=self.recipe.question_first)

    def longest(self, progress: float) -> float:
        """The longest clip at `progress` (0 to 1) of the run: `first_longest` seconds, growing
        log-linearly to the recipe's longest by `ramp` of the run."""
        low, high = self.recipe.first_longest, self.recipe.seconds[1]
        return low * (high / low) ** min(1.0, progress / self.recipe.ramp)

    def step_seconds(self, rng: np.random.Generator, progress: float) -> int:
        """One clip length for a step: log-uniform between the shortest and the longest at `progress`,
        so short clips, where reading the frames pays off soonest, stay frequent; in the recipe's long finish,
        between its `long_shortest` and the longest."""
        finishing = progress >= 1.0 - self.recipe.long_finish
        low = self.recipe.long_shortest if finishing else self.recipe.seconds[0]
        return log_uniform_seconds(rng, low, self.longest(progress))

    def clocked(self, clip: video_data.Clip, rng: np.random.Generator) -> video_data.Clip:
        """`clip`, in the recipe's `shifted_share` of the draws with its clock started at a random whole second
        that ends it before `shift_before`: every minute digit then as likely in a mark, so copying it from
        the frame's timestamp is the only way to write it right."""
        if self.recipe.shifted_share and rng.uniform() < self.recipe.shifted_share:
            latest = max(0, int(self.recipe.shift_before - clip.duration))
            return video_data.shifted(clip, float(rng.integers(0, latest + 1)))
        return clip

    def batch(self, generator: torch.Generator, shard: tuple[int, int] = (0, 1),
              progress: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets [B, T] of this rank's clips of the step `generator` belongs to, at
        `progress` (0 to 1) of the run."""
        index, count = shard
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
        seconds = self.step_seconds(rng, progress)
        # clips until their rows, padded to the longest, fill the step (every rank as many): a clip
        # keeps as many frames as it has scenes, so rows of one length of clip still differ
        conversations, longest = [], 0
        while longest * len(conversations) < self.recipe.tokens_per_step or len(conversations) % count:
            clip = self.clocked(video_data.plan_clip(rng, seconds, self.scans), rng)
            conversations.append(encode_chat(self.clip_turns(clip, rng), self.tokenizer, self.codec.vocab,
                                             add_generation_prompt=False))
            longest = max(longest, len(conversations[-1][0]))
        share = len(conversations) // count
        ids, targets, _ = pad_rows(conversations[index * share:(index + 1) * share],
                                   self.tokenizer.special_ids["<|pad|>"])
        return ids[:, :-1], targets[:, :-1]  # the last id is only ever a target
