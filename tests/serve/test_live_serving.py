"""Answers grounded in the post store: search_parameters in, posts in the prompt, citations out."""

import httpx
import pytest
from conftest import client, start_server


QUESTION = [{"role": "user", "content": "What are people saying about the rocket launch today?"}]


@pytest.fixture(scope="module")
def live_server(model_dir, live_db):
    server = start_server(model_dir, live_db=str(live_db))
    yield server
    server.stop()


def test_search_parameters_put_posts_in_the_prompt_and_return_citations(live_server):
    c = client(live_server)
    plain = c.chat.completions.create(model="micro", messages=QUESTION, max_tokens=3)
    grounded = c.chat.completions.create(model="micro", messages=QUESTION, max_tokens=3, extra_body={
        "search_parameters": {"mode": "on", "max_search_results": 5}})
    citations = grounded.model_extra["citations"]
    assert 1 <= len(citations) <= 5 and all(u.startswith("https://x.com/i/status/") for u in citations)
    assert grounded.usage.model_extra["num_sources_used"] == len(citations)
    assert grounded.usage.prompt_tokens > plain.usage.prompt_tokens + 50  # the posts are in the prompt
    # the same posts as the search endpoint finds for that question
    found = httpx.get(f"{live_server.url}/v1/posts/search", params={
        "query": QUESTION[0]["content"], "max_search_results": 5}).json()
    assert [p["url"] for p in found["posts"]] == citations


def test_citations_arrive_in_the_last_streamed_chunk_and_auto_mode_decides(live_server):
    c = client(live_server)
    chunks = list(c.chat.completions.create(model="micro", messages=QUESTION, max_tokens=3, stream=True, extra_body={
        "search_parameters": {"mode": "on", "return_citations": True}}))
    assert chunks[-1].choices == [] and chunks[-1].model_extra["citations"]
    assert all("citations" not in (ch.model_extra or {}) for ch in chunks[:-1])
    timeless = [{"role": "user", "content": "Write a function that adds two numbers."}]
    auto = c.chat.completions.create(model="micro", messages=timeless, max_tokens=2,
                                     extra_body={"search_parameters": {"mode": "auto"}})
    assert "citations" not in (auto.model_extra or {})  # nothing recent asked: no search
    auto = c.chat.completions.create(model="micro", messages=QUESTION, max_tokens=2,
                                     extra_body={"search_parameters": {"mode": "auto"}})
    assert auto.model_extra["citations"]


def test_search_filters_hold_and_bad_parameters_are_400(live_server):
    c = client(live_server)
    found = httpx.get(f"{live_server.url}/v1/posts/search", params={"query": "launch", "min_likes": 1000}).json()
    assert found["posts"] and all(p["like_count"] >= 1000 for p in found["posts"])
    import openai

    with pytest.raises(openai.BadRequestError) as caught:
        c.chat.completions.create(model="micro", messages=QUESTION, extra_body={"search_parameters": {
            "mode": "on", "sources": [{"type": "x", "included_x_handles": ["a"], "excluded_x_handles": ["b"]}]}})
    assert caught.value.body["param"] == "search_parameters" and "together" in caught.value.body["message"]


def test_trends_opinion_and_accounts_endpoints(live_server):
    url = live_server.url
    report = httpx.get(f"{url}/v1/trends", params={"window": "6h"}).json()
    assert report["num_posts"] > 0 and "trends" in report
    opinion = httpx.get(f"{url}/v1/opinion", params={"topic": "rocket launch"}).json()
    assert opinion["num_posts"] > 0 and abs(sum(opinion["shares"].values()) - 1) < 1e-6
    handle = httpx.get(f"{url}/v1/posts/search", params={"query": "launch"}).json()["posts"][0]["username"]
    accounts = httpx.get(f"{url}/v1/accounts", params={"handles": handle}).json()
    assert accounts["data"][0]["username"] == handle and accounts["data"][0]["num_posts"] >= 1
    assert httpx.get(f"{url}/v1/trends", params={"window": "soon"}).status_code == 400
