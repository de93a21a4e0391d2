"""Tool calling in OpenAI's shape, written and read in the Hermes `<tool_call>` format.

The model sees its tools in the system message and calls one by writing

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

(one block per call, blocks separated by a newline). This is the format Qwen2.5/Qwen3, Hermes
and many other open models are tuned on, it is plain text, so every tokenizer can write it
(Qwen's `<tool_call>` is a single added token there, a few BPE pieces elsewhere), and its JSON
body is exactly what a JSON-Schema grammar can force. Results go back to the model as
`<tool_response>` blocks in a user turn, which any chat template renders (hepta's own keeps
its `tool` role).

This file is the format: checking `tools` / `tool_choice`, the system prompt, the rendering of a
multi-turn tool conversation, and reading calls out of the generated text, whole
(`parse_tool_calls`) or as it streams (`ToolCallStream`). The grammar that forces calls to
validate is in constrain.py.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from dataclasses import dataclass
from typing import Any, Sequence

from hepta.errors import HeptaError

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")  # OpenAI's rule for function names
_CALL_ID_CHARS = string.ascii_letters + string.digits
NO_PARAMETERS = {"type": "object", "properties": {}, "additionalProperties": False}


class InvalidField(HeptaError):
    """A request field is wrong; `param` names it the way OpenAI's error object does."""

    def __init__(self, param: str, problem: str):
        super().__init__(f"{param}: {problem}")
        self.param = param


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict  # JSON Schema of the arguments object
    param: str  # where it came from in the request, for error messages ("tools[2].function")


def check_tools(tools: Sequence[dict] | None) -> list[Tool]:
    """The request's `tools`, checked: OpenAI's [{"type": "function", "function": {...}}, ...]."""
    if tools is None:
        return []
    if not isinstance(tools, (list, tuple)):
        raise InvalidField("tools", "must be a list of {'type': 'function', 'function': {...}} objects")
    checked, seen = [], set()
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
            raise InvalidField(where, "must be {'type': 'function', 'function': {'name': ..., 'parameters': ...}}")
        function = tool["function"]
        name = function.get("name")
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise InvalidField(f"{where}.function.name", f"{name!r} is not a valid function name; "
                               "use 1 to 64 letters, digits, '_' or '-'")
        if name in seen:
            raise InvalidField(f"{where}.function.name", f"{name!r} is defined twice; give each tool its own name")
        seen.add(name)
        parameters = function.get("parameters", NO_PARAMETERS)
        if not isinstance(parameters, dict):
            raise InvalidField(f"{where}.function.parameters", "must be a JSON Schema object")
        if parameters.get("type", "object") != "object":
            raise InvalidField(f"{where}.function.parameters", "must describe an object "
                               "({'type': 'object', 'properties': {...}}); arguments are always a JSON object")
        description = function.get("description") or ""
        if not isinstance(description, str):
            raise InvalidField(f"{where}.function.description", "must be a string")
        checked.append(Tool(name, description, parameters, f"{where}.function"))
    return checked


def choose_tools(tools: Sequence[dict] | None, tool_choice: Any) -> tuple[list[Tool], str]:
    """The tools the model may call and the mode: "none", "auto", "required" or "named" (that one tool).

    OpenAI's defaults: "auto" when tools are given, "none" when not.
    """
    checked = check_tools(tools)
    if tool_choice is None:
        return checked, "auto" if checked else "none"
    if tool_choice in ("none", "auto", "required"):
        if tool_choice != "none" and not checked:
            raise InvalidField("tool_choice", f"{tool_choice!r} needs at least one tool; pass tools or drop tool_choice")
        return checked, tool_choice
    if isinstance(tool_choice, dict) and tool_choice.get("type") == "function" \
            and isinstance(tool_choice.get("function"), dict):
        name = tool_choice["function"].get("name")
        named = [t for t in checked if t.name == name]
        if not named:
            known = ", ".join(t.name for t in checked) or "none given"
            raise InvalidField("tool_choice.function.name", f"{name!r} is not one of the tools ({known})")
        return named, "named"
    raise InvalidField("tool_choice", "must be 'none', 'auto', 'required' or "
                       "{'type': 'function', 'function': {'name': ...}}")


# --- the prompt -------------------------------------------------------------------------------


def tools_system_prompt(tools: Sequence[dict] | None, tool_choice: Any = None) -> str:
    """Text for the system message that lists the tools and the call format ("" when tools are off)."""
    chosen, mode = choose_tools(tools, tool_choice)
    if mode == "none":
        return ""
    signatures = "\n".join(json.dumps({"type": "function", "function": {
        "name": t.name, "description": t.description, "parameters": t.parameters}}, ensure_ascii=False)
        for t in chosen)
    if mode == "auto":
        when = "Call a function when it helps answer the user; otherwise answer in plain text."
    elif mode == "named":
        when = f"You must call the function {chosen[0].name}."
    else:
        when = "You must call one or more of these functions."
    return (
        "# Tools\n\n"
        f"{when}\n\n"
        "The functions, one JSON signature per line, inside <tools></tools>:\n"
        f"<tools>\n{signatures}\n</tools>\n\n"
        "To call a function, write its name and a JSON object of arguments that follows its parameters "
        f"schema inside {TOOL_CALL_OPEN}{TOOL_CALL_CLOSE} tags, one block per call:\n"
        f"{TOOL_CALL_OPEN}\n"
        '{"name": <function-name>, "arguments": <arguments-object>}\n'
        f"{TOOL_CALL_CLOSE}\n\n"
        "Each result comes back inside <tool_response></tool_response> tags."
    )


def format_tool_call(name: str, arguments: dict) -> str:
    """One call as the model writes it (the grammar in constrain.py forces this exact layout)."""
    body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"{TOOL_CALL_OPEN}\n{body}\n{TOOL_CALL_CLOSE}"


def _text(content: Any, where: str) -> str:
    # OpenAI content: a string, None, or a list of parts of which only text parts carry text here.
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise InvalidField(f"{where}.content[{j}]", "only {'type': 'text', 'text': ...} parts are supported")
            parts.append(part["text"])
        return "".join(parts)
    raise InvalidField(f"{where}.content", "must be a string or a list of text parts")


def _assistant_text(message: dict, where: str) -> str:
    calls = []
    for j, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InvalidField(f"{where}.tool_calls[{j}]", "must be {'type': 'function', 'function': "
                               "{'name': ..., 'arguments': '<JSON string>'}}")
        arguments = function.get("arguments", "{}")
        try:
            arguments = json.loads(arguments) if isinstance(arguments, str) else arguments
        except json.JSONDecodeError as e:
            raise InvalidField(f"{where}.tool_calls[{j}].function.arguments",
                               f"is not valid JSON ({e}); send the arguments string the model returned") from e
        calls.append(format_tool_call(function["name"], arguments))
    text = _text(message.get("content"), where)
    return "\n".join(([text] if text else []) + calls)


def tool_chat_messages(messages: Sequence[dict], tools: Sequence[dict] | None = None, tool_choice: Any = None,
                       *, tool_role: bool = False) -> list[dict]:
    """OpenAI chat messages with tools made plain `{"role", "content"}` messages any chat template renders.

    The tool prompt joins the first system message (or becomes one); assistant `tool_calls` become
    `<tool_call>` blocks in the assistant's text; each run of `role: "tool"` messages becomes one
    user turn of `<tool_response>` blocks, so templates that insist on user/assistant alternation
    accept it. `tool_role=True` keeps them as `tool` messages for tokenizers with that role (hepta's).
    """
    if not isinstance(messages, (list, tuple)):
        raise InvalidField("messages", "must be a list of {'role': ..., 'content': ...} objects")
    plain: list[dict] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise InvalidField(where, "must be an object like {'role': 'user', 'content': '...'}")
        role = message.get("role")
        if role == "assistant":
            plain.append({"role": "assistant", "content": _assistant_text(message, where)})
        elif role == "tool":
            response = f"<tool_response>\n{_text(message.get('content'), where)}\n</tool_response>"
            if tool_role:
                plain.append({"role": "tool", "content": response})
            elif plain and plain[-1].get("tool_responses"):
                plain[-1]["content"] += "\n" + response
            else:
                plain.append({"role": "user", "content": response, "tool_responses": True})
        else:
            plain.append({"role": role, "content": _text(message.get("content"), where)})
    for message in plain:
        message.pop("tool_responses", None)
    prompt = tools_system_prompt(tools, tool_choice)
    if prompt:
        if plain and plain[0]["role"] == "system":
            plain[0] = {"role": "system", "content": f"{plain[0]['content']}\n\n{prompt}".lstrip()}
        else:
            plain.insert(0, {"role": "system", "content": prompt})
    return plain


# --- reading calls back -----------------------------------------------------------------------


def new_call_id() -> str:
    return "call_" + "".join(secrets.choice(_CALL_ID_CHARS) for _ in range(24))


def parse_tool_calls(text: str, tools: Sequence[dict] | None) -> tuple[str | None, list[dict]]:
    """(content, tool_calls) of generated text, in OpenAI's message shape.

    Every complete `<tool_call>` block naming a known tool with a JSON-object body becomes a call
    (arguments re-serialised as a JSON string); anything else, an unfinished block included,
    stays in the content, which is None when nothing but calls was written.
    """
    known = {t.name for t in check_tools(tools)}
    decoder = json.JSONDecoder()
    calls, kept, position, search_from = [], [], 0, 0
    while (start := text.find(TOOL_CALL_OPEN, search_from)) >= 0:
        search_from = start + len(TOOL_CALL_OPEN)
        body_start = _skip_space(text, search_from)
        try:
            # raw_decode, not a regex: a string argument may itself contain "</tool_call>"
            body, body_end = decoder.raw_decode(text, body_start)
        except json.JSONDecodeError:
            continue
        end = _skip_space(text, body_end)
        if not text.startswith(TOOL_CALL_CLOSE, end) or not isinstance(body, dict) \
                or body.get("name") not in known or not isinstance(body.get("arguments"), dict):
            continue
        kept.append(text[position:start])
        position = search_from = end + len(TOOL_CALL_CLOSE)
        calls.append({"id": new_call_id(), "type": "function", "function": {
            "name": body["name"], "arguments": json.dumps(body["arguments"], ensure_ascii=False)}})
    kept.append(text[position:])
    content = "".join(kept).strip() if calls else text
    return (content or None), calls


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


# --- streaming ---------------------------------------------------------------------------------

_CALL_TAIL = "}\n" + TOOL_CALL_CLOSE  # after the arguments object, as format_tool_call writes it


class ToolCallStream:
    """Streamed text to OpenAI chat-completion chunk deltas: content, then tool calls as they form.

    Text outside calls streams as `{"content": ...}`, holding back only what could be the start of
    `<tool_call>`; a call streams as `{"tool_calls": [{"index", "id", "type", "function": {"name",
    "arguments": ""}}]}` once its name is complete, then its arguments in pieces, as OpenAI streams
    them. It reads the layout the tool grammar forces; text that turns out not to be a call is
    released as content. `tool_calls` holds the finished calls (finish_reason "tool_calls").
    """

    def __init__(self, tools: Sequence[dict] | None):
        # each call starts exactly so (format_tool_call's layout, which the grammar forces)
        self._heads = {t.name: '{"name": ' + json.dumps(t.name) + ', "arguments": ' for t in check_tools(tools)}
        self.tool_calls: list[dict] = []
        self._buffer, self._state = "", "text"  # "text" | "head" (after <tool_call>) | "arguments"
        self._emitted = 0  # characters of the current call's arguments already streamed

    def push(self, text: str) -> list[dict]:
        self._buffer += text
        deltas: list[dict] = []
        while True:
            before = (self._state, len(self._buffer))
            deltas += getattr(self, f"_{self._state}")()
            if (self._state, len(self._buffer)) == before:
                return deltas

    def finish(self) -> list[dict]:
        """Deltas for what is still held back when generation ends (an unfinished call is content)."""
        deltas = self.push("")
        rest = self._buffer if self._state == "text" else TOOL_CALL_OPEN + self._buffer
        if self._state == "arguments":  # cut off mid-arguments: its streamed part stays with the call
            rest = self._buffer[self._emitted:]
            deltas += [self._arguments_delta(rest)] if rest else []
            rest = ""
        self._buffer, self._state = "", "text"
        return deltas + ([{"content": rest}] if rest else [])

    def _text(self) -> list[dict]:
        start = self._buffer.find(TOOL_CALL_OPEN)
        if start >= 0:
            content, self._buffer, self._state = self._buffer[:start], self._buffer[start + len(TOOL_CALL_OPEN):], "head"
        else:
            keep = next((k for k in range(min(len(TOOL_CALL_OPEN) - 1, len(self._buffer)), 0, -1)
                         if self._buffer.endswith(TOOL_CALL_OPEN[:k])), 0)
            content, self._buffer = self._buffer[:len(self._buffer) - keep], self._buffer[len(self._buffer) - keep:]
        # blank lines between calls are not content
        return [{"content": content}] if content.strip() or (content and not self.tool_calls) else []

    def _head(self) -> list[dict]:
        stripped = self._buffer.lstrip()
        name = next((n for n, head in self._heads.items() if stripped.startswith(head)), None)
        if name is None:
            if any(head.startswith(stripped) for head in self._heads.values()):
                return []  # may still become a call's head: wait for more text
            content, self._buffer, self._state = TOOL_CALL_OPEN + self._buffer, "", "text"
            return [{"content": content}]
        call = {"id": new_call_id(), "type": "function", "function": {"name": name, "arguments": ""}}
        self.tool_calls.append(call)
        self._buffer = stripped[len(self._heads[name]):]
        self._state, self._emitted = "arguments", 0
        return [{"tool_calls": [{"index": len(self.tool_calls) - 1, "id": call["id"], "type": "function",
                                 "function": {"name": name, "arguments": ""}}]}]

    def _arguments(self) -> list[dict]:
        try:
            # raw_decode, not a search for the tail: a string argument may contain "}\n</tool_call>"
            _, end = json.JSONDecoder().raw_decode(self._buffer)
        except json.JSONDecodeError:
            end = None
        if end is not None and self._buffer[end:].startswith(_CALL_TAIL):
            arguments, self._buffer, self._state = self._buffer[:end], self._buffer[end + len(_CALL_TAIL):], "text"
            self.tool_calls[-1]["function"]["arguments"] = arguments
            piece = arguments[self._emitted:]
            return [self._arguments_delta(piece)] if piece else []
        # hold back what could be the call's closing tail
        safe = max(self._emitted, len(self._buffer) - len(_CALL_TAIL))
        piece, self._emitted = self._buffer[self._emitted:safe], safe
        self.tool_calls[-1]["function"]["arguments"] = self._buffer[:safe]
        return [self._arguments_delta(piece)] if piece else []

    def _arguments_delta(self, piece: str) -> dict:
        return {"tool_calls": [{"index": len(self.tool_calls) - 1, "function": {"arguments": piece}}]}
