"""Images the model writes -> PNG data URLs in OpenRouter's shape, whole or as a stream goes.

An answer's `content` keeps only its text (the engine leaves span ids out of the text); each
complete image span becomes `{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}`
in `message.images`, or, streamed, in a delta's `images` once its span has closed.
"""

from __future__ import annotations

import asyncio
from typing import Sequence

from hepta.modality.codec import ImageCodec
from hepta.modality.image_io import encode_png, png_data_url


def image_part(png: bytes) -> dict:
    return {"type": "image_url", "image_url": {"url": png_data_url(png)}}


def answer_pngs(codec: ImageCodec, prompt_ids: Sequence[int], token_ids: Sequence[int]) -> list[bytes]:
    """PNGs of every complete image in an answer (blocking: run it on a worker thread)."""
    return [encode_png(pixels) for pixels in codec.answer_images(prompt_ids, token_ids)]


class ImageStream:
    """Per choice of a streamed answer: its ids so far, and the images already sent."""

    def __init__(self, codec: ImageCodec, prompt_ids: Sequence[int], num_choices: int):
        self.codec = codec
        self.ids = [codec.open_span(prompt_ids) for _ in range(num_choices)]
        self.sent = [0] * num_choices

    async def push(self, index: int, token_ids: Sequence[int]) -> list[dict]:
        """The image parts that `token_ids` complete (a span closes on <|image_end|>)."""
        self.ids[index] += token_ids
        if self.codec.vocab.end_id not in token_ids:
            return []
        pngs = await asyncio.to_thread(answer_pngs, self.codec, [], self.ids[index])
        new, self.sent[index] = pngs[self.sent[index]:], len(pngs)
        return [image_part(png) for png in new]
