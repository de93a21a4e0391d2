"""/v1/responses through the real `openai` client: create, stream with the documented events, tools round trip,
stored responses continued, read and deleted, x_search over the live store with citations."""

import json

import httpx
import openai
import pytest

from conftest import client, start_server


@pytest.fixture(scope="module")
def api(model_dir):
    server = start_server(model_dir)
    yield client(server)
    server.stop()


def test_create_takes_a_string_or_messages_with_instructions_and_limits(api):
    response = api.responses.create(model="micro", input="def hello(", max_output_tokens=6, temperature=0,
                                    instructions="Write Python.")
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == 6 and response.output_text
    assert [item.type for item in response.output] == ["message"]
    same = api.responses.create(model="micro", max_output_tokens=6, temperature=0, instructions="Write Python.",
                                input=[{"role": "user", "content": [{"type": "input_text", "text": "def hello("}]}])
    assert same.output_text == response.output_text  # the same chat either way
    assert same.usage.input_tokens == response.usage.input_tokens


# the city is one of two, so a forced call of this untrained model ends well within its token budget
TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}},
                         "required": ["city"], "additionalProperties": False}}]


def test_streams_follow_the_documented_event_order(api):
    with api.responses.stream(model="micro", input="import os", max_output_tokens=5, temperature=0) as stream:
        events = list(stream)
    kinds = [event.type for event in events]
    assert kinds[:5] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added", "response.output_text.delta"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.incomplete"]  # max_output_tokens reached
    assert [e.sequence_number for e in events] == list(range(len(events)))
    whole = api.responses.create(model="micro", input="import os", max_output_tokens=5, temperature=0)
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == whole.output_text
    # a forced tool call ends the answer: response.completed, with the call's arguments streamed
    with api.responses.stream(model="micro", input="Weather in Paris?", tools=TOOLS, tool_choice="required",
                              max_output_tokens=150, temperature=0) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[-3:] == ["response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    assert "response.function_call_arguments.delta" in kinds
    assert final.output[-1].type == "function_call" and final.output[-1].name == "get_weather"


def test_a_function_tool_round_trip_continues_a_stored_response(api):
    first = api.responses.create(model="micro", input="What is the weather in Paris?", tools=TOOLS,
                                 tool_choice="required", max_output_tokens=150, temperature=0)
    calls = [item for item in first.output if item.type == "function_call"]
    assert calls and calls[0].name == "get_weather" and "city" in json.loads(calls[0].arguments)
    second = api.responses.create(model="micro", previous_response_id=first.id, tools=TOOLS, max_output_tokens=4,
                                  input=[{"type": "function_call_output", "call_id": calls[0].call_id,
                                          "output": json.dumps({"temperature_c": 18})}])
    assert second.previous_response_id == first.id and second.output_text is not None
    assert second.usage.input_tokens > first.usage.input_tokens  # the first turn's input, call and result came along
    assert api.responses.retrieve(second.id).id == second.id
    assert api.responses.delete(second.id) is None
    with pytest.raises(openai.NotFoundError, match="not found"):
        api.responses.retrieve(second.id)


def test_json_schema_output_and_bad_input_get_400s(api):
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": False}
    response = api.responses.create(model="micro", input="a number", max_output_tokens=30, temperature=0,
                                    text={"format": {"type": "json_schema", "name": "n", "schema": schema, "strict": True}})
    assert isinstance(json.loads(response.output_text)["n"], int)
    with pytest.raises(openai.BadRequestError, match="web_search"):
        api.responses.create(model="micro", input="hi", tools=[{"type": "web_search"}])
    with pytest.raises(openai.NotFoundError, match="Previous response"):
        api.responses.create(model="micro", input="hi", previous_response_id="resp_missing")


def test_x_search_grounds_the_answer_in_posts_and_cites_them(model_dir, live_db):
    server = start_server(model_dir, live_db=str(live_db))
    try:
        api = client(server)
        question = "What are people saying about the rocket launch today?"
        plain = api.responses.create(model="micro", input=question, max_output_tokens=3)
        grounded = api.responses.create(model="micro", input=question, max_output_tokens=3, tools=[{"type": "x_search"}])
        search, message = grounded.output
        assert search.type == "x_search_call" and search.action["query"] == question
        urls = [a.url for a in message.content[0].annotations]
        assert urls and all(u.startswith("https://x.com/i/status/") for u in urls)
        assert [s["url"] for s in search.action["sources"]] == urls
        assert grounded.usage.model_extra["num_sources_used"] == len(urls)
        assert grounded.usage.input_tokens > plain.usage.input_tokens + 50  # the posts are in the prompt
        # the same posts as chat completions' search_parameters (xAI's older form) finds
        chat = api.chat.completions.create(model="micro", messages=[{"role": "user", "content": question}],
                                           max_tokens=2, extra_body={"search_parameters": {"mode": "on"}})
        assert chat.model_extra["citations"] == urls
        found = httpx.get(f"{server.url}/v1/posts/search", params={"query": question}).json()["posts"]
        handle = found[-1]["username"]
        only = api.responses.create(model="micro", input=question, max_output_tokens=2,
                                    tools=[{"type": "x_search", "allowed_x_handles": [handle]}])
        kept = [a.url for a in only.output[1].content[0].annotations]
        assert kept and set(kept) == {p["url"] for p in found if p["username"] == handle} & set(kept)
    finally:
        server.stop()


def test_a_key_sees_only_its_own_stored_responses(model_dir, tmp_path):
    from hepta.serve.keys import KeyStore

    with KeyStore(tmp_path / "keys.db", create=True) as keys:
        alice, bob = keys.add("alice"), keys.add("bob")
    server = start_server(model_dir, api_keys=str(tmp_path / "keys.db"))
    try:
        mine = client(server, api_key=alice).responses.create(model="micro", input="hi", max_output_tokens=2)
        assert client(server, api_key=alice).responses.retrieve(mine.id).id == mine.id
        theirs = client(server, api_key=bob)
        with pytest.raises(openai.NotFoundError):
            theirs.responses.retrieve(mine.id)
        with pytest.raises(openai.NotFoundError):
            theirs.responses.delete(mine.id)
        with pytest.raises(openai.NotFoundError):
            theirs.responses.create(model="micro", input="and?", previous_response_id=mine.id)
        unstored = client(server, api_key=alice).responses.create(model="micro", input="hi", max_output_tokens=2,
                                                                  store=False)
        with pytest.raises(openai.NotFoundError):
            client(server, api_key=alice).responses.retrieve(unstored.id)
    finally:
        server.stop()


def test_a_stream_that_fails_ends_with_response_failed(api, monkeypatch):
    from hepta.serve import responses_api
    from hepta.serve.errors import APIError

    def fail(event, engine):  # the engine gives up after the stream has begun
        raise APIError(500, "the engine stopped in the middle of the answer", code="engine_failed")

    monkeypatch.setattr(responses_api, "token_count", fail)
    with api.responses.stream(model="micro", input="hello", max_output_tokens=4) as stream:
        events = list(stream)
    assert [e.type for e in events[:2]] == ["response.created", "response.in_progress"]
    assert events[-1].type == "response.failed"
    assert events[-1].response.error.message == "the engine stopped in the middle of the answer"


def test_parts_other_models_read_reach_the_chat_path(api):
    audio = [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}]}]
    with pytest.raises(openai.BadRequestError, match="reads text only"):  # this text model says what it reads
        api.responses.create(model="micro", input=audio, max_output_tokens=2)
    with pytest.raises(openai.BadRequestError, match="input_file"):
        api.responses.create(model="micro", max_output_tokens=2,
                             input=[{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}])
