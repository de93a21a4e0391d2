"""WebSocket /v1/realtime: OpenAI's Realtime events over the model's two speech skills.

The model hears and speaks; it does not hold a conversation. So a response chains the two: the
user's committed audio is transcribed (`conversation.item.input_audio_transcription.completed`),
and on `response.create` the model says that transcript back (or the text of the last
`input_text` item), streamed as `response.audio.delta` (base64 pcm16, 24 kHz mono) beside
`response.audio_transcript.delta`. Clients that send `OpenAI-Beta: realtime=v1` (the openai
client's `beta.realtime`) get the beta event names; others get the GA names
(`response.output_audio.delta`, ...).

Every bad message (not JSON, an unknown type, audio that is not base64 pcm16, a commit with
nothing in the buffer, more audio than the context holds) gets an `error` event and the
connection stays open. A client that vanishes mid-response has its engine request cancelled,
which frees its slot.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from contextlib import aclosing

import numpy as np
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from hepta.infer.request import Request as EngineRequest
from hepta.infer.sampling import SamplingParams
from hepta.infer.speech_stream import speech_prompt, transcription_prompt
from hepta.modality.audio_io import AudioInputError, decode_pcm16, encode_pcm16
from hepta.modality.audio_stream import StreamingDecoder
from hepta.serve import responses as R
from hepta.serve.audio_input import TRANSCRIPT_TOKENS, max_audio_seconds
from hepta.serve.errors import APIError
from hepta.serve.generation import _Run
from hepta.serve.speech_routes import MAX_SPEECH_SECONDS, audio_codec, speech_chunks
from hepta.serve.state import ServerState

router = APIRouter()
INPUT_RATE = 24_000  # pcm16 as the Realtime API sends it

GA_NAMES = {"audio.delta": "response.output_audio.delta", "audio.done": "response.output_audio.done",
            "transcript.delta": "response.output_audio_transcript.delta",
            "transcript.done": "response.output_audio_transcript.done"}
BETA_NAMES = {"audio.delta": "response.audio.delta", "audio.done": "response.audio.done",
              "transcript.delta": "response.audio_transcript.delta",
              "transcript.done": "response.audio_transcript.done"}


class RealtimeError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


class Session:
    """One connection: its settings, the audio buffer and the conversation's last user words."""

    def __init__(self, ws: WebSocket, state: ServerState, model: str, beta: bool):
        self.ws, self.state, self.model, self.names = ws, state, model, BETA_NAMES if beta else GA_NAMES
        self.settings = {"id": R.new_id("sess"), "object": "realtime.session", "model": model,
                         "modalities": ["audio", "text"], "voice": "alloy", "input_audio_format": "pcm16",
                         "output_audio_format": "pcm16", "instructions": "", "turn_detection": None}
        self.buffer = bytearray()
        self.last_item: str | None = None
        self.last_user_text: str | None = None

    async def send(self, event_type: str, **fields) -> None:
        await self.ws.send_text(json.dumps({"type": event_type, "event_id": R.new_id("event"), **fields}))

    async def error(self, code: str, message: str, event_id: str | None = None) -> None:
        await self.send("error", error={"type": "invalid_request_error", "code": code, "message": message,
                                        "param": None, "event_id": event_id})

    # --- client events ---------------------------------------------------------------------

    async def handle(self, event: dict) -> None:
        kind = event.get("type")
        handlers = {"session.update": self.session_update, "input_audio_buffer.append": self.append,
                    "input_audio_buffer.commit": self.commit, "input_audio_buffer.clear": self.clear,
                    "conversation.item.create": self.item_create, "response.create": self.respond}
        if kind not in handlers:
            raise RealtimeError("unknown_event", f"unknown event type {kind!r}; this server handles "
                                f"{', '.join(handlers)}")
        await handlers[kind](event)

    async def session_update(self, event: dict) -> None:
        session = event.get("session")
        if not isinstance(session, dict):
            raise RealtimeError("invalid_value", 'session.update needs a "session" object')
        self.settings.update({k: v for k, v in session.items() if k in self.settings and k not in ("id", "object")})
        await self.send("session.updated", session=self.settings)

    async def append(self, event: dict) -> None:
        try:
            data = base64.b64decode(event.get("audio") or "", validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise RealtimeError("invalid_value", "input_audio_buffer.append needs \"audio\": base64 of pcm16 at "
                                "24 kHz mono") from None
        limit = max_audio_seconds(audio_codec(self.state), self.state.ready().max_len)
        if (len(self.buffer) + len(data)) / 2 / INPUT_RATE > limit:
            self.buffer.clear()
            raise RealtimeError("audio_too_long", f"the audio buffer would hold more than this model's limit of "
                                f"{limit:.1f} s; commit shorter utterances (the buffer was cleared)")
        self.buffer += data

    async def clear(self, _event: dict) -> None:
        self.buffer.clear()
        await self.send("input_audio_buffer.cleared")

    async def commit(self, _event: dict) -> None:
        if not self.buffer:
            raise RealtimeError("input_audio_buffer_commit_empty", "the input audio buffer is empty; append audio "
                                "before committing")
        try:
            wave = decode_pcm16(bytes(self.buffer), INPUT_RATE)
        except AudioInputError as e:
            raise RealtimeError("invalid_value", str(e)) from None
        finally:
            self.buffer.clear()
        item_id, previous = R.new_id("item"), self.last_item
        await self.send("input_audio_buffer.committed", item_id=item_id, previous_item_id=previous)
        await self.send("conversation.item.created", previous_item_id=previous, item={
            "id": item_id, "object": "realtime.item", "type": "message", "role": "user", "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}]})
        self.last_item = item_id
        transcript = await self.transcribe(wave)
        self.last_user_text = transcript
        await self.send("conversation.item.input_audio_transcription.completed", item_id=item_id, content_index=0,
                        transcript=transcript)

    async def item_create(self, event: dict) -> None:
        item = event.get("item") or {}
        texts = [c.get("text") for c in item.get("content") or [] if isinstance(c, dict)
                 and c.get("type") in ("input_text", "text") and isinstance(c.get("text"), str)]
        if item.get("role", "user") != "user" or not texts:
            raise RealtimeError("invalid_value", "conversation.item.create takes a user message with input_text "
                                "content (audio goes through input_audio_buffer.append and commit)")
        item_id, previous = item.get("id") or R.new_id("item"), self.last_item
        await self.send("conversation.item.created", previous_item_id=previous,
                        item={**item, "id": item_id, "object": "realtime.item", "status": "completed"})
        self.last_item, self.last_user_text = item_id, " ".join(texts)

    async def respond(self, _event: dict) -> None:
        if not self.last_user_text:
            raise RealtimeError("invalid_value", "there is nothing to answer yet; commit audio or create an "
                                "input_text item first")
        text = self.last_user_text
        response_id, item_id = R.new_id("resp"), R.new_id("item")
        item = {"id": item_id, "object": "realtime.item", "type": "message", "role": "assistant",
                "status": "in_progress", "content": []}
        ids = dict(response_id=response_id, item_id=item_id, output_index=0, content_index=0)
        await self.send("response.created", response={"id": response_id, "object": "realtime.response",
                                                      "status": "in_progress", "output": []})
        await self.send("response.output_item.added", response_id=response_id, output_index=0, item=item)
        await self.send("response.content_part.added", **ids, part={"type": "audio", "transcript": ""})
        for n, word in enumerate(text.split()):
            await self.send(self.names["transcript.delta"], **ids, delta=word if n == 0 else " " + word)
        async with aclosing(self.say(text)) as chunks:  # closed at once if a send fails: the run is cancelled
            async for chunk in chunks:
                await self.send(self.names["audio.delta"], **ids, delta=base64.b64encode(encode_pcm16(chunk)).decode())
        await self.send(self.names["audio.done"], **ids)
        await self.send(self.names["transcript.done"], **ids, transcript=text)
        part = {"type": "audio", "transcript": text}
        await self.send("response.content_part.done", **ids, part=part)
        done_item = {**item, "status": "completed", "content": [part]}
        await self.send("response.output_item.done", response_id=response_id, output_index=0, item=done_item)
        await self.send("response.done", response={"id": response_id, "object": "realtime.response",
                                                   "status": "completed", "output": [done_item]})
        self.last_item = item_id

    # --- the model ---------------------------------------------------------------------------

    async def transcribe(self, wave: np.ndarray) -> str:
        codec, engine = audio_codec(self.state), self.state.ready()
        prompt = transcription_prompt(codec, self.state.tokenizer, await asyncio.to_thread(codec.codes, wave))
        if len(prompt) + TRANSCRIPT_TOKENS > engine.max_len:
            raise RealtimeError("audio_too_long", f"the utterance is longer than this model's context of "
                                f"{engine.max_len} tokens holds; commit shorter utterances")
        run = _Run(engine, [EngineRequest(prompt, TRANSCRIPT_TOKENS, SamplingParams(temperature=0.0))], None)
        await run.submit()
        parts = [event.text async for _, event in run.events(watch_disconnect=False)]
        return "".join(parts).strip()

    async def say(self, text: str):
        codec, engine = audio_codec(self.state), self.state.ready()
        prompt = speech_prompt(codec, self.state.tokenizer, text)
        max_codes = min(round(MAX_SPEECH_SECONDS * codec.codes_per_second), engine.max_len - len(prompt) - 1)
        if max_codes < codec.codes_per_second:
            raise RealtimeError("context_length_exceeded", "the text to say leaves no room for speech in this "
                                f"model's context of {engine.max_len} tokens")
        run = _Run(engine, [EngineRequest(prompt, max_codes + 1, SamplingParams(temperature=0.0))], None)
        await run.submit()
        async with aclosing(speech_chunks(run, codec, StreamingDecoder(codec.tokenizer))) as chunks:
            async for chunk in chunks:
                if len(chunk):
                    yield chunk


@router.websocket("/v1/realtime")
async def realtime(ws: WebSocket, model: str | None = None):
    state: ServerState = ws.app.state.hepta
    try:
        state.authorize(ws)
        state.check_model(model or state.model_name)
        audio_codec(state)
        state.ready()
    except APIError as e:
        await ws.accept()
        await ws.send_text(json.dumps({"type": "error", "event_id": R.new_id("event"),
                                       "error": {"type": "invalid_request_error", "code": e.code, "message": e.message}}))
        await ws.close(code=1008)
        return
    await ws.accept()
    session = Session(ws, state, state.model_name, "realtime=v1" in ws.headers.get("openai-beta", ""))
    await session.send("session.created", session=session.settings)
    try:
        while True:
            message = await ws.receive_text()
            try:
                event = json.loads(message)
                if not isinstance(event, dict):
                    raise ValueError("not an object")
            except ValueError:
                await session.error("invalid_json", "the message is not a JSON object; send Realtime events such as "
                                    '{"type": "session.update", "session": {...}}')
                continue
            try:
                await session.handle(event)
            except RealtimeError as e:
                await session.error(e.code, e.message, event.get("event_id"))
            except APIError as e:
                await session.error(e.code or "server_error", e.message, event.get("event_id"))
    except (WebSocketDisconnect, RuntimeError):  # gone, or a send after the client closed
        return  # a response in flight had its run cancelled as its generators closed
