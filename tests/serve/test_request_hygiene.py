"""Oversized requests are refused before they cost the server: bodies over --max-body-mb unread with a 413, and
prompts sure to exceed the context before they are tokenized."""

import json

import httpx
import openai
import pytest

from conftest import client, start_server


@pytest.fixture(scope="module")
def small_limit_server(model_dir):
    server = start_server(model_dir, max_body_mb=1)
    yield server
    server.stop()


def test_a_body_over_the_limit_gets_a_413_naming_it_whether_its_length_is_announced_or_not(small_limit_server):
    url = f"{small_limit_server.url}/v1/chat/completions"
    # 8 MB, well past the socket buffers: the client, still uploading, gets the 413 and not a broken connection
    body = json.dumps({"model": "micro", "messages": [{"role": "user", "content": "x" * (8 << 20)}]}).encode()
    announced = httpx.post(url, content=body, headers={"content-type": "application/json"})
    assert announced.status_code == 413
    assert announced.json()["error"]["code"] == "request_too_large" and "1 MB" in announced.json()["error"]["message"]

    def chunks():  # no Content-Length: counted as it arrives
        for start in range(0, len(body), 64 << 10):
            yield body[start:start + (64 << 10)]

    streamed = httpx.post(url, content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    with pytest.raises(openai.APIStatusError, match="larger than this server's limit"):
        client(small_limit_server).chat.completions.create(model="micro", max_tokens=1,
                                                           messages=[{"role": "user", "content": "y" * (2 << 20)}])
    # the server goes on answering
    assert client(small_limit_server).chat.completions.create(
        model="micro", messages=[{"role": "user", "content": "hi"}], max_tokens=2).choices[0].message.content is not None


def test_a_prompt_sure_to_exceed_the_context_is_refused_before_it_is_tokenized(small_limit_server, monkeypatch):
    from hepta.serve import generation

    def never(*args, **kwargs):
        raise AssertionError("the prompt was tokenized")

    monkeypatch.setattr(generation, "chat_prompt_ids", never)
    monkeypatch.setattr(generation, "completion_prompts", never)
    api = client(small_limit_server)
    long_text = "import os\n" * 60000  # 600 kB: under the body limit, far over a 2,048-token context
    with pytest.raises(openai.BadRequestError, match="at least .* tokens .* context of 2,048"):
        api.chat.completions.create(model="micro", messages=[{"role": "user", "content": long_text}], max_tokens=1)
    with pytest.raises(openai.BadRequestError, match="at least .* tokens"):
        api.completions.create(model="micro", prompt=long_text, max_tokens=1)
