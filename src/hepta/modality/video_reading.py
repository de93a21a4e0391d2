"""How a model reads a video, saved beside its weights: where the question goes, whether the
model writes a caption after each frame as it reads, and how the frames' timestamps are written.

A model trained to read with captions (`VideoRecipe.captions`) must be prompted the same way when it
is evaluated or served: the caption slots are its own to fill (`infer/caption_writer.py`), and a
question it was trained to see before the video would be out of place after it. The folder keeps
`video_reading.json`; a folder without one reads video as plain frames with the question after.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

FILE = "video_reading.json"


@dataclass(frozen=True)
class VideoReading:
    question_first: bool = False  # the question comes before the video
    captions: bool = False  # the model writes a caption after each frame (video_data.caption)
    stamp_digits: bool = False  # each frame's timestamp is written a character a token (video_span.timestamp_ids)
    time_tokens: bool = False  # each timestamp's digits in tokens of their own (video_span.VideoVocab.timestamp)

    def save(self, folder: str | Path) -> None:
        if self == VideoReading():
            (Path(folder) / FILE).unlink(missing_ok=True)
        else:
            (Path(folder) / FILE).write_text(json.dumps(asdict(self)) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> "VideoReading":
        path = Path(folder) / FILE
        return cls(**json.loads(path.read_text())) if path.exists() else cls()
