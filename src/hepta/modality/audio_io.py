"""Audio bytes from users -> 16 kHz mono float32, with one clear error for anything else.

libsndfile (through soundfile) reads the container: WAV (PCM or float), FLAC, OGG/Vorbis, AIFF and
the rest it knows. Other sample rates are resampled by soxr; several channels are averaged to one.
A clip's length is read from the header and refused before decoding when it is over the limit, so
an hour-long upload costs nothing.
"""

from __future__ import annotations

import io

import numpy as np
import soundfile
import soxr

from hepta.errors import HeptaError
from hepta.modality.audio_features import SAMPLE_RATE

FORMATS = "WAV, FLAC, OGG or AIFF"


class AudioInputError(HeptaError):
    """The bytes are not audio hepta can hear (the message says why and what to send)."""


def audio_duration(data: bytes) -> float:
    """Seconds of audio the header announces."""
    try:
        info = soundfile.info(io.BytesIO(data))
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioInputError(f"the file is not readable audio ({_reason(e)}); send {FORMATS} audio") from e
    return info.frames / info.samplerate if info.samplerate else 0.0


def decode_audio(data: bytes, max_seconds: float | None = None) -> np.ndarray:
    """Audio file bytes -> float32 mono at 16 kHz in [-1, 1]."""
    if not data:
        raise AudioInputError(f"the audio file is empty; send {FORMATS} audio")
    seconds = audio_duration(data)
    if max_seconds is not None and seconds > max_seconds:
        raise AudioInputError(f"the audio is {seconds:.1f} s long, over this model's limit of {max_seconds:.1f} s; "
                              "send a shorter clip or split it")
    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioInputError(f"the audio file is corrupt ({_reason(e)}); send {FORMATS} audio") from e
    if samples.shape[0] == 0:
        raise AudioInputError("the audio file holds no samples; send a clip with sound in it")
    return to_model_rate(samples.mean(axis=1), rate)


def decode_pcm16(data: bytes, rate: int = 24000) -> np.ndarray:
    """Raw little-endian 16-bit mono PCM (the Realtime API's `pcm16`) -> 16 kHz float32."""
    if len(data) % 2:
        raise AudioInputError("pcm16 audio must be a whole number of 16-bit samples (an even number of bytes)")
    return to_model_rate(np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768, rate)


def to_model_rate(wave: np.ndarray, rate: int) -> np.ndarray:
    wave = np.ascontiguousarray(wave, dtype=np.float32)
    if rate != SAMPLE_RATE and len(wave):
        wave = soxr.resample(wave, rate, SAMPLE_RATE).astype(np.float32)
    return np.clip(wave, -1.0, 1.0)


def encode_wav(wave: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """16-bit PCM WAV bytes."""
    out = io.BytesIO()
    soundfile.write(out, np.clip(wave, -1, 1), rate, subtype="PCM_16", format="WAV")
    return out.getvalue()


def encode_pcm16(wave: np.ndarray) -> bytes:
    return (np.clip(wave, -1, 1) * 32767).astype("<i2").tobytes()


def _reason(error: Exception) -> str:
    text = str(error).strip().rstrip(".")
    return text.split(": ", 1)[-1] if text else type(error).__name__
