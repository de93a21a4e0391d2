"""Every failure answers in OpenAI's error shape with the status clients branch on."""

import threading
import time

import httpx
import openai
import pytest
from conftest import client, metric, start_server
from helpers import never_end

from hepta.loading import load_tokenizer
from hepta.serve.keys import KeyStore

MESSAGES = [{"role": "user", "content": "hi"}]


def error_of(call):
    with pytest.raises(openai.APIStatusError) as caught:
        call()
    body = caught.value.body
    assert set(body) == {"message", "type", "param", "code"}, body  # the client unwraps {"error": ...}
    return caught.value.status_code, body, caught.value.response.headers


def test_invalid_fields_are_400_naming_the_field(openai_client):
    cases = [
        (dict(temperature=3), "temperature"),
        (dict(top_p=0), "top_p"),
        (dict(n=0), "n"),
        (dict(max_tokens=0), "max_tokens"),
        (dict(stop=["a", "b", "c", "d", "e"]), "stop"),
        (dict(messages=[{"role": "wizard", "content": "x"}]), "messages[0].role"),
        (dict(messages=[]), "messages"),
        (dict(logprobs=False, top_logprobs=3), None),
        (dict(top_logprobs=30, logprobs=True), "top_logprobs"),
        (dict(response_format={"type": "json_schema"}), "response_format"),
        (dict(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}),
         "response_format.json_schema.schema"),
        (dict(tool_choice="required"), "tool_choice"),
        (dict(logit_bias={"not-a-token": 5}), "logit_bias"),
        (dict(n=1000), "n"),
    ]
    for overrides, param in cases:
        status, body, _ = error_of(lambda: openai_client.chat.completions.create(
            **{"model": "micro", "messages": MESSAGES, "max_tokens": 2, **overrides}))
        assert status == 400 and body["type"] == "invalid_request_error", (overrides, body)
        if param:
            assert body["param"] == param, (overrides, body)
            assert param in body["message"], (overrides, body)  # the sentence names the field too


def test_malformed_bodies_are_400_not_500(server):
    url = f"{server.url}/v1/chat/completions"
    for content, headers in [(b"{not json", {"content-type": "application/json"}), (b"[1, 2]", {}),
                             (b"", {"content-type": "application/json"}), (b"\xff\xfe", {})]:
        response = httpx.post(url, content=content, headers=headers)
        assert response.status_code == 400 and "error" in response.json(), (content, response.text)
    assert httpx.post(f"{server.url}/v1/nope", json={}).status_code == 404
    assert httpx.get(url).status_code == 405


def test_unknown_model_is_404(openai_client):
    status, body, _ = error_of(lambda: openai_client.chat.completions.create(model="gpt-9", messages=MESSAGES))
    assert status == 404 and body["code"] == "model_not_found" and body["param"] == "model"


def test_prompt_past_the_context_is_context_length_exceeded(openai_client):
    status, body, _ = error_of(lambda: openai_client.chat.completions.create(
        model="micro", messages=[{"role": "user", "content": "word " * 3000}]))
    assert status == 400 and body["code"] == "context_length_exceeded"
    status, body, _ = error_of(lambda: openai_client.completions.create(model="micro", prompt="a", max_tokens=5000))
    assert status == 400 and body["code"] == "context_length_exceeded" and "2048" in body["message"]


def test_live_search_on_without_a_store_names_the_missing_feature(openai_client):
    status, body, _ = error_of(lambda: openai_client.chat.completions.create(
        model="micro", messages=MESSAGES, extra_body={"search_parameters": {"mode": "on"}}))
    assert status == 400 and body["param"] == "search_parameters.mode" and "--live-db" in body["message"]
    # auto without a store simply answers
    assert openai_client.chat.completions.create(model="micro", messages=MESSAGES, max_tokens=2, extra_body={
        "search_parameters": {"mode": "auto"}}).choices


@pytest.fixture(scope="module")
def keyed(model_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("keys") / "keys.db"
    store = KeyStore(path, create=True)
    open_key = store.add("open")
    limited = store.add("limited", rpm=2, tpm=None)
    store.close()
    server = start_server(model_dir, api_keys=str(path))
    yield server, open_key, limited, path
    server.stop()


def test_api_keys_401_for_missing_or_wrong_and_usage_is_recorded(keyed, model_dir):
    server, open_key, _, path = keyed
    status, body, _ = error_of(lambda: client(server, api_key="hk-wrong").chat.completions.create(
        model="micro", messages=MESSAGES))
    assert status == 401 and body["code"] == "invalid_api_key"
    assert httpx.get(f"{server.url}/v1/models").status_code == 401
    response = client(server, api_key=open_key).chat.completions.create(model="micro", messages=MESSAGES, max_tokens=3,
                                                                        logit_bias=never_end(model_dir))
    store = KeyStore(path)
    usage = {u.name: u for u in store.usage()}["open"]
    assert usage.requests == 1 and usage.completion_tokens == 3
    assert usage.prompt_tokens == response.usage.prompt_tokens


def test_rate_limit_is_429_with_retry_after_and_ratelimit_headers(keyed):
    server, _, limited, _ = keyed
    c = client(server, api_key=limited)
    ok = c.chat.completions.with_raw_response.create(model="micro", messages=MESSAGES, max_tokens=2)
    assert ok.headers["x-ratelimit-limit-requests"] == "2"
    c.chat.completions.create(model="micro", messages=MESSAGES, max_tokens=2)
    status, body, headers = error_of(lambda: c.chat.completions.create(model="micro", messages=MESSAGES, max_tokens=2))
    assert status == 429 and body["code"] == "rate_limit_exceeded"
    assert int(headers["retry-after"]) >= 1 and headers["x-ratelimit-remaining-requests"] == "0"
    assert "x-ratelimit-reset-requests" in headers


def test_health_is_503_while_loading_and_requests_get_503(model_dir):
    from hepta.loading import load, load_tokenizer
    from hepta.serve.app import ServeConfig, create_app
    from hepta.serve.runner import BackgroundServer

    release = threading.Event()

    def slow_loader():
        release.wait(30)
        return load(model_dir), load_tokenizer(model_dir)

    app = create_app(ServeConfig(model=str(model_dir), model_name="micro"), loader=slow_loader)
    with BackgroundServer(app) as server:
        assert httpx.get(f"{server.url}/health").status_code == 503
        status, body, headers = error_of(lambda: client(server).chat.completions.create(model="micro",
                                                                                        messages=MESSAGES))
        assert status == 503 and body["code"] == "model_loading" and headers["retry-after"]
        release.set()
        server.wait_ready()
        assert client(server).chat.completions.create(model="micro", messages=MESSAGES, max_tokens=2).choices


def test_a_full_queue_is_refused_with_503_not_queued_without_bound(model_dir):
    server = start_server(model_dir, engine=dict(max_num_seqs=1, max_queue=1))
    try:
        c = client(server)
        results = []
        never_end = {str(t): -100 for t in load_tokenizer(model_dir).stop_ids}  # both run until the 503 is seen

        def long_request():
            try:
                results.append(c.completions.create(model="micro", prompt="x", max_tokens=1500,
                                                    logit_bias=never_end).usage)
            except openai.APIStatusError as e:
                results.append(e.status_code)

        threads = [threading.Thread(target=long_request) for _ in range(2)]  # one runs, one waits
        for t in threads:
            t.start()
            deadline = time.monotonic() + 30
            while metric(server, "hepta_requests_running") + metric(server, "hepta_requests_waiting") < len(
                    [x for x in threads if x.is_alive()]) and time.monotonic() < deadline:
                time.sleep(0.01)
        status, body, headers = error_of(lambda: c.completions.create(model="micro", prompt="x", max_tokens=2))
        assert status == 503 and body["code"] == "server_overloaded" and headers["retry-after"] == "1"
        for t in threads:
            t.join()
        assert all(not isinstance(r, int) for r in results)  # the queued ones were served
    finally:
        server.stop()
