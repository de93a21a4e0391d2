"""Video spans in the shared id space: sampled frames as image spans, each stamped with its time.

A span is `<|video_start|>`, then per sampled frame `<|frame|>`, the frame's time as text
("0:42", the way questions and answers write times), and the frame's image span
(`image_span.py`), then `<|video_end|>`. A frame is read exactly as a still image is, so what the
model learned about images carries over; the timestamp makes time something the model can read
and copy into an answer rather than infer from positions. Without time (`with_time=False`, the
ablation of the video tasks) the timestamps are left out and nothing else changes.

How the timestamp is written is its `StampForm`. As text ("0:14" in the text tokenizer's tokens) most seconds
are one token ("14"). With `DIGITS` it is written a character a token ("0", ":", "1", "4"). Then a time a model
writes in a caption or a reply ("0m14", "0:14") holds a seconds token that no timestamp holds, and a reply can find
it by what it is: with the timestamps' own "14", a model copied times by position and got them wrong
(docs/multimodal.md). With `TIME` each digit of a timestamp is a token of its own (`<|time_4|>`), which no text
holds: a time the model writes copies each digit from the stamp as a fixed map, and the digits it wrote are then
the only ones in the prompt that a reply can copy them from. `TENS` is `TIME` with the seconds' tens digit in a
token of its own too (`<|tens_1|><|time_4|>`): the text tokenizer writes "14" as one token, read from the pair, and
with both digits alike in kind only their order told "14" from "41".

A frame that repeats the last one kept adds nothing but tokens, so only frames that show something
new are kept (`changes_only`): a still scene costs one frame however long it lasts, and its
timestamp says when it began. The next kept frame's timestamp says when it ended. Decoding noise
moves few codes (none, measured on the H.264 clips of the video tasks) and a change of scene most
of them (at least 81% there), so the threshold between them is wide.

Models only read video: no span is ever generated, so there is no grammar here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from hepta.modality.image_span import ImageVocab
from hepta.modality.stamp_form import StampForm


MIN_CHANGED = 0.25  # of a frame's code positions: a frame changed in fewer repeats the last one kept


def changes_only(frames_NGG: torch.Tensor, times: Sequence[float],
                 min_changed: float = MIN_CHANGED) -> tuple[torch.Tensor, tuple[float, ...]]:
    """The frames that show something new, with their times: the first, then each whose codes differ
    from the last kept frame's at `min_changed` of the positions or more. Comparing with the last
    kept frame rather than the one before lets a slow drift add up until it counts."""
    frames = torch.as_tensor(frames_NGG)
    if len(frames) == 0:
        return frames, tuple(times)
    flat = frames.reshape(len(frames), -1)
    kept = [0]
    for i in range(1, len(flat)):
        if (flat[i] != flat[kept[-1]]).float().mean().item() >= min_changed:
            kept.append(i)
    return frames[kept], tuple(float(times[i]) for i in kept)


@dataclass(frozen=True)
class VideoVocab:
    """Where video lives in the id space of one tokenizer: its markers, and the image block its frames use."""

    start_id: int  # <|video_start|>
    end_id: int  # <|video_end|>
    frame_id: int  # <|frame|>
    images: ImageVocab
    time_start: int | None = None  # <|time_0|>; <|time_1|> ... <|time_9|> follow it
    tens_start: int | None = None  # <|tens_0|>; <|tens_1|> ... <|tens_5|> follow it

    def span_ids(self, frames_NGG: torch.Tensor | Sequence, times: Sequence[float],
                 encode_text: Callable[[str], list[int]], with_time: bool = True,
                 stamps: StampForm = StampForm.TEXT) -> list[int]:
        """Ids of a video whose frames have codes [N, grid, grid], sampled at `times` seconds."""
        return self.span(frames_NGG, times, encode_text, with_time, stamps=stamps)[0]

    def span(self, frames_NGG: torch.Tensor | Sequence, times: Sequence[float],
             encode_text: Callable[[str], list[int]], with_time: bool = True,
             captions: Sequence[str] | None = None, caption_end: int | None = None,
             stamps: StampForm = StampForm.TEXT) -> tuple[list[int], list[bool]]:
        """Ids of a video, as `span_ids`, and per id whether it is a caption: with `captions`, each
        frame's image span is followed by what it shows, which the model learns to write (the
        frame's caption is a target), so each frame is read where it is seen. `caption_end` (an
        end-of-reply id) closes each caption, so a model writing one says where it stops."""
        frames = torch.as_tensor(frames_NGG)
        assert len(frames) == len(times), f"{len(frames)} frames but {len(times)} times"
        assert captions is None or len(captions) == len(frames), f"{len(frames)} frames but {len(captions)} captions"
        ids = [self.start_id]
        is_caption = [False]
        for n, (grid, seconds) in enumerate(zip(frames, times)):
            stamp = self.timestamp(seconds, encode_text, stamps) if with_time else []
            frame = [self.frame_id] + stamp + self.images.span_ids(grid)
            ids.extend(frame)
            is_caption.extend([False] * len(frame))
            if captions is not None:
                caption = encode_text(captions[n]) + ([] if caption_end is None else [caption_end])
                ids.extend(caption)
                is_caption.extend([True] * len(caption))
        ids.append(self.end_id)
        is_caption.append(False)
        return ids, is_caption

    def timestamp(self, seconds: float, encode_text: Callable[[str], list[int]],
                  stamps: StampForm = StampForm.TEXT) -> list[int]:
        """A frame's timestamp ids, written in the form `stamps`."""
        if stamps in (StampForm.TEXT, StampForm.DIGITS):
            return timestamp_ids(seconds, encode_text, digits=stamps == StampForm.DIGITS)
        assert self.time_start is not None, "this vocabulary has no time digits"
        assert stamps != StampForm.TENS or self.tens_start is not None, "this vocabulary has no tens digits"
        text = clock(seconds)
        tens_at = len(text) - 2  # the seconds' tens digit
        ids = []
        for at, character in enumerate(text):
            if not character.isdigit():
                ids.extend(encode_text(character))
            elif at == tens_at and stamps == StampForm.TENS:
                ids.append(self.tens_start + int(character))
            else:
                ids.append(self.time_start + int(character))
        return ids

    def video_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """Which ids of a flat id tensor lie in a video span, markers included (the spans in it are whole)."""
        opened = torch.cumsum(ids == self.start_id, 0)
        closed_before = torch.cumsum(ids == self.end_id, 0) - (ids == self.end_id).long()
        return opened > closed_before

    def caption_ends(self, ids: torch.Tensor, end_id: int) -> torch.Tensor:
        """Positions of the end ids inside a flat id tensor's video spans: each closes a frame's caption."""
        return torch.nonzero((ids == end_id) & self.video_mask(ids)).flatten()

    def span_length(self, encode_text: Callable[[str], list[int]], frames: int, seconds: float,
                    with_time: bool = True, stamps: StampForm = StampForm.TEXT) -> int:
        """About how many ids a video of `frames` frames lasting `seconds` takes (each frame as long
        as its last one's: timestamps only grow with time)."""
        return 2 + frames * self.frame_length(encode_text, seconds, with_time, stamps)

    def frame_length(self, encode_text: Callable[[str], list[int]], seconds: float, with_time: bool = True,
                     stamps: StampForm = StampForm.TEXT) -> int:
        """Ids one frame at `seconds` takes."""
        stamp = len(self.timestamp(seconds, encode_text, stamps)) if with_time else 0
        return 1 + stamp + self.images.span_length


def timestamp_ids(seconds: float, encode_text: Callable[[str], list[int]], digits: bool = False) -> list[int]:
    """A frame's timestamp ("0:14"): as the text tokenizer writes it, or with `digits` a character a token."""
    text = clock(seconds)
    return [i for character in text for i in encode_text(character)] if digits else encode_text(text)


def clock(seconds: float) -> str:
    """m:ss, as timestamps, questions and answers write times (h:mm:ss from an hour on)."""
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def parse_clock(text: str) -> float | None:
    """Seconds from "m:ss" or "h:mm:ss" (or a bare number of seconds); None when it is neither."""
    fields = text.strip().rstrip(".").split(":")
    try:
        values = [float(f) for f in fields]
    except ValueError:
        return None
    if len(values) > 3 or any(v < 0 for v in values):
        return None
    seconds = 0.0
    for value in values:
        seconds = seconds * 60 + value
    return seconds
