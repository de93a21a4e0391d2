"""POST /v1/audio/transcriptions and /v1/audio/speech: the model hears and speaks.

Transcription turns the upload into 16 kHz codes and asks "Transcribe this audio." as the model
was trained; `stream=true` sends the transcript as OpenAI's `transcript.text.delta` events while
it is written. Speech asks "Say: ..." with the answer opened as an audio span and streams the
bytes as the decoder turns codes into sound (`modality/audio_stream.py`), so the first chunk
leaves long before the last code is written. Speech comes out at 24 kHz, 16-bit mono, as OpenAI's
`pcm` and `wav` do; every `voice` name is the model's one voice.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import AsyncIterator

import numpy as np
import soxr
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.datastructures import UploadFile

from hepta.infer.request import Request as EngineRequest
from hepta.infer.sampling import SamplingParams
from hepta.infer.speech_stream import speech_prompt, transcription_prompt
from hepta.modality.audio_codec import AudioCodec
from hepta.modality.audio_features import SAMPLE_RATE
from hepta.modality.audio_io import encode_pcm16
from hepta.modality.audio_stream import StreamingDecoder
from hepta.serve import responses as R
from hepta.serve.audio_input import TRANSCRIPT_TOKENS, max_audio_seconds, read_wave
from hepta.serve.errors import APIError
from hepta.serve.generation import _check, collect_choices, _Run
from hepta.serve.image_routes import _validated
from hepta.serve.schemas import SPEECH_FORMATS, TRANSCRIPTION_FORMATS, SpeechRequest, TranscriptionForm
from hepta.serve.state import ServerState

router = APIRouter()
OUTPUT_RATE = 24_000  # OpenAI's pcm and wav
MAX_SPEECH_SECONDS = 20.0
LANGUAGES = ("en", "english")


def audio_codec(state: ServerState) -> AudioCodec:
    if state.audio is None:
        raise APIError(400, f"the model '{state.model_name}' does not hear or speak (its folder has no audio "
                       "tokenizer); serve a model trained with speech", param="model", code="model_not_supported")
    return state.audio


# --- transcription --------------------------------------------------------------------------------

def _transcription_body_schema() -> dict:
    """The multipart form /v1/audio/transcriptions reads, for the OpenAPI document (the route parses it itself)."""
    form = TranscriptionForm.model_json_schema()
    form["properties"]["file"] = {"type": "string", "format": "binary"}
    form["required"] = [*form.get("required", []), "file"]
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": form}}}}


@router.post("/v1/audio/transcriptions", openapi_extra=_transcription_body_schema())
async def transcriptions(http: Request):
    state: ServerState = http.app.state.hepta
    state.authorize(http)  # a caller without a key uploads nothing
    if not http.headers.get("content-type", "").startswith("multipart/form-data"):
        raise APIError(400, "send the audio as a multipart form with a 'file' field, as OpenAI's API takes it")
    form = await http.form()
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise APIError(400, "'file' is a required file; send the audio to transcribe as a file field", param="file")
    body = _validated(TranscriptionForm, {k: v for k, v in form.items() if not isinstance(v, UploadFile)})
    if body.response_format not in TRANSCRIPTION_FORMATS:
        raise APIError(400, f"response_format {body.response_format!r} is not supported; use one of "
                       f"{', '.join(TRANSCRIPTION_FORMATS)}", param="response_format")
    if body.language is not None and body.language.lower() not in LANGUAGES:
        raise APIError(400, f"language {body.language!r} is not supported; this model transcribes English ('en')",
                       param="language")
    key, engine = state.gate(http, body.model)
    codec = audio_codec(state)
    data = await upload.read()
    wave = await asyncio.to_thread(read_wave, data, "file", max_audio_seconds(codec, engine.max_len))
    prompt_ids = transcription_prompt(codec, state.tokenizer, await asyncio.to_thread(codec.codes, wave))
    _check(engine, len(prompt_ids), TRANSCRIPT_TOKENS, 1, "file")
    estimated = len(prompt_ids) + TRANSCRIPT_TOKENS
    headers = state.admit(key, estimated)
    sampling = SamplingParams(temperature=body.temperature)
    run = _Run(engine, [EngineRequest(prompt_ids, TRANSCRIPT_TOKENS, sampling)], http)
    await run.submit()
    if body.stream:
        return StreamingResponse(_transcript_events(run), media_type="text/event-stream", headers=headers)
    choice = (await collect_choices(run))[0]
    await state.account(key, "audio.transcriptions", estimated, len(prompt_ids), len(choice.token_ids))
    text, seconds = choice.text.strip(), len(wave) / SAMPLE_RATE
    if body.response_format == "text":
        return PlainTextResponse(text + "\n", headers=headers)
    if body.response_format == "verbose_json":
        segment = {"id": 0, "seek": 0, "start": 0.0, "end": seconds, "text": text, "tokens": choice.token_ids,
                   "temperature": body.temperature, "avg_logprob": 0.0, "compression_ratio": 1.0,
                   "no_speech_prob": 0.0}
        return JSONResponse({"task": "transcribe", "language": "english", "duration": seconds, "text": text,
                             "segments": [segment]}, headers=headers)
    return JSONResponse({"text": text, "usage": {"type": "duration", "seconds": round(seconds, 3)}}, headers=headers)


async def _transcript_events(run: _Run) -> AsyncIterator[str]:
    parts = []
    try:
        async for _, event in run.events(watch_disconnect=False):
            if event.text:
                delta = event.text.lstrip() if not parts else event.text
                parts.append(delta)
                if delta:
                    yield R.sse({"type": "transcript.text.delta", "delta": delta})
        yield R.sse({"type": "transcript.text.done", "text": "".join(parts).strip()})
    except APIError as e:
        yield R.sse(e.body())
    finally:
        run.cancel()


# --- speech ---------------------------------------------------------------------------------------

@router.post("/v1/audio/speech")
async def speech(body: SpeechRequest, http: Request):
    state: ServerState = http.app.state.hepta
    key, engine = state.gate(http, body.model)
    codec = audio_codec(state)
    audio_format = body.response_format or "wav"
    if audio_format not in SPEECH_FORMATS:
        raise APIError(400, f"response_format {audio_format!r} is not supported; use one of "
                       f"{', '.join(SPEECH_FORMATS)} (24 kHz 16-bit mono)", param="response_format")
    prompt_ids = speech_prompt(codec, state.tokenizer, body.input)
    max_codes = min(round(MAX_SPEECH_SECONDS * codec.codes_per_second), engine.max_len - len(prompt_ids) - 1)
    if max_codes < codec.codes_per_second:  # less than a second of room
        raise APIError(400, f"the input is {len(prompt_ids)} tokens, which leaves no room for speech in this model's "
                       f"context of {engine.max_len} tokens; send shorter text", param="input",
                       code="context_length_exceeded")
    estimated = len(prompt_ids) + max_codes + 1
    headers = state.admit(key, estimated)
    run = _Run(engine, [EngineRequest(prompt_ids, max_codes + 1, SamplingParams(temperature=0.0))], http)
    await run.submit()
    decoder = StreamingDecoder(codec.tokenizer, speed=body.speed)
    media = "audio/wav" if audio_format == "wav" else "audio/pcm"
    return StreamingResponse(_speech_bytes(run, codec, decoder, audio_format == "wav"), media_type=media,
                             headers=headers)


async def speech_chunks(run: _Run, codec: AudioCodec, decoder: StreamingDecoder) -> AsyncIterator[np.ndarray]:
    """24 kHz chunks of the run's speech, each as soon as its codes are written (the decoding runs
    on a worker thread, off the event loop)."""
    resampler = soxr.ResampleStream(SAMPLE_RATE, OUTPUT_RATE, 1, dtype="float32")
    try:
        async for _, event in run.events(watch_disconnect=False):
            codes = [t - codec.vocab.code_start for t in event.token_ids if codec.vocab.is_code(t)]
            for chunk in await asyncio.to_thread(decoder.push, codes):
                yield resampler.resample_chunk(chunk)
        yield resampler.resample_chunk(await asyncio.to_thread(decoder.finish), last=True)
    finally:
        run.cancel()  # a client that leaves frees its slot


async def _speech_bytes(run: _Run, codec: AudioCodec, decoder: StreamingDecoder, wav: bool) -> AsyncIterator[bytes]:
    if wav:
        yield streaming_wav_header(OUTPUT_RATE)
    async with aclosing(speech_chunks(run, codec, decoder)) as chunks:  # a client that leaves cancels the run
        async for chunk in chunks:
            if len(chunk):
                yield encode_pcm16(chunk)


def streaming_wav_header(rate: int) -> bytes:
    """A 16-bit mono WAV header whose sizes say "unknown" (0xFFFFFFFF), as streamed WAV is sent:
    the length is not known when the first bytes leave (soundfile needs a seekable file to write one)."""
    unknown = 0xFFFFFFFF
    fmt = (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + rate.to_bytes(4, "little") + \
        (rate * 2).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
    return b"RIFF" + unknown.to_bytes(4, "little") + b"WAVE" + b"fmt " + (16).to_bytes(4, "little") + fmt + \
        b"data" + unknown.to_bytes(4, "little")


