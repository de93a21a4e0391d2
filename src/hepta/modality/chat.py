"""Chat messages whose content mixes text, images, audio and video, rendered as one id sequence.

The layout is the text chat format of `Tokenizer.format_chat`, `<|role|>content<|end|>`, with
each image, audio clip or video becoming its span (`image_span.py`, `audio_span.py`,
`video_span.py`) where it stands among the text parts. Training
also needs to know which ids are the answer: `encode_chat` marks the assistant's content and the
`<|end|>` that closes it, which is what the loss covers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import torch

from hepta.errors import HeptaError
from hepta.modality.audio_span import AudioVocab
from hepta.modality.image_span import ImageVocab
from hepta.modality.video_span import StampForm, VideoVocab
from hepta.tokenizer import CHAT_ROLES, Tokenizer


@dataclass(frozen=True)
class ImageCodes:
    """An image part already turned into codes [grid, grid] by the image tokenizer."""

    codes: torch.Tensor


@dataclass(frozen=True)
class AudioCodes:
    """An audio part already turned into codes [K] by the audio tokenizer."""

    codes: torch.Tensor


@dataclass(frozen=True)
class VideoCodes:
    """A video part already sampled and turned into frame codes [N, grid, grid], with each frame's time."""

    frames: torch.Tensor
    times: tuple[float, ...]
    with_time: bool = True  # False: the timestamps are left out (the no-time ablation)
    captions: tuple[str, ...] | None = None  # what each frame shows, written after it (a training target)
    stamps: StampForm = StampForm.TEXT  # how each frame's timestamp is written


Part = Union[str, ImageCodes, AudioCodes, VideoCodes]


@dataclass(frozen=True)
class Turn:
    role: str
    parts: tuple[Part, ...]


def image_vocab(tokenizer: Tokenizer, grid: int) -> ImageVocab:
    """The image block of a tokenizer that holds one."""
    if not tokenizer.layout.num_image_codes:
        raise HeptaError("this model reads and writes text only: its tokenizer has no image codes")
    ids = tokenizer.special_ids
    return ImageVocab(start_id=ids["<|image_start|>"], end_id=ids["<|image_end|>"], row_id=ids["<|image_row|>"],
                      code_start=tokenizer.layout.image_start, num_codes=tokenizer.layout.num_image_codes, grid=grid)


def audio_vocab(tokenizer: Tokenizer) -> AudioVocab:
    """The audio block of a tokenizer that holds one."""
    if not tokenizer.layout.num_audio_codes:
        raise HeptaError("this model does not hear or speak: its tokenizer has no audio codes")
    ids = tokenizer.special_ids
    return AudioVocab(start_id=ids["<|audio_start|>"], end_id=ids["<|audio_end|>"],
                      code_start=tokenizer.layout.audio_start, num_codes=tokenizer.layout.num_audio_codes)


def video_vocab(tokenizer: Tokenizer, grid: int) -> VideoVocab:
    """The video markers of a tokenizer that holds an image block (frames are images)."""
    return _video_markers(tokenizer, image_vocab(tokenizer, grid))


def _video_markers(tokenizer: Tokenizer, images: ImageVocab) -> VideoVocab:
    ids = tokenizer.special_ids
    return VideoVocab(start_id=ids["<|video_start|>"], end_id=ids["<|video_end|>"], frame_id=ids["<|frame|>"],
                      images=images, time_start=ids["<|time_0|>"], tens_start=ids["<|tens_0|>"])


def encode_chat(turns: Sequence[Turn], tokenizer: Tokenizer, images: ImageVocab | None,
                add_generation_prompt: bool = True, audio: AudioVocab | None = None) -> tuple[list[int], list[bool]]:
    """Ids of the chat and, per id, whether it belongs to an assistant answer."""
    ids: list[int] = []
    answer: list[bool] = []

    def put(new: list[int], is_answer: bool) -> None:
        ids.extend(new)
        answer.extend([is_answer] * len(new))

    for turn in turns:
        if turn.role not in CHAT_ROLES:
            raise HeptaError(f"unknown chat role {turn.role!r}; use one of {', '.join(CHAT_ROLES)}")
        is_answer = turn.role == "assistant"
        put([tokenizer.special_ids[f"<|{turn.role}|>"]], False)
        for part in turn.parts:
            if isinstance(part, ImageCodes):
                if images is None:
                    raise HeptaError("this model reads text only; remove the image parts or use a model with images")
                put(images.span_ids(part.codes), is_answer)
            elif isinstance(part, AudioCodes):
                if audio is None:
                    raise HeptaError("this model does not hear audio; remove the audio parts or use a model with speech")
                put(audio.span_ids(part.codes), is_answer)
            elif isinstance(part, VideoCodes):
                if images is None:
                    raise HeptaError("this model does not see video; remove the video parts or use a model with images")
                video = _video_markers(tokenizer, images)
                span, is_caption = video.span(part.frames, part.times, tokenizer.encode, part.with_time, part.captions,
                                              caption_end=tokenizer.end_id, stamps=part.stamps)
                ids.extend(span)
                answer.extend(is_answer or caption for caption in is_caption)
            elif part:
                put(tokenizer.encode(part), is_answer)
        put([tokenizer.end_id], is_answer)
    if add_generation_prompt:
        put([tokenizer.special_ids["<|assistant|>"]], False)
    return ids, answer
