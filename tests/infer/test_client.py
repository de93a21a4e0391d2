"""The engine client and core: every event of every request crosses the connection, in order, once."""

import asyncio

import pytest
import torch

from hepta.infer.client import EngineClient
from hepta.infer.embeddings import pooled_embeddings
from hepta.infer.engine import Engine, EngineConfig, QueueFull, generate
from hepta.infer.request import Request
from hepta.infer.sampling import SamplingParams
from helpers import engine_model_and_tokenizer

GREEDY = SamplingParams(temperature=0)


@pytest.fixture(scope="module")
def model_and_tokenizer(corpus):
    return engine_model_and_tokenizer(corpus)


def with_client(model_and_tokenizer, config: EngineConfig, body):
    """Runs `await body(client)` against an engine core on a thread, over the real pipe protocol."""
    async def main():
        loop = asyncio.get_running_loop()
        client = await asyncio.to_thread(EngineClient.in_thread, *model_and_tokenizer, config, loop)
        try:
            return await body(client)
        finally:
            await asyncio.to_thread(client.stop)
    return asyncio.run(main())


async def answer(client: EngineClient, request: Request) -> list:
    """Every event of `request`, in arrival order, until each choice has its final one."""
    events, done = [], asyncio.Event()
    finals = set()

    def sink(event):
        events.append(event)
        if event.finish_reason:
            finals.add(event.index)
            if len(finals) == request.n:
                done.set()

    request.sink = sink
    await client.submit(request)
    await asyncio.wait_for(done.wait(), 60)
    return events


def test_requests_through_the_client_get_what_the_engine_gives_in_process(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    shapes = [(tokenizer.encode_prompt(f"def f{i}(x):\n"), 4 + 3 * i, 1 + i % 2) for i in range(10)]
    engine = Engine(model, tokenizer, EngineConfig(max_num_seqs=4)).start()
    try:
        expected = [[c.text for c in generate(engine, Request(ids, m, GREEDY, n=n), timeout=60)] for ids, m, n in shapes]
    finally:
        engine.stop()

    async def body(client):
        # more choices than slots: some requests wait, all join and leave the batch at different steps
        results = await asyncio.gather(*(answer(client, Request(ids, m, GREEDY, n=n)) for ids, m, n in shapes))
        assert client.num_requests_running == 0 and client.num_waiting == 0 and not client._open
        return results

    results = with_client(model_and_tokenizer, EngineConfig(max_num_seqs=4), body)
    for (_, max_tokens, n), events, texts in zip(shapes, results, expected):
        got = ["".join(e.text for e in events if e.index == i) for i in range(n)]
        assert got == texts
        for i in range(n):
            mine = [e for e in events if e.index == i]
            assert [e.finish_reason is not None for e in mine] == [False] * (len(mine) - 1) + [True]


def test_a_cancelled_request_ends_with_its_final_event_even_while_waiting(model_and_tokenizer):
    _, tokenizer = model_and_tokenizer

    async def body(client):
        never_end = {token: -100.0 for token in client.end_ids}  # so only the cancel can end them
        running, waiting = (Request(tokenizer.encode(p), 200, GREEDY, logit_bias=never_end) for p in ("x", "y"))
        first = asyncio.Event()
        seen = {running.id: [], waiting.id: []}
        for request in (running, waiting):
            request.sink = lambda event, r=request: (seen[r.id].append(event), first.set())
        await client.submit(running)
        await client.submit(waiting)
        await asyncio.wait_for(first.wait(), 30)
        assert client.num_requests_running == 1 and client.num_waiting == 1
        client.cancel(waiting)
        client.cancel(running)
        for _ in range(3000):
            if not client._open:
                break
            await asyncio.sleep(0.01)
        assert not client._open, "the client still holds a cancelled request"
        return seen[running.id], seen[waiting.id]

    running_events, waiting_events = with_client(model_and_tokenizer, EngineConfig(max_num_seqs=1), body)
    assert [e.finish_reason for e in waiting_events] == ["cancelled"]  # never admitted, still ended
    assert running_events[-1].finish_reason == "cancelled" and len(running_events) < 200


def test_a_full_queue_is_refused_by_submit_and_embeddings_run_between_steps(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    inputs = [tokenizer.encode("hello world"), tokenizer.encode("x")]

    async def body(client):
        decoding = asyncio.Event()  # the first request holds the one slot (on a slow host it may still be queued)
        await client.submit(Request(tokenizer.encode("x"), 200, GREEDY, sink=lambda event: decoding.set()))
        await asyncio.wait_for(decoding.wait(), 60)
        await client.submit(Request(tokenizer.encode("y"), 200, GREEDY))
        with pytest.raises(QueueFull):
            await client.submit(Request(tokenizer.encode("z"), 4, GREEDY))
        return await client.embed(inputs, 16)  # while a request decodes

    vectors = with_client(model_and_tokenizer, EngineConfig(max_num_seqs=1, max_queue=1), body)
    assert torch.allclose(torch.from_numpy(vectors), pooled_embeddings(model, inputs, 16))
