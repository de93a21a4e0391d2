import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from hepta.modality.image_io import (ImageInputError, decode_image, encode_png, png_data_url, read_data_url,
                                     read_local_image)


def png_bytes(width: int, height: int, mode: str = "L") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height), (128,) * len(mode)).save(out, format="PNG")
    return out.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims a size, with almost no pixel data behind it (what a bomb looks like
    before it is decoded)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b"")


def test_png_round_trip_keeps_pixels_at_8_bit_precision():
    pixels = np.random.default_rng(0).random((1, 8, 8)).astype(np.float32)
    back = decode_image(encode_png(pixels), 8, 1)
    assert back.shape == (1, 8, 8) and np.abs(back - pixels).max() <= 0.5 / 255 + 1e-6


def test_colour_and_large_images_are_converted_and_resized():
    out = decode_image(png_bytes(64, 64, "RGB"), 8, 1)
    assert out.shape == (1, 8, 8) and np.allclose(out, 128 / 255)
    assert decode_image(png_bytes(16, 16), 8, 3).shape == (3, 8, 8)


@pytest.mark.parametrize("data, words", [
    (b"definitely not an image", "not an image"),
    (png_bytes(32, 32)[:60], "truncated"),
    (png_header_only(20_000, 8), "20000x8"),
    (png_header_only(4000, 4000 * 3), "too many pixels"),
])
def test_bad_images_are_refused_with_a_reason(data, words):
    with pytest.raises(ImageInputError, match=words):
        decode_image(data, 8, 1)


def test_data_urls_round_trip_and_bad_ones_are_named():
    png = png_bytes(8, 8)
    assert read_data_url(png_data_url(png)) == png
    with pytest.raises(ImageInputError, match="not an image"):
        read_data_url("data:text/plain;base64,aGVsbG8=")
    with pytest.raises(ImageInputError, match="base64"):
        read_data_url("data:image/png;base64,@@@")


def test_local_images_outside_the_allowed_folders_are_refused(tmp_path):
    allowed, other = tmp_path / "allowed", tmp_path / "other"
    allowed.mkdir(), other.mkdir()
    (allowed / "a.png").write_bytes(png_bytes(8, 8))
    (other / "b.png").write_bytes(png_bytes(8, 8))
    (allowed / "link.png").symlink_to(other / "b.png")
    assert read_local_image(allowed / "a.png", [allowed])
    for path in (other / "b.png", allowed / "link.png", allowed / ".." / "other" / "b.png"):
        with pytest.raises(ImageInputError, match="outside"):
            read_local_image(path, [allowed])
