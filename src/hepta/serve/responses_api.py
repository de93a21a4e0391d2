"""`/v1/responses`: OpenAI's Responses API (and xAI's, with its server-side `x_search` tool) over the same engine
path as chat completions.

A request becomes a chat (`to_chat`): `instructions` the system message, the stored conversation of
`previous_response_id` and this turn's input items the messages (`input_text`, `input_image`,
`function_call`, `function_call_output`), function tools and `text.format` the chat's tools and
`response_format`, `x_search` the live search (`search_parameters` of the chat path, whose posts ground
the answer). The answer comes back as output items: an `x_search_call` for the search, a `message` with
`output_text` and a `url_citation` annotation per post used, and a `function_call` per tool call.
Streams follow the documented event sequence, ending in `response.completed`, or `response.failed`.
"""

from __future__ import annotations

import json
from itertools import count
from typing import Any, AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hepta.serve import responses as R
from hepta.serve.errors import APIError
from hepta.serve.generation import (StartedChat, answer_deltas, answer_stream, collect_choices, split_answer,
                                   start_chat, token_count)
from hepta.serve.grounding import searched_question
from hepta.serve.schemas import ChatCompletionRequest

router = APIRouter()

TOOL_TYPES = ("function", "x_search")


class ResponsesRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=128)
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    text: dict[str, Any] | None = None
    store: bool = True
    previous_response_id: str | None = None
    stream: bool = False
    metadata: dict[str, Any] | None = None
    user: str | None = None


# --- the request as a chat ------------------------------------------------------------------------

def input_items(value: str | list[dict]) -> list[dict]:
    """`input` as a list of items: a string is one user message."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]}]
    return value


def _content(content: Any, param: str) -> str | list[dict]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise APIError(400, "a message's content must be a string or a list of parts", param=param)
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            parts.append({"type": "image_url", "image_url": {"url": part["image_url"]}})
        elif kind == "input_audio" and isinstance(part.get("input_audio"), dict):
            parts.append({"type": "input_audio", "input_audio": part["input_audio"]})
        else:
            raise APIError(400, f"content parts of type {kind!r} are not read here; send input_text, input_image "
                           "with an image_url (a data URL, or a URL the server may read), or input_audio",
                           param=f"{param}[{j}]")
    return parts


def chat_messages(items: list[dict]) -> list[dict]:
    """Conversation items as chat messages; the function calls of one turn join one assistant message."""
    messages: list[dict] = []
    for i, item in enumerate(items):
        kind = item.get("type", "message")
        param = f"input[{i}]"
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise APIError(400, f"a message's role must be user, assistant, system or developer, not {role!r}",
                               param=f"{param}.role")
            messages.append({"role": "system" if role == "developer" else role,
                             "content": _content(item.get("content"), f"{param}.content")})
        elif kind == "function_call":
            call = {"id": item.get("call_id"), "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments", "{}")}}
            if messages and messages[-1]["role"] == "assistant" and messages[-1].get("tool_calls"):
                messages[-1]["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"),
                             "content": output if isinstance(output, str) else json.dumps(output)})
        elif kind == "x_search_call":
            continue  # a search of an earlier turn: its posts grounded that turn's answer, which follows
        else:
            raise APIError(400, f"input items of type {kind!r} are not read here; send message, function_call or "
                           "function_call_output items", param=f"{param}.type")
    return messages


def _tools(body: ResponsesRequest) -> tuple[list[dict] | None, dict | None]:
    """(the chat's function tools, the search_parameters of an x_search tool)."""
    functions, search = [], None
    for i, tool in enumerate(body.tools or []):
        kind = tool.get("type")
        if kind == "function":
            spec = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
            functions.append({"type": "function", "function": spec})
        elif kind == "x_search":
            source = {"type": "x"}
            for ours, theirs in (("allowed_x_handles", "included_x_handles"), ("excluded_x_handles", "excluded_x_handles")):
                if tool.get(ours):
                    source[theirs] = tool[ours]
            search = {"mode": "on", "sources": [source], "return_citations": True,
                      **{k: tool[k] for k in ("from_date", "to_date") if tool.get(k)}}
        else:
            raise APIError(400, f"tools of type {kind!r} are not run here; this server runs {', '.join(TOOL_TYPES)} "
                           "tools", param=f"tools[{i}].type")
    return functions or None, search


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    return choice


def _response_format(text: dict | None) -> dict | None:
    form = (text or {}).get("format")
    if not form or form.get("type") == "text":
        return None
    if form.get("type") == "json_schema":
        return {"type": "json_schema", "json_schema": {k: form[k] for k in ("name", "schema", "strict", "description")
                                                       if k in form}}
    return {"type": form.get("type")}


def to_chat(body: ResponsesRequest, history: list[dict]) -> tuple[ChatCompletionRequest, list[dict], dict | None]:
    """(the chat, this turn's input items, the x_search parameters or None)."""
    items = input_items(body.input)
    messages = chat_messages(history + items)
    if body.instructions:
        messages.insert(0, {"role": "system", "content": body.instructions})
    functions, search = _tools(body)
    fields = {"model": body.model, "messages": messages, "max_tokens": body.max_output_tokens,
              "temperature": body.temperature, "top_p": body.top_p, "tools": functions,
              "tool_choice": _tool_choice(body.tool_choice) if functions else None,
              "parallel_tool_calls": body.parallel_tool_calls, "response_format": _response_format(body.text),
              "search_parameters": search}
    try:
        chat = ChatCompletionRequest(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as e:
        first = e.errors()[0]
        raise APIError(400, f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}", param="input") from e
    return chat, items, search


# --- the answer as output items ------------------------------------------------------------------

def _annotations(text: str, citations: list[str] | None) -> list[dict]:
    """A url_citation per post used, each over the whole answer (the model cites no spans of its own)."""
    return [{"type": "url_citation", "url": url, "title": url, "start_index": 0, "end_index": len(text)}
            for url in citations or []]


def _search_item(query: str, citations: list[str] | None) -> dict:
    return {"type": "x_search_call", "id": R.new_id("xs"), "status": "completed",
            "action": {"type": "search", "query": query, "sources": [{"type": "url", "url": u} for u in citations or []]}}


def _message_item(text: str, citations: list[str] | None, item_id: str | None = None) -> dict:
    return {"type": "message", "id": item_id or R.new_id("msg"), "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": _annotations(text, citations)}]}


def _call_item(call: dict, item_id: str | None = None) -> dict:
    return {"type": "function_call", "id": item_id or R.new_id("fc"), "call_id": call["id"],
            "name": call["function"]["name"], "arguments": call["function"]["arguments"], "status": "completed"}


def _response(rid: str, created: int, body: ResponsesRequest, model: str, status: str, output: list[dict],
              usage: dict | None, finish: str | None = None, error: dict | None = None) -> dict:
    return {"id": rid, "object": "response", "created_at": created, "status": status, "error": error,
            "incomplete_details": {"reason": "max_output_tokens"} if finish == "length" else None,
            "instructions": body.instructions, "max_output_tokens": body.max_output_tokens, "model": model,
            "output": output, "parallel_tool_calls": body.parallel_tool_calls is not False,
            "previous_response_id": body.previous_response_id, "store": body.store,
            "temperature": body.temperature if body.temperature is not None else 1.0,
            "text": body.text or {"format": {"type": "text"}}, "tool_choice": body.tool_choice or "auto",
            "tools": body.tools or [], "top_p": body.top_p if body.top_p is not None else 1.0,
            "truncation": "disabled", "usage": usage, "user": body.user, "metadata": body.metadata or {}}


def _usage(prompt_tokens: int, output_tokens: int, num_sources: int | None, cached_tokens: int) -> dict:
    usage = {"input_tokens": prompt_tokens, "input_tokens_details": {"cached_tokens": cached_tokens},
             "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
             "total_tokens": prompt_tokens + output_tokens}
    if num_sources is not None:
        usage["num_sources_used"] = num_sources  # xAI's accounting of the posts the search used
    return usage


def _owner(key) -> str:
    return "" if key is None else str(key.id)


# --- routes ------------------------------------------------------------------------------------------

@router.post("/v1/responses")
async def create_response(body: ResponsesRequest, http: Request):
    state = http.app.state.hepta
    store = state.responses
    history: list[dict] = []
    if body.previous_response_id is not None:
        found = store.get(_owner(state.authorize(http)), body.previous_response_id)
        if found is None:
            raise APIError(404, f"Previous response with id '{body.previous_response_id}' not found.",
                           param="previous_response_id")
        history = found[1]
    chat, items, search = to_chat(body, history)
    started = await start_chat(chat, http)
    rid, created, model = R.new_id("resp"), R.now(), state.model_name
    search_items = [_search_item(searched_question(chat), started.grounding.citations)] if search is not None else []

    def finished(output: list[dict], completion_tokens: int, finish: str | None) -> dict:
        response = _response(rid, created, body, model, "incomplete" if finish == "length" else "completed", output,
                             _usage(len(started.prompt_ids), completion_tokens, started.grounding.num_sources,
                                    started.run.cached_tokens), finish)
        if body.store:
            kept = [item for item in output if item["type"] != "x_search_call"]
            store.put(_owner(started.key), response, history + items + kept)
        return response

    if body.stream:
        events = _events(started, body, rid, created, model, search_items, finished)
        return StreamingResponse(_sse(started, events), media_type="text/event-stream", headers=started.headers)
    (choice,) = await collect_choices(started.run)
    output = search_items + _answer_items(started, choice.text)
    completion_tokens = len(choice.token_ids)
    await state.account(started.key, "responses", started.estimated, len(started.prompt_ids), completion_tokens,
                        started.run.cached_tokens)
    return JSONResponse(finished(output, completion_tokens, choice.finish_reason), headers=started.headers)


def _answer_items(started: StartedChat, text: str) -> list[dict]:
    """The message and function_call items of a whole answer (a gpt-oss answer's reasoning left out)."""
    content, calls, _ = split_answer(started.state, text, started.calls_possible, started.tools)
    if calls:
        return ([_message_item(content, None)] if content and content.strip() else []) + [_call_item(c) for c in calls]
    return [_message_item(content, started.grounding.citations)]


@router.get("/v1/responses/{response_id}")
async def get_response(response_id: str, http: Request):
    state = http.app.state.hepta
    found = state.responses.get(_owner(state.authorize(http)), response_id)
    if found is None:
        raise APIError(404, f"Response with id '{response_id}' not found.", param="response_id")
    return JSONResponse(found[0])


@router.delete("/v1/responses/{response_id}")
async def delete_response(response_id: str, http: Request):
    state = http.app.state.hepta
    if not state.responses.delete(_owner(state.authorize(http)), response_id):
        raise APIError(404, f"Response with id '{response_id}' not found.", param="response_id")
    return JSONResponse({"id": response_id, "object": "response", "deleted": True})


# --- streaming ---------------------------------------------------------------------------------------

async def _sse(started: StartedChat, events: AsyncIterator[dict]) -> AsyncIterator[str]:
    """Each event as `event: TYPE` and `data: {...}`; a client that leaves cancels the run."""
    try:
        async for event in events:
            yield f"event: {event['type']}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n"
    finally:
        started.run.cancel()


async def _events(started: StartedChat, body: ResponsesRequest, rid: str, created: int, model: str,
                  search_items: list[dict], finished) -> AsyncIterator[dict]:
    numbers = count()

    def event(kind: str, **fields) -> dict:
        return {"type": kind, "sequence_number": next(numbers), **fields}

    def snapshot(status: str, output: list[dict], error: dict | None = None) -> dict:
        return _response(rid, created, body, model, status, output, None, error=error)

    yield event("response.created", response=snapshot("in_progress", []))
    yield event("response.in_progress", response=snapshot("in_progress", []))
    output: list[dict] = []
    for item in search_items:
        yield event("response.output_item.added", output_index=len(output), item={**item, "status": "in_progress"})
        yield event("response.output_item.done", output_index=len(output), item=item)
        output.append(item)
    stream = answer_stream(started.state, started.calls_possible, started.tools)
    message_id, text, calls, completion_tokens, finish = R.new_id("msg"), "", {}, 0, None
    message_index = None
    try:
        async for _, engine_event in started.run.events(watch_disconnect=False):
            completion_tokens += token_count(engine_event, started.run.engine)
            for delta in answer_deltas(stream, engine_event):  # a gpt-oss answer's reasoning deltas are left out
                if delta.get("content"):
                    if message_index is None:
                        message_index = len(output)
                        output.append(None)  # its place; the item is complete at the end
                        yield event("response.output_item.added", output_index=message_index,
                                    item={"type": "message", "id": message_id, "status": "in_progress",
                                          "role": "assistant", "content": []})
                        yield event("response.content_part.added", item_id=message_id, output_index=message_index,
                                    content_index=0, part={"type": "output_text", "text": "", "annotations": []})
                    text += delta["content"]
                    yield event("response.output_text.delta", item_id=message_id, output_index=message_index,
                                content_index=0, delta=delta["content"], logprobs=[])
                for call in delta.get("tool_calls", []):
                    slot = calls.get(call["index"])
                    if slot is None:
                        slot = calls[call["index"]] = {"id": R.new_id("fc"), "index": len(output), "arguments": "",
                                                       "call_id": call["id"], "name": call["function"]["name"]}
                        output.append(None)
                        yield event("response.output_item.added", output_index=slot["index"], item={
                            "type": "function_call", "id": slot["id"], "call_id": slot["call_id"],
                            "name": slot["name"], "arguments": "", "status": "in_progress"})
                    piece = call.get("function", {}).get("arguments", "")
                    if piece:
                        slot["arguments"] += piece
                        yield event("response.function_call_arguments.delta", item_id=slot["id"],
                                    output_index=slot["index"], delta=piece)
            if engine_event.finish_reason:
                finish = engine_event.finish_reason
    except APIError as e:
        yield event("response.failed", response=snapshot("failed", [i for i in output if i is not None],
                                                          {"code": e.code or "server_error", "message": e.message}))
        return
    if message_index is not None:
        item = _message_item(text, started.grounding.citations, message_id)
        part = item["content"][0]
        yield event("response.output_text.done", item_id=message_id, output_index=message_index, content_index=0,
                    text=text, logprobs=[])
        yield event("response.content_part.done", item_id=message_id, output_index=message_index, content_index=0,
                    part=part)
        yield event("response.output_item.done", output_index=message_index, item=item)
        output[message_index] = item
    for slot in calls.values():
        item = _call_item({"id": slot["call_id"], "function": {"name": slot["name"], "arguments": slot["arguments"]}},
                          slot["id"])
        yield event("response.function_call_arguments.done", item_id=slot["id"], output_index=slot["index"],
                    arguments=slot["arguments"])
        yield event("response.output_item.done", output_index=slot["index"], item=item)
        output[slot["index"]] = item
    output = [item for item in output if item is not None]
    await started.state.account(started.key, "responses", started.estimated, len(started.prompt_ids), completion_tokens,
                                started.run.cached_tokens)
    response = finished(output, completion_tokens, finish)
    yield event("response.incomplete" if response["status"] == "incomplete" else "response.completed",
                response=response)
