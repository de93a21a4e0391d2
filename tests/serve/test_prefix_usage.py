"""A repeated system prompt is served from kept prefixes, and the API says so as OpenAI does: usage's cached_tokens
(chat, completions, streamed or not, and /v1/responses) and the Prometheus counter."""

from conftest import client, metric

SYSTEM = "You are a careful assistant who cites the posts used and says so when none answer. " * 4


def ask(openai_client, question, **kwargs):
    return openai_client.chat.completions.create(
        model="micro", max_tokens=4, temperature=0, **kwargs,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}])


def test_the_second_chat_with_the_same_system_prompt_reports_its_cached_tokens(server):
    openai_client = client(server)
    before = metric(server, "hepta_prefix_cache_hit_tokens_total")
    first = ask(openai_client, "What is trending in Lisbon today?")
    second = ask(openai_client, "Who posted first about the storm?")
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert cached >= 128 and cached % 32 == 0 and cached < second.usage.prompt_tokens
    streamed = list(ask(openai_client, "And the third question?", stream=True, stream_options={"include_usage": True}))
    assert streamed[-1].usage.prompt_tokens_details.cached_tokens >= 128  # the system prompt, at least
    assert metric(server, "hepta_prefix_cache_hit_tokens_total") - before == \
        cached + streamed[-1].usage.prompt_tokens_details.cached_tokens


def test_completions_and_responses_report_cached_tokens_too(server):
    openai_client = client(server)
    prompt = SYSTEM + "Question: what happened at the harbour?"
    openai_client.completions.create(model="micro", prompt=prompt, max_tokens=2, temperature=0)
    again = openai_client.completions.create(model="micro", prompt=prompt + " And then?", max_tokens=2, temperature=0)
    assert again.usage.prompt_tokens_details.cached_tokens >= 32
    response = openai_client.responses.create(model="micro", instructions=SYSTEM, input="Summarise the harbour posts.",
                                              max_output_tokens=4, temperature=0)
    again = openai_client.responses.create(model="micro", instructions=SYSTEM, input="Summarise the rain posts.",
                                           max_output_tokens=4, temperature=0)
    assert response.usage.input_tokens_details.cached_tokens <= again.usage.input_tokens_details.cached_tokens
    assert again.usage.input_tokens_details.cached_tokens >= 32


def test_a_server_without_a_prefix_cache_reports_none(model_dir):
    from conftest import start_server

    server = start_server(model_dir, engine={"prefix_cache_bytes": 0})
    try:
        openai_client = client(server)
        ask(openai_client, "What is trending?")
        assert ask(openai_client, "What else?").usage.prompt_tokens_details.cached_tokens == 0
    finally:
        server.stop()
