"""Stream chunks serialised from per-stream templates are byte for byte the JSON of OpenAI's chunk objects."""

import json

import pytest

from hepta.serve import responses as R

TEXTS = ["", " plain", 'quote " and \\ backslash', "new\nline\ttab", "ünïcödé 漢字 🙂", "\x00\x1f control"]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("finish_reason", [None, "stop", "length"])
def test_completion_chunk_equals_the_serialised_object(text, finish_reason):
    rid, model, created = R.new_id("cmpl"), 'mödel "x"', 1_700_000_000
    logprobs = {"tokens": [text], "token_logprobs": [-0.5], "top_logprobs": [{text: -0.5}], "text_offset": [0]}
    for index, lp in ((0, None), (3, logprobs)):
        expected = {"id": rid, "object": "text_completion", "created": created, "model": model,
                    "choices": [{"index": index, "text": text, "logprobs": lp, "finish_reason": finish_reason}],
                    "system_fingerprint": "hepta"}
        got = R.CompletionChunks(rid, model, created).chunk(index, text, lp, finish_reason)
        assert got == R.sse(expected)
        assert json.loads(got[len("data: "):]) == expected


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("finish_reason", [None, "stop", "tool_calls"])
def test_chat_chunk_equals_the_serialised_object(text, finish_reason):
    rid, model, created = R.new_id("chatcmpl"), "bench", 1_700_000_000
    logprobs = {"content": [{"token": text, "logprob": -1.25, "bytes": list(text.encode()), "top_logprobs": []}],
                "refusal": None}
    for index, delta, lp in ((0, {"content": text}, None), (2, {"role": "assistant", "content": ""}, logprobs),
                             (1, {}, None)):
        expected = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                    "system_fingerprint": "hepta",
                    "choices": [{"index": index, "delta": delta, "logprobs": lp, "finish_reason": finish_reason}]}
        assert R.ChatChunks(rid, model, created).chunk(index, delta, finish_reason, lp) == R.sse(expected)
