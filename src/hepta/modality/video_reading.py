"""How a model reads a video, saved beside its weights: where the question goes, whether the
model writes a caption after each frame as it reads, and how the frames' timestamps are written.

A model trained to read with captions (`VideoRecipe.captions`) must be prompted the same way when it
is evaluated or served: the caption slots are its own to fill (`infer/caption_writer.py`), and a
question it was trained to see before the video would be out of place after it. The folder keeps
`video_reading.json`; a folder without one reads video as plain frames with the question after.
Folders written before the stamp forms had names say `stamp_digits` or `time_tokens` instead of `stamps`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hepta.modality.stamp_form import StampForm

FILE = "video_reading.json"


@dataclass(frozen=True)
class VideoReading:
    question_first: bool = False  # the question comes before the video
    captions: bool = False  # the model writes a caption after each frame (video_data.caption)
    stamps: StampForm = StampForm.TEXT  # how each frame's timestamp is written (video_span.StampForm)

    def save(self, folder: str | Path) -> None:
        if self == VideoReading():
            (Path(folder) / FILE).unlink(missing_ok=True)
        else:
            saved = {"question_first": self.question_first, "captions": self.captions, "stamps": self.stamps.value}
            (Path(folder) / FILE).write_text(json.dumps(saved) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> "VideoReading":
        path = Path(folder) / FILE
        if not path.exists():
            return cls()
        saved = json.loads(path.read_text())
        stamps = (StampForm(saved["stamps"]) if "stamps" in saved
                  else StampForm.of_flags(saved.get("stamp_digits", False), saved.get("time_tokens", False)))
        return cls(saved.get("question_first", False), saved.get("captions", False), stamps)
