"""POST /v1/chat/completions and /v1/completions: requests to the engine, events back as JSON or SSE.

A streamed response ends its choices with a finish_reason chunk, then (with
`stream_options.include_usage`) a usage chunk whose `choices` is empty, then `data: [DONE]`.
When the client goes away, the stream's generator is cancelled and its `finally` cancels the
engine request, which frees the slots at the next token boundary.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from typing import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from hepta.errors import HeptaError
from hepta.infer.caption_writer import CAPTION_TOKENS, write_captions_served
from hepta.infer.client import EngineClient, EngineDead
from hepta.infer.collect import Choice, Collector, GenerationFailed
from hepta.infer.constrain import ConstraintSpec
from hepta.infer.engine import ContextLengthExceeded, InvalidRequest, QueueFull
from hepta.infer.harmony import HarmonyStream, split_harmony, uses_harmony
from hepta.infer.request import Event, Request as EngineRequest
from hepta.infer.sampling import SamplingParams
from hepta.infer.tools import InvalidField, ToolCallStream, choose_tools, parse_tool_calls
from hepta.serve import responses as R
from hepta.serve.errors import APIError
from hepta.serve.grounding import ground
from hepta.serve.image_answers import ImageStream, answer_pngs, image_part
from hepta.serve.audio_input import max_audio_seconds
from hepta.serve.image_parts import chat_image_prompt, check_image_context, has_media_parts
from hepta.serve.prompts import chat_prompt_ids, chat_texts, completion_prompts, refuse_certainly_too_long
from hepta.serve.vision_parts import chat_vision_prompt
from hepta.serve.schemas import ChatCompletionRequest, CompletionRequest, _Sampling
from hepta.serve.state import ServerState

router = APIRouter()
log = logging.getLogger("hepta.serve")
DISCONNECT_POLL_S = 0.5
SEED_SPACE = 2**63  # torch generators take 64-bit seeds; OpenAI allows any integer


def _sampling(body: _Sampling) -> SamplingParams:
    return SamplingParams(
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p, top_k=body.top_k or 0,
        seed=None if body.seed is None else body.seed % SEED_SPACE,
        presence_penalty=body.presence_penalty or 0.0, frequency_penalty=body.frequency_penalty or 0.0)


def _logit_bias(body: _Sampling, vocab_size: int) -> dict[int, float] | None:
    if not body.logit_bias:
        return None
    bias = {}
    for key, value in body.logit_bias.items():
        if not key.isdigit() or int(key) >= vocab_size:
            raise APIError(400, f"logit_bias key {key!r} is not a token id of this model (0..{vocab_size - 1})",
                           param="logit_bias")
        bias[int(key)] = value
    return bias


def _max_tokens(engine: EngineClient, prompt_tokens: int, *requested: int | None) -> int:
    given = next((m for m in requested if m is not None), None)
    return given if given is not None else max(1, engine.max_len - prompt_tokens)


def _check(engine: EngineClient, prompt_tokens: int, max_tokens: int, n: int, param: str) -> None:
    try:
        engine.check(prompt_tokens, max_tokens, n)
    except ContextLengthExceeded as e:
        raise APIError(400, str(e), param=param, code="context_length_exceeded") from e
    except InvalidRequest as e:
        raise APIError(400, str(e), param=e.param or param) from e


def _raise_api_error(e: BaseException):
    """Raises what the client is told when the engine refuses or fails a request: 503 overloaded or
    restarting, 400 for a request it finds wrong; anything else as it is."""
    if isinstance(e, QueueFull):
        raise APIError(503, f"The server is overloaded: {e}", code="server_overloaded",
                       headers={"retry-after": "1"}) from e
    if isinstance(e, EngineDead):
        raise APIError(503, f"the engine is restarting ({e}); retry in a few seconds",
                       code="engine_restarting", headers={"retry-after": "5"}) from e
    if isinstance(e, GenerationFailed):
        raise APIError(500, str(e), code="generation_failed") from e
    if isinstance(e, HeptaError):
        raise APIError(400, str(e)) from e
    raise e


class _Run:
    """Engine requests of one HTTP request; their events, routed here by the engine client, wait in `buffer`."""

    def __init__(self, engine: EngineClient, requests: list[EngineRequest], http: Request | None):
        self.engine, self.requests, self.http = engine, requests, http
        self.buffer: deque[tuple[int, Event]] = deque()  # events not yet read, in the engine's order
        self.arrived = asyncio.Event()
        self.cached_tokens = 0  # prompt tokens kept prefixes served (each prompt counted once, as its choice 0's)
        offset = 0
        for request in requests:
            request.sink = self._sink(offset)
            offset += request.n
        self.num_choices = offset

    def _sink(self, offset: int):
        def put(event: Event) -> None:  # on this event loop, called by the engine client
            if event.index == 0:
                self.cached_tokens += event.cached_tokens
            self.buffer.append((offset + event.index, event))
            self.arrived.set()
        return put

    async def submit(self) -> None:
        submitted = []
        try:
            for request in self.requests:
                submitted.append(await self.engine.submit(request))
        except BaseException as e:
            for request in submitted:
                self.engine.cancel(request)
            _raise_api_error(e)

    def cancel(self) -> None:
        for request in self.requests:
            self.engine.cancel(request)

    async def _next(self, watch_disconnect: bool) -> tuple[int, Event] | None:
        """The next event; None when the client went away (looked at only with `watch_disconnect`)."""
        while not self.buffer:
            self.arrived.clear()
            if not watch_disconnect:
                # a streamed response needs no look: the server cancels it when its client goes
                await self.arrived.wait()
                continue
            try:  # the event is only a wake-up: a timeout here loses nothing, the buffer keeps it
                await asyncio.wait_for(self.arrived.wait(), DISCONNECT_POLL_S)
            except asyncio.TimeoutError:
                if await self.http.is_disconnected():
                    return None
        return self.buffer.popleft()

    async def events(self, watch_disconnect: bool) -> AsyncIterator[tuple[int, Event]]:
        remaining = self.num_choices
        try:
            while remaining:
                item = await self._next(watch_disconnect)
                if item is None:
                    return
                index, event = item
                if event.error:
                    raise APIError(500, f"generation failed: {event.error}", type="server_error")
                if event.finish_reason:
                    remaining -= 1
                yield index, event
        finally:
            self.cancel()  # no-op for finished requests; frees the slots of abandoned ones


def token_count(event: Event, engine: EngineClient) -> int:
    return sum(1 for t in event.token_ids if t not in engine.end_ids)


async def collect_choices(run: _Run) -> list[Choice]:
    """Every choice's whole text, for a non-streamed response; a client that leaves cancels the run."""
    collector = Collector(run.num_choices, run.engine.end_ids)
    async for index, event in run.events(watch_disconnect=True):
        collector.add(index, event)
    return collector.choices


async def _sse_body(run: _Run, chunks: AsyncIterator[str]) -> AsyncIterator[str]:
    """The body of a streamed response: `chunks` (one item per engine event), written together while
    more of the run's events wait, so a stream that fell behind catches up in one write instead of
    one per token (each event stays its own SSE event). A stream whose generation fails ends with
    one `data: {"error": ...}` event in OpenAI's shape (the `openai` client raises it), never as a
    silently cut answer."""
    pending: list[str] = []
    try:
        try:
            async for chunk in chunks:
                pending.append(chunk)
                if not run.buffer:  # nothing else has arrived: write now rather than wait for the next step
                    yield "".join(pending)
                    pending.clear()
        except APIError as e:
            log.error("a streamed response ended with an error: %s", e.message)
            pending.append(R.sse(e.body()))
        if pending:
            yield "".join(pending)
    finally:
        # A client that leaves during any write (also the first chunks, before `chunks` reads the
        # run's events) closes this generator here: its requests must not decode on for nobody.
        run.cancel()


# --- chat ---------------------------------------------------------------------------------------


class _PlainText:
    """The answer stream of a chat without tools or Harmony channels: its text as it comes."""

    def push(self, text: str) -> list[dict]:
        return [{"content": text}] if text else []

    def finish(self) -> list[dict]:
        return []


def answer_stream(state: ServerState, calls_possible: bool, tools):
    """One choice's text -> chat deltas: tool calls as they form, gpt-oss's reasoning apart from its content, or
    the text as it comes."""
    if calls_possible:
        return ToolCallStream(tools)
    return HarmonyStream() if uses_harmony(state.tokenizer) else _PlainText()


def answer_deltas(stream, event: Event) -> list[dict]:
    return stream.push(event.text) + (stream.finish() if event.finish_reason else [])


def split_answer(state: ServerState, text: str, calls_possible: bool, tools) -> tuple[str | None, list[dict], str]:
    """(content, tool calls, reasoning) of a whole answer, as `answer_stream` splits a streamed one."""
    if calls_possible:
        content, calls = parse_tool_calls(text, tools)
        if calls:
            return content, calls, ""
    if uses_harmony(state.tokenizer):  # gpt-oss: its analysis channel is the reasoning
        reasoning, content = split_harmony(text)
        return content, [], reasoning
    return text, [], ""


@dataclass
class StartedChat:
    """A chat request running in the engine, with what answering it needs (chat completions and responses)."""

    state: ServerState
    key: object
    run: _Run
    prompt_ids: list[int]
    tools: list[dict] | None
    calls_possible: bool  # the model may answer with tool calls
    grounding: object  # the live search behind it (its context, citations, sources used)
    estimated: int  # tokens reserved against the key's limits
    headers: dict
    top: int | None  # logprobs asked for


async def start_chat(body: ChatCompletionRequest, http: Request) -> StartedChat:
    """Checks a chat request, builds its prompt (text, tools, grounding, images, video, audio) and submits it."""
    state: ServerState = http.app.state.hepta
    key, engine = state.gate(http, body.model)
    tokenizer = state.tokenizer
    grounding = await ground(state, body)
    tools, tool_choice = body.tool_dicts(), body.tool_choice_value()
    try:
        _, tool_mode = choose_tools(tools, tool_choice)
        spec = ConstraintSpec.for_request(tokenizer, body.response_format.as_dict() if body.response_format else None,
                                          tools, tool_choice, parallel_tool_calls=body.parallel_tool_calls is not False)
        with_vision = state.vision is not None and has_media_parts(body)
        with_images = (state.codec is not None or state.audio is not None) and has_media_parts(body)
        refuse_certainly_too_long(chat_texts(body), tokenizer, engine.max_len, "messages")
        if not (with_images or with_vision):  # text only: the path of every text model, tools and all
            # on a worker thread: a long prompt's tokenizing must not hold up the other streams on this loop
            prompt_ids = await asyncio.to_thread(chat_prompt_ids, body, tokenizer, grounding.context)
    except InvalidField as e:
        raise APIError(400, str(e), param=e.param) from e
    except HeptaError as e:
        raise APIError(400, str(e), param="messages") from e
    media = None
    if with_vision:  # images and videos through the model's vision encoder (Qwen3-VL)
        prompt_ids, media = await chat_vision_prompt(body, state.vision, tokenizer, state.image_access,
                                                     grounding.context, engine.max_len)
    elif with_images:
        audio_limit = max_audio_seconds(state.audio, engine.max_len) if state.audio is not None else None
        prompt_ids, num_images, caption_slots = await chat_image_prompt(
            body, state.codec, tokenizer, state.image_access, grounding.context, state.audio, audio_limit,
            engine.max_len, state.video_reading)
        check_image_context(len(prompt_ids) + len(caption_slots) * CAPTION_TOKENS, num_images, state.codec,
                            engine.max_len)
        if caption_slots:  # a model trained to caption each frame writes its captions as it reads the video
            try:
                prompt_ids = await write_captions_served(engine, prompt_ids, caption_slots)
            except Exception as e:  # noqa: BLE001 - told to the client as the request's own refusal would be
                _raise_api_error(e)
    max_tokens = _max_tokens(engine, len(prompt_ids), body.max_completion_tokens, body.max_tokens)
    _check(engine, len(prompt_ids), max_tokens, body.n, "messages")
    estimated = len(prompt_ids) + max_tokens * body.n
    headers = state.admit(key, estimated)
    top = body.top_logprobs or 0 if body.logprobs else None
    request = EngineRequest(prompt_ids, max_tokens, _sampling(body), n=body.n, stop=body.stop_list, logprobs=top,
                            constraint=spec, logit_bias=_logit_bias(body, engine.vocab_size), media=media)
    run = _Run(engine, [request], http)
    await run.submit()
    return StartedChat(state, key, run, prompt_ids, tools, tool_mode != "none", grounding, estimated, headers, top)


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, http: Request):
    chat = await start_chat(body, http)
    state, key, run, prompt_ids, tools = chat.state, chat.key, chat.run, chat.prompt_ids, chat.tools
    calls_possible, grounding, estimated, headers, top = (chat.calls_possible, chat.grounding, chat.estimated,
                                                          chat.headers, chat.top)
    tokenizer = state.tokenizer
    meta = dict(response_id=R.new_id("chatcmpl"), model=state.model_name, created=R.now())
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        images = ImageStream(state.codec, prompt_ids, run.num_choices) if state.codec is not None else None
        stream = _chat_stream(state, run, meta, len(prompt_ids), include_usage, calls_possible, tools, grounding, key,
                              estimated, images)
        return StreamingResponse(_sse_body(run, stream), media_type="text/event-stream", headers=headers)

    choices = await collect_choices(run)
    token_text = R.TokenText(tokenizer)
    out = []
    for index, choice in enumerate(choices):
        content, calls, reasoning = split_answer(state, choice.text, calls_possible, tools)
        message = {"role": "assistant", "content": content, "refusal": None}
        finish = choice.finish_reason
        if calls:
            message["tool_calls"] = calls
            finish = "tool_calls" if finish == "stop" else finish
        if reasoning:
            message["reasoning_content"] = reasoning
        if state.codec is not None:
            pngs = await asyncio.to_thread(answer_pngs, state.codec, prompt_ids, choice.token_ids)
            if pngs:  # OpenRouter's field for images in an answer; content keeps the text
                message["images"] = [image_part(png) for png in pngs]
        out.append({"index": index, "message": message, "finish_reason": finish,
                    "logprobs": token_text.chat_logprobs(choice.logprobs) if top is not None else None})
    completion_tokens = sum(len(c.token_ids) for c in choices)
    await state.account(key, "chat.completions", estimated, len(prompt_ids), completion_tokens, run.cached_tokens)
    result = R.chat_completion(meta["response_id"], meta["model"], out,
                               R.usage(len(prompt_ids), completion_tokens, grounding.num_sources, run.cached_tokens),
                               meta["created"])
    if grounding.citations is not None:
        result["citations"] = grounding.citations
    return JSONResponse(result, headers=headers)


async def _chat_stream(state: ServerState, run: _Run, meta: dict, prompt_tokens: int, include_usage: bool,
                       calls_possible: bool, tools, grounding, key, estimated: int,
                       images: ImageStream | None = None) -> AsyncIterator[str]:
    engine = run.engine
    token_text = R.TokenText(state.tokenizer)
    rid, model, created = meta["response_id"], meta["model"], meta["created"]
    chunks = R.ChatChunks(rid, model, created)
    completion_tokens = 0
    streams = [answer_stream(state, calls_possible, tools) for _ in range(run.num_choices)]
    yield "".join(chunks.chunk(index, {"role": "assistant", "content": ""}) for index in range(run.num_choices))
    async for index, event in run.events(watch_disconnect=False):
        completion_tokens += token_count(event, engine)
        logprobs = token_text.chat_logprobs(event.logprobs) if event.logprobs else None
        deltas = answer_deltas(streams[index], event) or ([{"content": ""}] if logprobs else [])
        if images is not None:
            written = await images.push(index, event.token_ids)
            if written:  # an image goes out once its span is complete
                deltas = deltas + [{"images": written}]
        out = []  # this event's chunks, written together
        for delta in deltas:
            out.append(chunks.chunk(index, delta, logprobs=logprobs))
            logprobs = None  # the step's logprobs ride on its first delta
        if event.finish_reason:
            finish = event.finish_reason
            if isinstance(streams[index], ToolCallStream) and streams[index].tool_calls and finish == "stop":
                finish = "tool_calls"
            out.append(chunks.chunk(index, {}, finish))
        if out:
            yield "".join(out)
    await state.account(key, "chat.completions", estimated, prompt_tokens, completion_tokens, run.cached_tokens)
    last = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": "hepta", "choices": []}
    if grounding.citations is not None:
        last["citations"] = grounding.citations
    if include_usage:
        last["usage"] = R.usage(prompt_tokens, completion_tokens, grounding.num_sources, run.cached_tokens)
    yield (R.sse(last) if include_usage or grounding.citations is not None else "") + R.sse("[DONE]")


# --- text completions ---------------------------------------------------------------------------


@router.post("/v1/completions")
async def completions(body: CompletionRequest, http: Request):
    state: ServerState = http.app.state.hepta
    key, engine = state.gate(http, body.model)
    if body.suffix:
        raise APIError(400, "suffix (fill-in-the-middle) is not supported by this model; drop it", param="suffix")
    texts = [body.prompt] if isinstance(body.prompt, str) else [p for p in body.prompt if isinstance(p, str)]
    refuse_certainly_too_long(texts, state.tokenizer, engine.max_len, "prompt")
    prompts = await asyncio.to_thread(completion_prompts, body, state.tokenizer)
    longest = max(len(p) for p in prompts)
    max_tokens = _max_tokens(engine, longest, body.max_tokens, 16)  # OpenAI's default for completions is 16
    for ids in prompts:
        _check(engine, len(ids), max_tokens, body.n, "prompt")
    estimated = sum(len(p) for p in prompts) + max_tokens * body.n * len(prompts)
    headers = state.admit(key, estimated)
    bias = _logit_bias(body, engine.vocab_size)
    requests = [EngineRequest(ids, max_tokens, _sampling(body), n=body.n, stop=body.stop_list, logprobs=body.logprobs,
                              logit_bias=bias) for ids in prompts]
    run = _Run(engine, requests, http)
    await run.submit()
    prompt_tokens = sum(len(p) for p in prompts)
    echoes = [state.tokenizer.decode(ids) if body.echo else "" for ids in prompts for _ in range(body.n)]
    meta = dict(response_id=R.new_id("cmpl"), model=state.model_name, created=R.now())
    token_text = R.TokenText(state.tokenizer)

    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        async def stream() -> AsyncIterator[str]:
            chunks = R.CompletionChunks(meta["response_id"], meta["model"], meta["created"])
            completion_tokens = 0
            echoed = [False] * run.num_choices
            async for index, event in run.events(watch_disconnect=False):
                completion_tokens += token_count(event, engine)
                text = event.text if echoed[index] else echoes[index] + event.text
                echoed[index] = True
                logprobs = token_text.completion_logprobs(event.logprobs, 0) if event.logprobs else None
                yield chunks.chunk(index, text, logprobs, event.finish_reason)
            await state.account(key, "completions", estimated, prompt_tokens, completion_tokens, run.cached_tokens)
            usage = R.text_completion(meta["response_id"], meta["model"], [],
                                      R.usage(prompt_tokens, completion_tokens, cached_tokens=run.cached_tokens),
                                      meta["created"], chunk=True)
            yield (R.sse(usage) if include_usage else "") + R.sse("[DONE]")

        return StreamingResponse(_sse_body(run, stream()), media_type="text/event-stream", headers=headers)

    choices = await collect_choices(run)
    out = [{"index": i, "text": echoes[i] + c.text, "finish_reason": c.finish_reason,
            "logprobs": token_text.completion_logprobs(c.logprobs, len(echoes[i])) if body.logprobs is not None
            else None} for i, c in enumerate(choices)]
    completion_tokens = sum(len(c.token_ids) for c in choices)
    await state.account(key, "completions", estimated, prompt_tokens, completion_tokens, run.cached_tokens)
    return JSONResponse(R.text_completion(meta["response_id"], meta["model"], out,
                                          R.usage(prompt_tokens, completion_tokens, cached_tokens=run.cached_tokens),
                                          meta["created"]), headers=headers)
