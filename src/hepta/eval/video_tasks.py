"""The video tasks of `hepta eval`: questions about clips of held-out digits, answered by hepta's engine.

Each clip is written as a real MP4 file (`video_data.write_clip`) from the held-out digits, which
neither the image tokenizer nor the model ever sees, then decoded and sampled at 1 frame per
second exactly as an upload to the API is, and asked one question. Every clip length of
`video_data.CLIP_LENGTHS` gets the same number of clips, and the result gives the accuracy per
length beside the overall one. With `with_time=False` the frames' timestamps are left out of the
prompt (the model is otherwise unchanged): the drop in accuracy is what time contributes.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from hepta.errors import HeptaError
from hepta.infer.caption_writer import caption_slots, write_captions
from hepta.infer.engine import Engine, EngineConfig, generate_many
from hepta.infer.request import Request
from hepta.infer.sampling import SamplingParams
from hepta.modality import digits, video_data
from hepta.modality.chat import encode_chat, video_vocab
from hepta.modality.codec import ImageCodec
from hepta.modality.video_io import decode_video
from hepta.modality.video_reading import VideoReading

GREEDY = SamplingParams(temperature=0.0)
TASK_KINDS = {"video-order": "order", "video-time": "time", "video-count": "count"}
DEFAULT_CLIPS = 40  # per clip length
EVAL_SEED = 2  # training plans its clips from the run's seed and the training digits only
FPS = 1.0
EXAMPLES = 3  # question, reply and right answer shown per length


@dataclass
class EvalClip:
    clip: video_data.Clip
    pixels: np.ndarray  # the decoded MP4 sampled at FPS
    times: np.ndarray


@dataclass
class VideoEval:
    engine: Engine
    tokenizer: object
    codec: ImageCodec
    clips_per_length: int
    reading: VideoReading = VideoReading()  # how the model was trained to read video
    on_answer: Callable[[], None] = lambda: None
    # the digits the clips show: the held-out ones, which neither tokenizer nor model ever saw; "train" measures how
    # much better the model reads the digits it trained on (benchmarks/video_split.py)
    digits_split: str = "held_out"

    @classmethod
    def open(cls, model, tokenizer, codec: ImageCodec | None, folder: str, limit: int | None,
             max_num_seqs: int = 8) -> "VideoEval":
        if codec is None:
            raise HeptaError(f"{folder} does not see images or video (no image_tokenizer/ folder), so it cannot be "
                             "evaluated on video tasks; pass a model trained with --preset omni-tiny")
        engine = Engine(model, tokenizer, EngineConfig(max_num_seqs=max_num_seqs), images=codec.vocab).start()
        return cls(engine, tokenizer, codec, limit or DEFAULT_CLIPS, VideoReading.load(folder))

    def close(self) -> None:
        self.engine.stop()

    def clips(self, seconds: int) -> list[EvalClip]:
        """The evaluation clips of one length, written as MP4 files and read back as the API reads uploads."""
        shown = digits.load_digits_split(self.digits_split)
        rng = np.random.default_rng([EVAL_SEED, seconds])
        planned = [video_data.plan_clip(rng, seconds, shown) for _ in range(self.clips_per_length)]
        clips = []
        with tempfile.TemporaryDirectory(prefix="hepta-video-eval-") as folder:
            for n, clip in enumerate(planned):
                path = video_data.write_clip(Path(folder), f"clip{n:03d}", clip, shown)
                video = decode_video(path.read_bytes(), image_size=self.codec.image_size,
                                     channels=self.codec.channels, fps=FPS)
                clips.append(EvalClip(clip, video.pixels, video.times))
        return clips

    def task(self, task: str, with_time: bool = True) -> dict:
        """One question of the task's kind per clip, at every clip length."""
        answered = self.answer(TASK_KINDS[task], with_time)
        prompts, lengths = [a.prompt for a in answered], [a.seconds for a in answered]
        return score([a.question for a in answered], [a.reply for a in answered], lengths) | {
            "with_time": with_time, "prompt_tokens_per_minute": tokens_per_minute(prompts, lengths)}

    def answer(self, kind: str, with_time: bool = True,
               lengths: tuple[int, ...] = video_data.CLIP_LENGTHS) -> list["Answered"]:
        """One question of `kind` per clip of each length, each read (the model writing its own captions
        where it was trained to) and answered greedily."""
        video = video_vocab(self.tokenizer, self.codec.vocab.grid)
        questions, prompts, slots, seconds_of, times, clips = [], [], [], [], [], []
        for seconds in lengths:
            rng = np.random.default_rng([EVAL_SEED, seconds, 1])
            for clip in self.clips(seconds):
                q = video_data.question(kind, clip.clip, rng, FPS)
                part = self.codec.video(clip.pixels, clip.times, with_time, self.reading.stamps)
                if self.reading.captions:  # an empty caption a frame, for the model to write as it reads
                    part = dataclasses.replace(part, captions=("",) * len(part.times))
                turns = video_data.question_turns(part, [q], answered=False,
                                                  question_first=self.reading.question_first)
                ids, is_caption = encode_chat(turns, self.tokenizer, self.codec.vocab)
                questions.append(q)
                prompts.append(ids)
                slots.append(caption_slots(ids, is_caption, video))
                seconds_of.append(seconds)
                times.append(part.times)
                clips.append(clip.clip)
        if self.reading.captions:
            prompts = write_captions(self.engine, prompts, slots)
        requests = [Request(p, max_tokens=video_data.ANSWER_TOKENS, sampling=GREEDY) for p in prompts]
        replies = [choices[0].text for choices in generate_many(self.engine, requests,
                                                                on_done=lambda _i: self.on_answer())]
        return [Answered(*fields) for fields in zip(questions, seconds_of, times, prompts, replies, clips)]


@dataclass(frozen=True)
class Answered:
    question: video_data.VideoQuestion
    seconds: int  # the clip's length
    times: tuple[float, ...]  # the times of the frames read
    prompt: list[int]  # as the model read it, with the captions it wrote
    reply: str
    clip: video_data.Clip  # its ground truth


def score(questions: list[video_data.VideoQuestion], replies: list[str], lengths: list[int]) -> dict:
    """`accuracy` over all questions and `by_length` {seconds: {"accuracy", "n"}}, with a few examples."""
    right = np.array([video_data.is_right(q, r) for q, r in zip(questions, replies)])
    by_length, examples = {}, []
    for seconds in sorted(set(lengths)):
        mine = np.array(lengths) == seconds
        by_length[str(seconds)] = {"accuracy": float(right[mine].mean()), "n": int(mine.sum())}
        for i in np.flatnonzero(mine)[:EXAMPLES]:
            examples.append({"seconds": seconds, "question": questions[i].question, "reply": replies[i].strip(),
                             "answer": questions[i].answer})
    return {"n": len(questions), "accuracy": float(right.mean()), "by_length": by_length, "examples": examples}


def tokens_per_minute(prompts: list[list[int]], lengths: list[int]) -> float:
    """Prompt tokens per minute of video (the question's few tokens included), over all clips."""
    return float(sum(len(p) for p in prompts) / (sum(lengths) / 60))
