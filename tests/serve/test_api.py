"""The API through the real `openai` client: answers, streams, usage, sampling controls, structure."""

import base64
import json

import httpx
import jsonschema_rs
import numpy as np
import pytest

from hepta.tokenizer import Tokenizer

MESSAGES = [{"role": "user", "content": "Write a function that reads a config file."}]


def chat(client, **kwargs):
    return client.chat.completions.create(**{"model": "micro", "messages": MESSAGES, **kwargs})


def test_chat_completion_answers_with_usage_and_finish_reason(openai_client):
    response = chat(openai_client, max_tokens=12, temperature=0)
    choice = response.choices[0]
    assert response.object == "chat.completion" and response.model == "micro"
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason == "length" and response.usage.completion_tokens == 12
    assert response.usage.total_tokens == response.usage.prompt_tokens + 12 and response.usage.prompt_tokens > 10
    # max_completion_tokens is the newer name for the same limit
    assert chat(openai_client, max_completion_tokens=5, temperature=0).usage.completion_tokens == 5


def test_streamed_chat_equals_the_plain_answer_and_ends_with_usage(openai_client):
    plain = chat(openai_client, max_tokens=16, temperature=0)
    chunks = list(chat(openai_client, max_tokens=16, temperature=0, stream=True,
                       stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 16
    assert all(c.usage is None for c in chunks[:-1])
    without_usage = list(chat(openai_client, max_tokens=4, temperature=0, stream=True))
    assert all(c.usage is None for c in without_usage) and without_usage[-1].choices[0].finish_reason == "length"


def test_raw_sse_stream_ends_with_done(server):
    body = {"model": "micro", "messages": MESSAGES, "max_tokens": 3, "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"


def test_stop_strings_end_the_answer_before_them_streamed_or_not(openai_client):
    full = chat(openai_client, max_tokens=40, temperature=0).choices[0].message.content
    stop = full[len(full) // 2:len(full) // 2 + 3]
    expected = full[:full.index(stop)]
    stopped = chat(openai_client, max_tokens=40, temperature=0, stop=[stop, "\x00never"])
    assert stopped.choices[0].message.content == expected and stopped.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].delta.content or "" for c in
                       chat(openai_client, max_tokens=40, temperature=0, stop=stop, stream=True) if c.choices)
    assert streamed == expected


def test_same_seed_same_answer_and_n_choices_differ(openai_client):
    first = chat(openai_client, max_tokens=20, temperature=1.0, seed=1234, n=3)
    again = chat(openai_client, max_tokens=20, temperature=1.0, seed=1234, n=3)
    texts = [c.message.content for c in first.choices]
    assert texts == [c.message.content for c in again.choices]
    assert [c.index for c in first.choices] == [0, 1, 2] and len(set(texts)) == 3
    assert first.usage.completion_tokens == 60
    other = chat(openai_client, max_tokens=20, temperature=1.0, seed=99)
    assert other.choices[0].message.content != texts[0]


def test_logprobs_are_the_models_log_probabilities(openai_client):
    response = chat(openai_client, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3)
    content = response.choices[0].logprobs.content
    assert len(content) == 6 and "".join(t.token for t in content) == response.choices[0].message.content
    for token in content:
        tops = [t.logprob for t in token.top_logprobs]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True) and tops[0] <= 0
        assert token.logprob == pytest.approx(tops[0])  # greedy picks the most likely token
        assert sum(np.exp(tops)) <= 1 + 1e-5


def test_text_completion_with_echo_stop_and_logprobs(openai_client):
    response = openai_client.completions.create(model="micro", prompt="import json\n", max_tokens=8, temperature=0,
                                                echo=True, logprobs=2)
    choice = response.choices[0]
    assert choice.text.startswith("import json\n") and response.object == "text_completion"
    assert len(choice.logprobs.tokens) == 8 and all(len(t) <= 2 for t in choice.logprobs.top_logprobs)
    # seeded, so a sampled end of text cannot cut a choice short on one run and not the next
    batch = openai_client.completions.create(model="micro", prompt=["a = 1\n", "def f():\n"], max_tokens=4, n=2,
                                             seed=0)
    assert [c.index for c in batch.choices] == [0, 1, 2, 3] and batch.usage.completion_tokens == 16
    streamed = list(openai_client.completions.create(model="micro", prompt="x = ", max_tokens=5, temperature=0,
                                                     stream=True, stream_options={"include_usage": True}))
    plain = openai_client.completions.create(model="micro", prompt="x = ", max_tokens=5, temperature=0)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == plain.choices[0].text
    assert streamed[-1].usage.completion_tokens == 5


def test_penalties_and_logit_bias_change_sampling(openai_client, model_dir):
    greedy = chat(openai_client, max_tokens=30, temperature=0).choices[0].message.content
    penalised = chat(openai_client, max_tokens=30, temperature=0, frequency_penalty=2.0,
                     presence_penalty=2.0).choices[0].message.content
    assert penalised != greedy
    forced = chat(openai_client, max_tokens=5, temperature=0, logit_bias={"65": 100}, logprobs=True)
    assert [t.token for t in forced.choices[0].logprobs.content] == [Tokenizer.load(model_dir).decode([65])] * 5


SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "kind": {"enum": ["cat", "dog"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 3},
    },
    "required": ["name", "age", "kind", "tags"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_json_schema_output_validates_even_from_a_random_model(openai_client, seed):
    response = chat(openai_client, max_tokens=200, temperature=1.0, seed=seed, response_format={
        "type": "json_schema", "json_schema": {"name": "pet", "schema": SCHEMA, "strict": True}})
    assert response.choices[0].finish_reason == "stop"
    jsonschema_rs.validator_for(SCHEMA).validate(json.loads(response.choices[0].message.content))


def test_json_object_output_parses(openai_client):
    response = chat(openai_client, max_tokens=120, temperature=1.0, seed=5, response_format={"type": "json_object"})
    assert isinstance(json.loads(response.choices[0].message.content), dict)


WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 10},
                                     "unit": {"enum": ["c", "f"]}},
    "required": ["city", "unit"], "additionalProperties": False}}}
CLOCK = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"type": "string", "maxLength": 8}}, "required": ["zone"],
    "additionalProperties": False}}}


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "get_time"}}])
def test_tool_calls_have_arguments_that_validate(openai_client, tool_choice):
    response = chat(openai_client, max_tokens=120, temperature=1.0, seed=3, tools=[WEATHER, CLOCK],
                    tool_choice=tool_choice)
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, CLOCK)}
    for call in choice.message.tool_calls:
        assert call.id.startswith("call_") and call.type == "function"
        jsonschema_rs.validator_for(schemas[call.function.name]).validate(json.loads(call.function.arguments))
    if isinstance(tool_choice, dict):
        assert {c.function.name for c in choice.message.tool_calls} == {"get_time"}


def test_streamed_tool_call_and_a_tool_result_turn(openai_client):
    chunks = list(chat(openai_client, max_tokens=120, temperature=1.0, seed=4, tools=[WEATHER], tool_choice="required",
                       parallel_tool_calls=False, stream=True))
    pieces = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert pieces[0].id.startswith("call_") and pieces[0].function.name == "get_weather"
    arguments = "".join(p.function.arguments or "" for p in pieces)  # streamed in pieces, as OpenAI does
    jsonschema_rs.validator_for(WEATHER["function"]["parameters"]).validate(json.loads(arguments))
    assert {p.index for p in pieces} == {0} and chunks[-1].choices[0].finish_reason == "tool_calls"
    calls = [pieces[0].model_copy(update={"function": pieces[0].function.model_copy(update={"arguments": arguments})})]
    # the conversation continues with the call and its result, as clients send it back
    follow = chat(openai_client, max_tokens=5, tools=[WEATHER], messages=MESSAGES + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": calls[0].id, "type": "function",
             "function": {"name": "get_weather", "arguments": calls[0].function.arguments}}]},
        {"role": "tool", "tool_call_id": calls[0].id, "content": "{\"temp\": 21}"}])
    without_result = chat(openai_client, max_tokens=5, tools=[WEATHER], messages=MESSAGES)
    # the call and its result reach the model's prompt
    assert follow.usage.prompt_tokens > without_result.usage.prompt_tokens + 10


def test_embeddings_are_unit_vectors_and_deterministic(openai_client):
    response = openai_client.embeddings.create(model="micro", input=["import os", "import os", "x = 1"])
    vectors = np.array([d.embedding for d in response.data])
    assert vectors.shape == (3, 64) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert np.allclose(vectors[0], vectors[1]) and not np.allclose(vectors[0], vectors[2])
    assert response.usage.prompt_tokens > 0
    short = openai_client.embeddings.create(model="micro", input="import os", dimensions=16)
    assert len(short.data[0].embedding) == 16
    encoded = httpx.post(f"{openai_client.base_url}embeddings", json={
        "model": "micro", "input": "import os", "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(encoded["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, vectors[0], atol=1e-6)


def test_models_health_and_metrics(server, openai_client):
    assert [m.id for m in openai_client.models.list().data] == ["micro"]
    assert openai_client.models.retrieve("micro").owned_by == "hepta"
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"
    chat(openai_client, max_tokens=3)
    metrics = httpx.get(f"{server.url}/metrics").text
    for name in ("hepta_requests_total", "hepta_time_to_first_token_seconds_bucket",
                 "hepta_inter_token_latency_seconds_bucket", "hepta_requests_running", "hepta_requests_waiting",
                 "hepta_kv_cache_usage_ratio", "hepta_generation_tokens_per_second", "hepta_generation_tokens_total"):
        assert name in metrics
    count = next(line for line in metrics.splitlines() if line.startswith("hepta_time_to_first_token_seconds_count"))
    assert float(count.split()[-1]) >= 1
