"""`video_url` chat parts -> frames sampled on the server -> video parts of the prompt.

The part is the one vLLM and Qwen's clients send, `{"type": "video_url", "video_url": {"url":
...}}`, its URL read as image URLs are (`image_fetch.py`: data URLs, and local files only inside
the folders the server allows). Sampling defaults to 1 frame per second; `fps` and `max_frames`
may be given inside `video_url` or for the whole request in `mm_processor_kwargs`, as vLLM takes
them. A video longer than the server's `max_seconds` is refused from its container's header, before
it is decoded; after sampling, only the frames that show something new are kept
(`video_span.changes_only`), and a video whose kept frames do not fit the model's context is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from hepta.modality.chat import VideoCodes, video_vocab
from hepta.modality.codec import ImageCodec
from hepta.modality.image_io import ImageInputError
from hepta.modality.video_io import MAX_VIDEO_SECONDS, VideoInputError, decode_video
from hepta.modality.video_reading import VideoReading
from hepta.serve.errors import APIError
from hepta.serve.image_fetch import ImageAccess

DEFAULT_FPS = 1.0
MAX_FPS = 30.0
OPTIONS = ("fps", "max_frames")


@dataclass(frozen=True)
class VideoSource:
    param: str  # where the video stands in the request, e.g. "messages[0].content[0]"
    url: str
    fps: float
    max_frames: int | None


def video_source(spec: dict, param: str, request_options: dict | None) -> VideoSource:
    """A video_url part's URL and sampling options (the part's own over the request's)."""
    options = {k: v for k, v in (request_options or {}).items() if k in OPTIONS}
    options.update({k: spec[k] for k in OPTIONS if k in spec})
    fps, max_frames = options.get("fps", DEFAULT_FPS), options.get("max_frames")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps <= MAX_FPS:
        raise APIError(400, f"fps must be a number above 0 and at most {MAX_FPS:g}, not {fps!r}; 1 frame per second "
                       "is the default", param=f"{param}.video_url.fps")
    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1):
        raise APIError(400, f"max_frames must be a whole number of at least 1, not {max_frames!r}",
                       param=f"{param}.video_url.max_frames")
    return VideoSource(param, spec.get("url"), float(fps), max_frames)


async def read_video(source: VideoSource, access: ImageAccess) -> bytes:
    try:
        return await access.read(source.url, media="video")
    except ImageInputError as e:
        raise APIError(400, str(e), param=source.param, code="invalid_video") from e


def video_part(source: VideoSource, data: bytes, codec: ImageCodec, tokenizer, max_len: int,
               max_seconds: float = MAX_VIDEO_SECONDS, reading: VideoReading = VideoReading()) -> VideoCodes:
    """A video file -> its sampled frames as codes, those that repeat the last one left out, stamped as the
    model reads them (`reading`: modality/video_reading.py; blocking: run it on a worker thread)."""
    try:
        video = decode_video(data, image_size=codec.image_size, channels=codec.channels, fps=source.fps,
                             max_frames=source.max_frames, max_seconds=max_seconds)
    except VideoInputError as e:
        raise APIError(400, str(e), param=source.param, code="invalid_video") from e
    part = codec.video(video.pixels, video.times, stamps=reading.stamps)
    _check_fits(source, part, len(video.times), codec, tokenizer, max_len)
    return part


def _check_fits(source: VideoSource, part: VideoCodes, sampled: int, codec: ImageCodec, tokenizer,
                max_len: int) -> None:
    """Refuse a video whose kept frames alone would fill the model's context."""
    vocab = video_vocab(tokenizer, codec.vocab.grid)
    if vocab.span_length(tokenizer.encode, len(part.times), part.times[-1], stamps=part.stamps) >= max_len:
        per_frame = vocab.frame_length(tokenizer.encode, part.times[-1], stamps=part.stamps)
        fit = max(1, (max_len - 64) // per_frame)
        raise APIError(400, f"the video's {len(part.times)} frames that show something new (of {sampled} sampled at "
                       f"{source.fps:g} per second, about {per_frame} tokens each) do not fit this model's context of "
                       f"{max_len} tokens; set max_frames to {fit} or less, or lower fps", param=source.param,
                       code="context_length_exceeded")
