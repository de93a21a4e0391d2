"""Audio uploads: formats, rates and channels accepted; everything else refused in one sentence."""

import io

import numpy as np
import pytest
import soundfile

from hepta.modality.audio_io import AudioInputError, decode_audio, decode_pcm16, encode_pcm16, encode_wav


def _wav(wave: np.ndarray, rate: int, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    out = io.BytesIO()
    soundfile.write(out, wave, rate, subtype=subtype, format=fmt)
    return out.getvalue()


def _tone(seconds: float, rate: int, hz: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_other_rates_are_resampled_and_stereo_downmixed_keeping_the_pitch():
    tone = _tone(1.0, 44100)
    wave = decode_audio(_wav(np.stack([tone, tone], axis=1), 44100))
    assert wave.dtype == np.float32 and abs(len(wave) - 16000) <= 1
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * 16000 / len(wave) - 440) < 3  # still 440 Hz after resampling


def test_flac_and_ogg_read_like_wav():
    tone = _tone(0.5, 16000)
    for fmt, subtype in (("FLAC", "PCM_16"), ("OGG", "VORBIS")):
        assert abs(len(decode_audio(_wav(tone, 16000, subtype, fmt))) - 8000) <= 1


@pytest.mark.parametrize("data, words", [
    (b"", "empty"),
    (b"this is a text file, not audio", "not readable audio"),
    (_wav(_tone(0.2, 16000), 16000)[:30], "not readable audio"),  # a WAV header cut inside its fmt chunk
])
def test_what_is_not_audio_is_refused_with_the_formats_named(data, words):
    with pytest.raises(AudioInputError, match=words) as caught:
        decode_audio(data)
    assert "WAV" in str(caught.value)


def test_a_clip_over_the_limit_is_refused_from_its_header_with_the_limit_named():
    with pytest.raises(AudioInputError, match=r"3\.0 s long, over this model's limit of 2\.0 s"):
        decode_audio(_wav(_tone(3.0, 8000), 8000), max_seconds=2.0)


def test_wav_and_pcm16_round_trip():
    tone = _tone(0.25, 16000)
    assert np.allclose(decode_audio(encode_wav(tone)), tone, atol=1e-3)
    assert np.allclose(decode_pcm16(encode_pcm16(tone), rate=16000), tone, atol=1e-3)
    with pytest.raises(AudioInputError, match="even number of bytes"):
        decode_pcm16(b"\x00\x01\x02")
