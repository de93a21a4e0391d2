"""The video side of a run: clips planned afresh every step from the training digits, each sampled
frame read through the run's image tokenizer, and several questions asked about each clip.

A step's clips all have one length, drawn anew each step (log-uniformly), and as many of them as
fill about `tokens_per_step` tokens with their questions: one 3-minute clip or some twenty
6-second ones, with almost no padding. A
clip's frames are looked up from codes of every training scan computed once, so a step's video
costs its forward and backward pass and nothing else. The clips of a step depend only on
(seed, step), like the text batches, so resuming needs no saved data position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hepta.errors import HeptaError
from hepta.modality import digits, video_data
from hepta.modality.chat import Turn, VideoCodes, encode_chat, video_vocab
from hepta.modality.codec import ImageCodec
from hepta.tokenizer import Tokenizer
from hepta.train.conversations import pad_rows
from hepta.train.recipes import VideoRecipe


@dataclass
class VideoData:
    recipe: VideoRecipe
    tokenizer: Tokenizer
    codec: ImageCodec
    scans: digits.Digits
    codes_by_source: dict[int, torch.Tensor]  # each training scan's code grid [g, g]
    blank: torch.Tensor  # the empty screen's code grid
    with_time: bool = True  # False: frames without timestamps (the ablation of the time stamps)

    @classmethod
    def build(cls, recipe: VideoRecipe, codec: ImageCodec, tokenizer: Tokenizer, max_seq_len: int,
              with_time: bool = True) -> "VideoData":
        scans = digits.load_digits_split("train")
        codes = codec.codes(scans.images)
        blank = codec.codes(np.zeros((1, codec.channels, codec.image_size, codec.image_size), np.float32))[0]
        data = cls(recipe, tokenizer, codec, scans, dict(zip(scans.indices.tolist(), codes)), blank, with_time)
        longest = data.tokens_per_clip(recipe.seconds[1]) + 30 * recipe.questions_per_clip
        if longest > max_seq_len:
            raise HeptaError(f"a {recipe.seconds[1]}-second training clip takes about {longest} tokens, more than the "
                             f"model's context of {max_seq_len}; raise max_seq_len")
        return data

    @property
    def source(self) -> str:
        low, high = self.recipe.seconds
        return (f"video: {low}-{high} s clips of the training digits at {self.recipe.fps:g} frame/s, "
                f"{self.recipe.questions_per_clip} questions each, about {self.recipe.tokens_per_step:,} tokens a step"
                + ("" if self.with_time else ", without timestamps"))

    def tokens_per_clip(self, seconds: float) -> int:
        vocab = video_vocab(self.tokenizer, self.codec.vocab.grid)
        frames = int(np.ceil(seconds * self.recipe.fps))
        return vocab.span_length(self.tokenizer.encode, frames, seconds, self.with_time)

    def clip_turns(self, clip: video_data.Clip, rng: np.random.Generator) -> list[Turn]:
        """The clip's frames and its questions, answered: one of each kind (and the timeline, with
        the recipe's `timeline`), then kinds at random."""
        sources, times = video_data.sources_on_screen(clip, self.recipe.fps)
        frames = torch.stack([self.blank if s is None else self.codes_by_source[s] for s in sources])
        kinds = list(video_data.QUESTION_KINDS)
        if self.recipe.timeline:
            kinds.append(video_data.TIMELINE)
        kinds += list(rng.choice(kinds, size=max(0, self.recipe.questions_per_clip - len(kinds))))
        questions = {}
        for kind in rng.permutation(kinds):
            q = video_data.question(str(kind), clip, rng, self.recipe.fps)
            questions.setdefault(q.question, q)  # "how many" asked twice is one question
        return video_data.question_turns(VideoCodes(frames, times, self.with_time), list(questions.values()))

    def batch(self, generator: torch.Generator, shard: tuple[int, int] = (0, 1)) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets [B, T] of this rank's clips of the step `generator` belongs to."""
        index, count = shard
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
        # log-uniform: as many steps of 5-10 s clips as of 1.5-3 min ones, so the short clips where
        # looking at the frames pays off soonest come often, and their many questions with them
        low, high = self.recipe.seconds
        seconds = int(round(np.exp(rng.uniform(np.log(low), np.log(high)))))
        # clips until their conversations, questions included, fill the step (every rank as many)
        conversations, total = [], 0
        while total < self.recipe.tokens_per_step or len(conversations) % count:
            clip = video_data.plan_clip(rng, seconds, self.scans)
            conversations.append(encode_chat(self.clip_turns(clip, rng), self.tokenizer, self.codec.vocab,
                                             add_generation_prompt=False))
            total += len(conversations[-1][0])
        share = len(conversations) // count
        ids, targets, _ = pad_rows(conversations[index * share:(index + 1) * share],
                                   self.tokenizer.special_ids["<|pad|>"])
        return ids[:, :-1], targets[:, :-1]  # the last id is only ever a target
