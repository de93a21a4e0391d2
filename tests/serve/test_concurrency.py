"""Many clients at once, and clients that leave: continuous batching seen from outside."""

import asyncio
import time

import httpx
import openai
from conftest import metric, start_server

PROMPTS = [f"def function_{i}(x):\n    return x * {i}\n" for i in range(32)]


def test_32_concurrent_streaming_clients_each_get_their_own_answer(server):
    async def run():
        client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)

        async def one(prompt, stream, max_tokens):
            kwargs = dict(model="micro", prompt=prompt, max_tokens=max_tokens, temperature=0)
            if not stream:
                choice = (await client.completions.create(**kwargs)).choices[0]
                return choice.text, choice.finish_reason
            text, finish = "", None
            async for chunk in await client.completions.create(stream=True, **kwargs):
                text += chunk.choices[0].text
                finish = chunk.choices[0].finish_reason or finish
            return text, finish

        # different lengths, so requests join and leave the running batch at different steps
        lengths = [8 + (i * 7) % 25 for i in range(32)]
        together = await asyncio.gather(*(one(p, True, n) for p, n in zip(PROMPTS, lengths)))
        alone = [await one(p, False, n) for p, n in zip(PROMPTS, lengths)]
        await client.close()
        return together, alone

    together, alone = asyncio.run(run())
    assert together == alone  # greedy: batching changes nothing in any answer
    assert len(set(together)) > 16


def test_a_client_that_disconnects_frees_its_slot_at_once(model_dir):
    server = start_server(model_dir, engine=dict(max_num_seqs=1))
    try:
        body = {"model": "micro", "prompt": "x", "max_tokens": 2000, "stream": True, "temperature": 0}
        with httpx.Client(timeout=30) as http:
            with http.stream("POST", f"{server.url}/v1/completions", json=body) as response:
                lines = response.iter_lines()
                for _ in range(3):
                    next(lines)
        # the only slot was taken by a 2000-token request; the next one is served as soon as it is freed
        started = time.perf_counter()
        after = httpx.post(f"{server.url}/v1/completions", timeout=60, json={
            "model": "micro", "prompt": "y", "max_tokens": 3}).json()
        waited = time.perf_counter() - started
        assert after["usage"]["completion_tokens"] == 3
        generated = metric(server, "hepta_generation_tokens_total")
        assert generated < 1000, f"the abandoned request kept generating ({generated} tokens, {waited:.1f} s)"
        assert metric(server, "hepta_requests_running") == 0
    finally:
        server.stop()
