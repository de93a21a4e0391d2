"""Video uploads: real MP4 and WebM files sampled at the asked rate; bad files refused in one sentence."""

import io

import numpy as np
import pytest
import soundfile
from helpers import hours_long_video

from hepta.modality import video_io
from hepta.modality.video_io import VideoInputError, decode_video, encode_video


def _counting_frames(count: int, side: int = 16) -> np.ndarray:
    """Frame i is a flat grey of level i / count, so a sampled frame tells which one it was."""
    levels = np.arange(count, dtype=np.float32) / count
    return np.broadcast_to(levels[:, None, None, None], (count, 1, side, side)).copy()


def _frame_numbers(pixels: np.ndarray, count: int) -> list[int]:
    return np.rint(pixels.mean(axis=(1, 2, 3)) * count).astype(int).tolist()


@pytest.mark.parametrize("container_format", ["mp4", "webm"])
def test_the_frame_on_screen_at_each_sample_time_is_kept(container_format):
    data = encode_video(_counting_frames(40), fps=4, container_format=container_format)  # 10 s
    video = decode_video(data, image_size=8, fps=1.0)
    assert video.pixels.shape == (10, 1, 8, 8) and video.duration == pytest.approx(10.0)
    assert video.times.tolist() == [float(k) for k in range(10)]
    assert _frame_numbers(video.pixels, 40) == [4 * k for k in range(10)]  # frame 4k starts at k seconds
    half = decode_video(data, image_size=8, fps=2.0)
    assert _frame_numbers(half.pixels, 40) == [2 * k for k in range(20)]


def test_max_frames_lowers_the_rate_to_fit():
    data = encode_video(_counting_frames(40), fps=4)
    video = decode_video(data, image_size=8, fps=4.0, max_frames=5)
    assert video.fps == pytest.approx(0.5) and video.times.tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert _frame_numbers(video.pixels, 40) == [0, 8, 16, 24, 32]


def test_rgb_frames_keep_their_colours():
    frames = np.zeros((4, 3, 16, 16), dtype=np.float32)
    frames[:, 0] = 1.0  # red
    video = decode_video(encode_video(frames, fps=4), image_size=4, channels=3)
    red, green, blue = video.pixels[0].mean(axis=(1, 2))
    assert red > 0.9 and green < 0.1 and blue < 0.1


def _wav() -> bytes:
    out = io.BytesIO()
    soundfile.write(out, np.zeros(1600, dtype=np.float32), 16000, format="WAV")
    return out.getvalue()


@pytest.mark.parametrize("make, words", [
    (lambda: b"", "empty"),
    (lambda: b"this is a text file, not a video", "not a video"),
    (lambda: encode_video(_counting_frames(40), fps=4)[:2000], "damaged"),  # an MP4 cut short
    (lambda: encode_video(_counting_frames(40), fps=4, container_format="webm")[:700], "truncated"),
    (_wav, "no video stream"),
])
def test_bad_files_get_one_sentence(make, words):
    with pytest.raises(VideoInputError, match=words) as raised:
        decode_video(make(), image_size=8)
    assert "\n" not in str(raised.value) and str(raised.value).endswith(("video", "file"))


def test_a_ten_hour_video_is_refused_from_its_header_before_decoding(monkeypatch):
    data = hours_long_video(15)
    monkeypatch.setattr(video_io, "_sample", lambda *args: pytest.fail("frames were decoded"))
    with pytest.raises(VideoInputError, match=r"15:00:00 long, over the limit of 10:00"):
        decode_video(data, image_size=8)


def test_bad_options_are_named():
    data = encode_video(_counting_frames(8), fps=4)
    with pytest.raises(VideoInputError, match="fps must be positive"):
        decode_video(data, image_size=8, fps=0)
    with pytest.raises(VideoInputError, match="max_frames must be at least 1"):
        decode_video(data, image_size=8, max_frames=0)
