"""`hepta generate --image/--image-out`: image files and a question -> a chat prompt in ids, and
the answer's first image -> PNG bytes.

The user turn holds the images first, then the text (the order the model was trained on), in
`encode_chat`'s layout with the assistant's turn opened; asked for an image answer (a drawing,
or an edit of the given image), the assistant's turn starts with <|image_start|>, so the model
writes an image.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hepta.errors import HeptaError
from hepta.modality.chat import ImageCodes, Turn, encode_chat
from hepta.modality.codec import ImageCodec
from hepta.modality.image_io import ImageInputError, decode_image, encode_png, read_local_image
from hepta.tokenizer import Tokenizer


def image_chat_ids(codec: ImageCodec, tokenizer: Tokenizer, image_paths: Sequence[str], prompt: str,
                   draw: bool) -> list[int]:
    pixels = []
    for path in image_paths:
        try:
            pixels.append(decode_image(read_local_image(path), codec.image_size, codec.channels))
        except ImageInputError as e:
            raise HeptaError(f"--image {path}: {e}") from e
    codes = codec.codes(np.stack(pixels)) if pixels else []
    ids, _ = encode_chat([Turn("user", (*(ImageCodes(c) for c in codes), prompt))], tokenizer, codec.vocab)
    return ids + ([codec.vocab.start_id] if draw else [])


def first_image_png(codec: ImageCodec, prompt_ids: Sequence[int], token_ids: Sequence[int]) -> bytes | None:
    """The first complete image of an answer as PNG bytes, or None when it holds none."""
    images = codec.answer_images(prompt_ids, token_ids)
    return encode_png(images[0]) if images else None
