"""Speech in requests: base64 `input_audio` parts and uploaded files -> 16 kHz waves -> codes.

A clip's length is checked from its header against what the model's context holds before it is
decoded (`max_audio_seconds`), so an hour of audio is refused at the cost of reading a header.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import numpy as np

from hepta.modality.audio_codec import AudioCodec
from hepta.modality.audio_io import AudioInputError, decode_audio
from hepta.serve.errors import APIError

# Ids a transcription request spends besides the clip's codes: the chat markers, the instruction
# and the room for the transcript itself.
PROMPT_OVERHEAD_TOKENS = 16
TRANSCRIPT_TOKENS = 48


def max_audio_seconds(codec: AudioCodec, max_len: int) -> float:
    """The longest clip whose codes, with a transcription prompt and its answer, fit the context."""
    return max(0.0, (max_len - PROMPT_OVERHEAD_TOKENS - TRANSCRIPT_TOKENS) / codec.codes_per_second)


def read_wave(data: bytes, param: str, max_seconds: float | None) -> np.ndarray:
    """Audio file bytes -> 16 kHz wave; a 400 naming `param` when they are not audio or too long."""
    try:
        return decode_audio(data, max_seconds=max_seconds)
    except AudioInputError as e:
        code = "audio_too_long" if "over this model's limit" in str(e) else "invalid_audio"
        raise APIError(400, str(e), param=param, code=code) from e


@dataclass(eq=False)
class AudioClip:
    param: str  # where the clip stands in the request, e.g. "messages[0].content[1]"
    data: bytes


def read_input_audio(part: dict, param: str) -> bytes:
    """The bytes of a chat `input_audio` part ({"data": base64, "format": "wav"})."""
    data = part.get("data") if isinstance(part, dict) else None
    if not isinstance(data, str) or not data:
        raise APIError(400, 'an input_audio part needs "data": the clip as base64, and "format": "wav" or "mp3"',
                       param=f"{param}.input_audio.data")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise APIError(400, f"input_audio.data is not valid base64 ({e}); send the file's bytes base64-encoded",
                       param=f"{param}.input_audio.data", code="invalid_audio") from e


def audio_codes(clips: list[AudioClip], codec: AudioCodec, max_seconds: float | None = None) -> dict[int, list]:
    """Each clip's codes, keyed by id(clip) (blocking: run it on a worker thread)."""
    waves = [read_wave(clip.data, clip.param, max_seconds) for clip in clips]
    return {id(clip): codes for clip, codes in zip(clips, codec.codes_of_many(waves))}
