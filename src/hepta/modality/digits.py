"""The embedded image data: scikit-learn's bundled handwritten digits (1,797 real 8x8 scans).

Nothing is downloaded: scikit-learn ships the data. The last 20% in scikit-learn's order
(indices 1438-1796) is held out from the image tokenizer and the model alike; every reported
image figure uses only it.

Images here are float32 [N, 1, 8, 8] in [0, 1] (the scans' 0-16 ink levels divided by 16).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hepta.errors import HeptaError

NUM_DIGITS = 1797
HELD_OUT_FROM = 1438  # int(0.8 * 1797) rounded up: indices 1438..1796 are never trained on
INK_LEVELS = 16

RECOGNISE_PROMPT = "What digit is this?"
DRAW_PROMPT = "Draw the digit {digit}."
EDIT_PROMPTS = {
    "flip": "Flip this image horizontally.",
    "invert": "Invert this image.",
    "shift": "Shift this image one pixel to the right.",
}


@dataclass(frozen=True)
class Digits:
    images: np.ndarray  # float32 [N, 1, 8, 8] in [0, 1]
    labels: np.ndarray  # int64 [N]
    indices: np.ndarray  # positions in scikit-learn's order


def load_digits_split(split: str) -> Digits:
    """split: "train" (the first 80%) or "held_out" (the last 20%)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise HeptaError("the embedded image data comes from scikit-learn; install it with "
                         "`pip install 'hepta[eval]'` or pass --data with your own conversations") from e
    data = load_digits()
    images = (data.images.astype(np.float32) / INK_LEVELS).reshape(-1, 1, 8, 8)
    labels = data.target.astype(np.int64)
    assert len(images) == NUM_DIGITS
    chosen = {"train": np.arange(0, HELD_OUT_FROM), "held_out": np.arange(HELD_OUT_FROM, NUM_DIGITS)}[split]
    return Digits(images[chosen], labels[chosen], chosen)


# --- the edits, exact (the references the editing metric compares against) ----------------------

def flip(images: np.ndarray) -> np.ndarray:
    return images[..., ::-1].copy()


def invert(images: np.ndarray) -> np.ndarray:
    return 1.0 - images


def shift_right(images: np.ndarray) -> np.ndarray:
    """One pixel to the right; the rightmost column falls off and a blank one enters on the left."""
    out = np.zeros_like(images)
    out[..., 1:] = images[..., :-1]
    return out


EDITS = {"flip": flip, "invert": invert, "shift": shift_right}
# What undoes each edit well enough for a judge of upright digits to read the result
# (undoing the shift loses nothing: the column that fell off is blank in almost every scan).
UNDO = {"flip": flip, "invert": invert,
        "shift": lambda images: np.concatenate([images[..., 1:], np.zeros_like(images[..., :1])], axis=-1)}


def tokenizer_training_images(digits: Digits) -> np.ndarray:
    """Images the image tokenizer learns from: the digits and every edit of them, which the model
    must also read and write."""
    return np.concatenate([digits.images] + [edit(digits.images) for edit in EDITS.values()])


# --- the conversations: one builder each, shared by training, evaluation and the demo -----------
# The user turn puts the image first, then the instruction.

def recognise_turns(image_codes, digit: int | None = None) -> list:
    from hepta.modality.chat import ImageCodes, Turn

    turns = [Turn("user", (ImageCodes(image_codes), RECOGNISE_PROMPT))]
    return turns + ([Turn("assistant", (str(digit),))] if digit is not None else [])


def draw_turns(digit: int, image_codes=None) -> list:
    from hepta.modality.chat import ImageCodes, Turn

    turns = [Turn("user", (DRAW_PROMPT.format(digit=digit),))]
    return turns + ([Turn("assistant", (ImageCodes(image_codes),))] if image_codes is not None else [])


def edit_turns(image_codes, edit: str, edited_codes=None) -> list:
    from hepta.modality.chat import ImageCodes, Turn

    turns = [Turn("user", (ImageCodes(image_codes), EDIT_PROMPTS[edit]))]
    return turns + ([Turn("assistant", (ImageCodes(edited_codes),))] if edited_codes is not None else [])
