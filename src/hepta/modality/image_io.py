"""Image bytes in and out, with the limits that keep a bad upload from costing memory.

Pillow reads and writes every format here. The decompression-bomb limit is set explicitly (not
left to Pillow's default) and turned into an error, and an image's size is checked from its
header before any pixel is decoded, so a 20,000-pixel-wide or bomb image is refused for the
price of reading a few bytes.

Pixel convention: float32 [P, S, S] in [0, 1], P = 1 (grey) or 3 (RGB), 1.0 = full intensity;
an 8x8 digit is white ink on black, as in scikit-learn's digits and MNIST.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from hepta.errors import HeptaError

MAX_IMAGE_SIDE = 8192  # pixels; larger images are refused before decoding
MAX_IMAGE_PIXELS = 16_777_216  # 4096 x 4096
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # Pillow's bomb check: a warning above this, an error above twice it


class ImageInputError(HeptaError):
    """An image that cannot be used; the message says why and what to send instead."""


def decode_image(data: bytes, image_size: int, channels: int) -> np.ndarray:
    """Image file bytes -> float32 [channels, image_size, image_size] in [0, 1]."""
    return image_pixels(open_image(data, "L" if channels == 1 else "RGB"), image_size, channels)


def open_image(data: bytes, mode: str = "RGB") -> Image.Image:
    """Image file bytes -> a decoded Pillow image in `mode`, at its own size, within the size limits."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size  # from the header: nothing is decoded yet
                if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE or width * height > MAX_IMAGE_PIXELS:
                    raise ImageInputError(f"the image is {width}x{height} pixels, larger than the {MAX_IMAGE_SIDE} px "
                                          f"side and {MAX_IMAGE_PIXELS:,} pixel limits; send a smaller image")
                image.load()
                return image.convert(mode)
    except ImageInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageInputError(f"the image would decompress to too many pixels ({e}); send a smaller image") from e
    except UnidentifiedImageError as e:
        raise ImageInputError("the data is not an image Pillow can read; send a PNG, JPEG, GIF or WebP file") from e
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt files
        raise ImageInputError(f"the image file is damaged or truncated ({e}); send the complete file") from e


def image_pixels(image: Image.Image, image_size: int | None, channels: int) -> np.ndarray:
    """A decoded Pillow image -> float32 [channels, image_size, image_size] in [0, 1], shrunk with
    the box filter (the resize stills and video frames share); image_size None keeps its own size."""
    mode = "L" if channels == 1 else "RGB"
    if image.mode != mode:
        image = image.convert(mode)
    if image_size is not None and image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), Image.Resampling.BOX)
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


def encode_png(pixels_PSS: np.ndarray, scale: int = 1, side: int | None = None) -> bytes:
    """float [P, S, S] in [0, 1] -> PNG bytes; `scale` > 1, or a `side` in pixels, enlarges with
    nearest neighbour for viewing (no detail is invented: each pixel becomes a block)."""
    array = (np.clip(np.asarray(pixels_PSS, dtype=np.float32), 0, 1) * 255).round().astype(np.uint8)
    image = Image.fromarray(array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0))
    if side is not None and side != image.width:
        image = image.resize((side, side), Image.Resampling.NEAREST)
    elif scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def png_data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def read_data_url(url: str, media: str = "image") -> bytes:
    """The bytes of a `data:image/...;base64,...` URL (`data:video/...` with media="video")."""
    example = {"image": "data:image/png;base64,<data>", "video": "data:video/mp4;base64,<data>"}[media]
    header, sep, payload = url.partition(",")
    if not sep or not header.startswith("data:") or ";base64" not in header:
        raise ImageInputError(f"a data URL must look like {example}; send the {media} base64-encoded")
    if not header[5:].startswith(f"{media}/"):
        raise ImageInputError(f"the data URL holds {header[5:].split(';')[0] or 'no media type'}, not "
                              f"{'an image' if media == 'image' else 'a video'}; send {example.split(';')[0]}")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ImageInputError("the data URL's base64 payload is not valid base64; encode the file again") from e


def read_local_image(path: str | Path, allowed_dirs: list[Path] | None = None, media: str = "image") -> bytes:
    """A local image (or video) file; with `allowed_dirs`, only one inside them (symlinks resolved first)."""
    resolved = Path(path).expanduser().resolve()
    if allowed_dirs is not None and not any(resolved.is_relative_to(d.resolve()) for d in allowed_dirs):
        raise ImageInputError(f"{path} is outside the folders this server may read {media}s from; send a data URL or "
                              "start the server with --allow-image-dir for that folder")
    if not resolved.is_file():
        raise ImageInputError(f"{path} is not a file; check the path")
    return resolved.read_bytes()
