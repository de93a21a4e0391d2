"""Response objects in OpenAI's shapes: chat completions, text completions, their stream chunks."""

from __future__ import annotations

import json
import secrets
import time
from json.encoder import encode_basestring

from hepta.infer.request import TokenLogprob
from hepta.tokenizer import TextTokenizer


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def sse(obj: dict | str) -> str:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)}\n\n"


def usage(prompt_tokens: int, completion_tokens: int, num_sources: int | None = None, cached_tokens: int = 0) -> dict:
    """OpenAI's usage object; `cached_tokens`: prompt tokens served from kept prefixes, not computed again."""
    out = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
           "total_tokens": prompt_tokens + completion_tokens, "prompt_tokens_details": {"cached_tokens": cached_tokens}}
    if num_sources is not None:
        out["num_sources_used"] = num_sources  # xAI's Live Search accounting
    return out


class TokenText:
    """Token strings and bytes for logprobs (byte-level tokens may be a fragment of a character)."""

    def __init__(self, tokenizer: TextTokenizer):
        self.tokenizer = tokenizer

    def text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    def entry(self, token_id: int, logprob: float) -> dict:
        text = self.text(token_id)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    def chat_logprobs(self, logprobs: list[TokenLogprob]) -> dict:
        return {"content": [{**self.entry(lp.token_id, lp.logprob),
                             "top_logprobs": [self.entry(t, v) for t, v in lp.top]} for lp in logprobs],
                "refusal": None}

    def completion_logprobs(self, logprobs: list[TokenLogprob], offset: int) -> dict:
        tokens, offsets = [], []
        for lp in logprobs:
            tokens.append(self.text(lp.token_id))
            offsets.append(offset)
            offset += len(tokens[-1])
        return {"tokens": tokens, "token_logprobs": [lp.logprob for lp in logprobs],
                "top_logprobs": [{self.text(t): v for t, v in lp.top} for lp in logprobs], "text_offset": offsets}


def chat_completion(response_id: str, model: str, choices: list[dict], usage_obj: dict, created: int) -> dict:
    return {"id": response_id, "object": "chat.completion", "created": created, "model": model,
            "choices": choices, "usage": usage_obj, "system_fingerprint": "hepta"}


def _json(value) -> str:
    """`json.dumps(value, ensure_ascii=False)`, without the encoder's setup for the common values of a
    chunk: a plain string, or None (a chunk without logprobs or finish reason)."""
    if value is None:
        return "null"
    return encode_basestring(value) if type(value) is str else json.dumps(value, ensure_ascii=False)


def _chunk_head(fields: dict) -> str:
    """`data: {...fields, "choices": [{"index": ` : the start of every chunk of one stream, serialised once."""
    return f'data: {_json(fields)[:-1]}, "choices": [{{"index": '


class ChatChunks:
    """The SSE events of one streamed chat completion: `sse(chunk)` of OpenAI's chunk object, byte for
    byte, with the fields every chunk repeats serialised once per stream instead of once per token."""

    def __init__(self, response_id: str, model: str, created: int):
        self.head = _chunk_head({"id": response_id, "object": "chat.completion.chunk", "created": created,
                                 "model": model, "system_fingerprint": "hepta"})

    def chunk(self, index: int, delta: dict, finish_reason: str | None = None, logprobs: dict | None = None) -> str:
        return (f'{self.head}{index}, "delta": {_json(delta)}, "logprobs": {_json(logprobs)}, '
                f'"finish_reason": {_json(finish_reason)}}}]}}\n\n')


class CompletionChunks:
    """The SSE events of one streamed text completion, as `ChatChunks` (a chunk has no usage field)."""

    def __init__(self, response_id: str, model: str, created: int):
        self.head = _chunk_head({"id": response_id, "object": "text_completion", "created": created, "model": model})

    def chunk(self, index: int, text: str, logprobs: dict | None, finish_reason: str | None) -> str:
        return (f'{self.head}{index}, "text": {_json(text)}, "logprobs": {_json(logprobs)}, '
                f'"finish_reason": {_json(finish_reason)}}}], "system_fingerprint": "hepta"}}\n\n')


def text_completion(response_id: str, model: str, choices: list[dict], usage_obj: dict | None, created: int,
                    chunk: bool = False) -> dict:
    out = {"id": response_id, "object": "text_completion", "created": created, "model": model,
           "choices": choices, "system_fingerprint": "hepta"}
    if usage_obj is not None or not chunk:
        out["usage"] = usage_obj
    return out


def now() -> int:
    return int(time.time())
