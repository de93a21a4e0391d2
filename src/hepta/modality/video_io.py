"""Video bytes in and out: frames sampled at a fixed rate, with the limits that keep a bad upload cheap.

PyAV (its wheels bundle FFmpeg) reads every container and codec FFmpeg knows: MP4 (H.264,
MPEG-4), WebM (VP8, VP9, AV1), MKV, AVI. A video is sampled, not decoded into memory whole: the
frame on screen at each sample time (0, 1/fps, 2/fps, ...) is kept and the rest are dropped as
they are decoded. Each kept frame is converted to grey or RGB and shrunk to the model's image
size with Pillow's box filter, the same resize `image_io.decode_image` applies to stills.

Limits. A video's length is read from the container's header and refused before any frame is
decoded when it is over `max_seconds`; a file whose header gives no length is refused as soon as
a decoded frame passes the limit, so a 10-hour file costs at most the limit's worth of decoding.
`max_frames` caps the number of frames returned by lowering the sampling rate to fit, as video
processors of multimodal models do (the rate used is returned).

Pixel convention: float32 [N, P, S, S] in [0, 1], as `image_io` (P = 1 grey or 3 RGB).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from hepta.errors import HeptaError
from hepta.modality.image_io import image_pixels
from hepta.modality.video_span import clock

MAX_VIDEO_SECONDS = 600.0  # the default length limit: 10 minutes
MAX_VIDEO_SIDE = 8192  # pixels; a larger frame size is refused before decoding
FORMATS = "an MP4, WebM, MKV or AVI video"


class VideoInputError(HeptaError):
    """A video that cannot be used; the message says why and what to send instead."""


@dataclass(frozen=True)
class SampledVideo:
    pixels: np.ndarray  # float32 [N, P, S, S] in [0, 1]
    times: np.ndarray  # float64 [N]: the sample time of each frame in seconds from the start
    duration: float  # seconds, as the container gives it (or the last frame's end when it gives none)
    fps: float  # the sampling rate used (lower than asked when max_frames capped it)


def decode_video(data: bytes, *, image_size: int | None, channels: int = 1, fps: float = 1.0,
                 max_frames: int | None = None, max_seconds: float = MAX_VIDEO_SECONDS) -> SampledVideo:
    """Video file bytes -> the frames on screen at 0, 1/fps, 2/fps, ... seconds (square frames of image_size,
    or the video's own size with None)."""
    if fps <= 0:
        raise VideoInputError(f"fps must be positive, not {fps}; ask for e.g. 1 frame per second")
    if max_frames is not None and max_frames < 1:
        raise VideoInputError(f"max_frames must be at least 1, not {max_frames}")
    with _open(data) as container:
        stream = _video_stream(container)
        width, height = stream.codec_context.width, stream.codec_context.height
        if width > MAX_VIDEO_SIDE or height > MAX_VIDEO_SIDE:
            raise VideoInputError(f"the video is {width}x{height} pixels, larger than the {MAX_VIDEO_SIDE} px side "
                                  "limit; send a smaller video")
        duration = _header_duration(container, stream)
        if duration is not None and duration > max_seconds:
            raise VideoInputError(f"the video is {clock(duration)} long, over the limit of {clock(max_seconds)}; "
                                  "send a shorter clip or cut it")
        if max_frames is not None and duration:
            fps = min(fps, max_frames / duration)
        frames, times, end = _sample(container, stream, fps, max_seconds, image_size, channels)
    if duration is None:
        duration = end
    elif end < duration - max(1.0, 0.05 * duration):
        raise VideoInputError(f"the video stops at {clock(end)} of the {clock(duration)} its header announces, so the "
                              "file is truncated or damaged; send the complete file")
    if max_frames is not None and len(frames) > max_frames:  # a header without a length: thin out afterwards
        keep = np.linspace(0, len(frames) - 1, max_frames).round().astype(int)
        frames, times = [frames[i] for i in keep], [times[i] for i in keep]
        fps = max_frames / duration if duration else fps
    if not frames:
        raise VideoInputError("the video holds no frames that could be decoded; send a video with pictures in it")
    return SampledVideo(np.stack(frames), np.asarray(times, dtype=np.float64), float(duration), float(fps))


def _sample(container, stream, fps: float, max_seconds: float, image_size: int | None, channels: int):
    """Decode in order, keeping the frame on screen at each sample time k / fps: the last frame that
    started at or before it. Only kept frames are converted to pixels."""
    frames, times = [], []
    shown, shown_pixels, end = None, None, 0.0

    def keep_shown_until(limit: float) -> None:
        nonlocal shown_pixels
        while len(times) / fps < limit:
            if shown_pixels is None:
                shown_pixels = image_pixels(shown.to_image(), image_size, channels)
            frames.append(shown_pixels)
            times.append(len(times) / fps)

    try:
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            start = float(frame.time)
            if start > max_seconds:
                raise VideoInputError(f"the video runs past the limit of {clock(max_seconds)}; send a shorter clip or "
                                      "cut it")
            if shown is not None:
                keep_shown_until(start)
            shown, shown_pixels = frame, None
            end = start + _frame_seconds(stream)
    except av.error.FFmpegError as e:
        raise VideoInputError(f"the video is corrupt or truncated ({_reason(e)}); send the complete file") from e
    if shown is not None:
        keep_shown_until(end)  # the last frame stays on screen until the video ends
    return frames, times, end


def encode_video(pixels_NPHW: np.ndarray, fps: int, container_format: str = "mp4") -> bytes:
    """float [N, P, H, W] in [0, 1] -> video file bytes: H.264 in MP4, or VP9 in WebM.

    H and W must be even (4:2:0 chroma halves them). Lossy, as every real video is: reading the
    file back gives the frames up to compression error, not bit for bit.
    """
    codec = {"mp4": "libx264", "webm": "libvpx-vp9"}[container_format]
    array = (np.clip(np.asarray(pixels_NPHW, dtype=np.float32), 0, 1) * 255).round().astype(np.uint8)
    n, planes, height, width = array.shape
    out = io.BytesIO()
    with av.open(out, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "veryfast"}  # near-lossless at a tiny size
        for i in range(n):
            frame_array = array[i, 0] if planes == 1 else array[i].transpose(1, 2, 0)
            frame = av.VideoFrame.from_ndarray(frame_array, format="gray" if planes == 1 else "rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))  # flush the encoder's delayed frames
    return out.getvalue()


# --- helpers ---------------------------------------------------------------------------------

def _open(data: bytes):
    if not data:
        raise VideoInputError(f"the video file is empty; send {FORMATS}")
    try:
        return av.open(io.BytesIO(data), mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError) as e:
        raise VideoInputError(f"the data is not a video PyAV can read, or the file is damaged ({_reason(e)}); "
                              f"send {FORMATS}") from e


def _video_stream(container):
    if not container.streams.video:
        raise VideoInputError(f"the file holds no video stream (only {_stream_kinds(container)}); send {FORMATS}")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        raise VideoInputError("the video stream's codec cannot be opened, so the file is damaged or uses a codec FFmpeg "
                              f"lacks; send {FORMATS}")
    return stream


def _header_duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _frame_seconds(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate
    return float(1 / rate) if rate else 0.0


def _stream_kinds(container) -> str:
    kinds = sorted({s.type for s in container.streams})
    return ", ".join(kinds) if kinds else "nothing"


def _reason(error: Exception) -> str:
    return str(error).strip().split("\n")[0][:120] or type(error).__name__
