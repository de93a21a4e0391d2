"""Speech through the API with the real `openai` client: transcriptions (json, text, verbose_json,
streamed), speech (wav and pcm, streamed, speed), chat input_audio parts, and bad audio refused
with a 400 naming the problem. The model is untrained: these check the protocol, not the words."""

from __future__ import annotations

import base64
import io

import numpy as np
import openai
import pytest
import soundfile
from conftest import client, start_server
from omni_fixture import make_omni_folder

from hepta.modality import espeak
from hepta.modality.audio_io import encode_wav

MAX_LEN = 160  # a short context keeps the untrained model's speech short: at most ~3.8 s of input audio


@pytest.fixture(scope="module")
def omni_server(tmp_path_factory):
    folder = make_omni_folder(tmp_path_factory.mktemp("speech") / "omni")
    server = start_server(folder, engine={"max_num_seqs": 4, "max_model_len": MAX_LEN})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def omni(omni_server):
    return client(omni_server)


@pytest.fixture(scope="module")
def said():
    return encode_wav(espeak.synthesize("turn on the lights"))


def wav_at(rate: int, seconds: float, channels: int = 1) -> bytes:
    t = np.arange(round(seconds * rate)) / rate
    wave = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    out = io.BytesIO()
    soundfile.write(out, np.stack([wave] * channels, axis=1) if channels > 1 else wave, rate, format="WAV")
    return out.getvalue()


def test_transcription_formats(omni, said):
    as_json = omni.audio.transcriptions.create(model="micro", file=("said.wav", said, "audio/wav"))
    assert isinstance(as_json.text, str)
    as_text = omni.audio.transcriptions.create(model="micro", file=("said.wav", said), response_format="text")
    assert isinstance(as_text, str) and as_text.strip() == as_json.text  # greedy: the same words
    verbose = omni.audio.transcriptions.create(model="micro", file=("said.wav", said), response_format="verbose_json",
                                               language="en")
    assert verbose.text == as_json.text and verbose.language == "english"
    assert verbose.duration == pytest.approx(len(soundfile.read(io.BytesIO(said))[0]) / 16000, abs=0.01)


def test_streamed_transcription_deltas_add_up_to_the_done_text(omni, said):
    events = list(omni.audio.transcriptions.create(model="micro", file=("said.wav", said), stream=True))
    assert events[-1].type == "transcript.text.done"
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    assert "".join(deltas).strip() == events[-1].text
    assert events[-1].text == omni.audio.transcriptions.create(model="micro", file=("said.wav", said)).text


def test_other_rates_and_stereo_are_accepted(omni):
    for rate, channels in ((44100, 2), (8000, 1)):
        result = omni.audio.transcriptions.create(model="micro", file=("tone.wav", wav_at(rate, 1.0, channels)))
        assert isinstance(result.text, str)


@pytest.mark.parametrize("data, words", [
    (b"definitely not audio", "not readable audio"),
    (wav_at(16000, 0.5)[:30], "not readable audio"),  # a header cut inside its fmt chunk
    (wav_at(16000, 10.0), "over this model's limit of 3.8 s"),
])
def test_bad_uploads_are_refused_in_one_sentence(omni, data, words):
    with pytest.raises(openai.BadRequestError) as caught:
        omni.audio.transcriptions.create(model="micro", file=("bad.wav", data))
    assert words in caught.value.message and caught.value.body["param"] == "file"


def test_unsupported_options_are_named(omni, said):
    with pytest.raises(openai.BadRequestError, match="srt"):
        omni.audio.transcriptions.create(model="micro", file=("said.wav", said), response_format="srt")
    with pytest.raises(openai.BadRequestError, match="transcribes English"):
        omni.audio.transcriptions.create(model="micro", file=("said.wav", said), language="fr")
    with pytest.raises(openai.BadRequestError, match="mp3"):
        omni.audio.speech.create(model="micro", voice="alloy", input="stop", response_format="mp3")


def _speech(omni, **kwargs) -> tuple[bytes, int]:
    with omni.audio.speech.with_streaming_response.create(model="micro", voice="alloy", input="turn on the lights",
                                                          **kwargs) as response:
        pieces = list(response.iter_bytes())
    return b"".join(pieces), len(pieces)


def test_speech_streams_wav_and_pcm_at_24_khz(omni):
    wav, _ = _speech(omni, response_format="wav")
    assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE"
    pcm, _ = _speech(omni, response_format="pcm")
    assert len(pcm) % 2 == 0 and pcm == wav[44:]  # the same greedy codes; wav is the header plus the pcm
    samples = np.frombuffer(pcm, dtype="<i2")
    assert len(samples) > 0
    header_rate = int.from_bytes(wav[24:28], "little")
    assert header_rate == 24000


def test_speed_says_the_same_codes_faster(omni):
    normal, _ = _speech(omni, response_format="pcm")
    fast, _ = _speech(omni, response_format="pcm", speed=2.0)
    assert len(fast) == pytest.approx(len(normal) / 2, rel=0.1)


def test_chat_takes_input_audio_parts_and_names_a_bad_one(omni, said):
    part = {"type": "input_audio", "input_audio": {"data": base64.b64encode(said).decode(), "format": "wav"}}
    answer = omni.chat.completions.create(model="micro", max_tokens=4, messages=[
        {"role": "user", "content": [part, {"type": "text", "text": "Transcribe this audio."}]}])
    assert answer.usage.prompt_tokens > 25  # the clip's codes are in the prompt
    bad = {"type": "input_audio", "input_audio": {"data": "not base64!!", "format": "wav"}}
    with pytest.raises(openai.BadRequestError) as caught:
        omni.chat.completions.create(model="micro", max_tokens=4, messages=[{"role": "user", "content": [bad]}])
    assert "base64" in caught.value.message and caught.value.body["param"] == "messages[0].content[0].input_audio.data"


def test_a_model_without_speech_says_so(model_dir):
    server = start_server(model_dir)
    try:
        with pytest.raises(openai.BadRequestError, match="does not hear or speak"):
            client(server).audio.transcriptions.create(model="micro", file=("tone.wav", wav_at(16000, 0.5)))
    finally:
        server.stop()
