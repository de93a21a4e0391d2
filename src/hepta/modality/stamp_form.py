"""How a video frame's timestamp is written (video_span.py says why each form exists).

Its own module, free of torch, because the training recipes and the saved reading of a model name it, and
commands that never touch a model (`hepta live ...`) import the recipes.
"""

from __future__ import annotations

from enum import Enum


class StampForm(str, Enum):
    TEXT = "text"  # "0:14" as the text tokenizer writes it
    DIGITS = "digits"  # a character a token: "0", ":", "1", "4"
    TIME = "time"  # each digit its time token: <|time_0|> ":" <|time_1|><|time_4|>
    TENS = "tens"  # as TIME, with the seconds' tens digit its tens token: <|time_0|> ":" <|tens_1|><|time_4|>

    @classmethod
    def of_flags(cls, stamp_digits: bool = False, time_tokens: bool = False, tens_tokens: bool = False) -> "StampForm":
        """The form the training switches ask for: the tens tokens, then the time tokens, rule over the digits."""
        return cls.TENS if tens_tokens else cls.TIME if time_tokens else cls.DIGITS if stamp_digits else cls.TEXT
