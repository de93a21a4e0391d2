"""Pictures for `hepta demo`: a held-out digit as a PNG, and PNGs laid side by side."""

from __future__ import annotations

import io

from PIL import Image

from hepta.modality import digits
from hepta.modality.image_io import encode_png

SHOWN_SCALE = 16  # 8x8 digits are shown 128x128


def held_out_digit_png(position: int) -> tuple[bytes, int]:
    """The PNG and label of the position-th held-out digit."""
    held_out = digits.load_digits_split("held_out")
    return encode_png(held_out.images[position]), int(held_out.labels[position])


def digit_grid_png(pngs: list[bytes], gap: int = 8) -> bytes:
    """Images side by side, enlarged with nearest neighbour, on a grey strip."""
    images = [Image.open(io.BytesIO(png)).convert("L") for png in pngs]
    side = max(image.width for image in images) * SHOWN_SCALE
    strip = Image.new("L", (len(images) * (side + gap) + gap, side + 2 * gap), 96)
    for i, image in enumerate(images):
        strip.paste(image.resize((side, side), Image.Resampling.NEAREST), (gap + i * (side + gap), gap))
    out = io.BytesIO()
    strip.save(out, format="PNG")
    return out.getvalue()
