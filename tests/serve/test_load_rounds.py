"""Rounds of load as a new user makes them: `hepta serve` on a trained model, the real `openai` client,
streamed /v1/completions, one client then sixteen at once, with idle gaps between.

Every stream must end with a finish_reason within its timeout; a stream that stalls is the bug
this guards against (the engine idle, the client waiting for its last chunk forever).
"""

import asyncio
import json
import random
import re
import subprocess
import sys

import httpx
import openai
import pytest
from helpers import micro_set_flags, run_cli

from hepta.serve.runner import free_port, wait_healthy

ROUNDS = 2  # a gap inside each round and one between them
IDLE_S = 6.0  # longer than uvicorn's 5 s keep-alive: the server closes the pooled connections in each gap
STREAM_TIMEOUT_S = 15.0
CONCURRENT_CLIENTS, CONCURRENT_REQUESTS = 16, 32
# the trained model ends its answers at EOS after a few tokens or on the first one; every third request
# is cut by max_tokens instead, so sequences leave the batch at many different steps
MAX_TOKENS, SHORT_MAX_TOKENS = 64, 2
PROMPTS = ["The cat", "A dog sleeps", "The server runs quickly.", "x", "def parse(s):", "Hello, my name is",
           "A request waits", "Once upon a time", "del x\n", "    return result\n", "The quick brown fox", "email"]


def _sentences(count: int, seed: int = 0) -> list[str]:
    """One short sentence per document, so a model learns within tens of steps to end its answer."""
    rng = random.Random(seed)
    subjects = ["the cat", "a dog", "my friend", "the server", "our model", "the client", "a request", "the engine"]
    verbs = ["runs", "sleeps", "answers", "waits", "streams", "finishes", "stalls", "reads"]
    objects = ["quickly", "all day long in the sun", "in the garden", "at night", "without a single word to anyone",
               "every time", "on the roof", "for a while"]
    return [f"{rng.choice(subjects).capitalize()} {rng.choice(verbs)} {rng.choice(objects)}." for _ in range(count)]


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("load")
    data = folder / "sentences.jsonl"
    data.write_text("".join(json.dumps({"text": text}) + "\n" for text in _sentences(4000)))
    proc = run_cli("train", "--out", str(folder / "model"), "--data", str(data), *micro_set_flags(), "--steps", "60",
                   "--batch-size", "8", "--seq-len", "64", "--save-every", "60", "--eval-every", "60", "--quiet")
    assert proc.returncode == 0, proc.stderr
    return folder / "model"


@pytest.fixture(scope="module")
def served(trained_dir, tmp_path_factory):
    """`hepta serve` in its own process, as users start it; yields its URL and its log file."""
    port = free_port()
    log = tmp_path_factory.mktemp("load-log") / "serve.log"
    with open(log, "w") as sink:
        process = subprocess.Popen([sys.executable, "-m", "hepta", "serve", "--model", str(trained_dir),
                                    "--port", str(port), "--name", "micro"], stderr=sink, stdout=sink)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", timeout=120, process=process)
        yield f"http://127.0.0.1:{port}", log
    finally:
        process.terminate()
        process.wait(timeout=30)


async def _stream(client: openai.AsyncOpenAI, i: int) -> str:
    """The finish_reason of one streamed completion; 'stalled' when it does not end within the timeout."""
    async def read() -> str | None:
        finish = None
        async for chunk in await client.completions.create(model="micro", prompt=PROMPTS[i % len(PROMPTS)],
                                                          max_tokens=MAX_TOKENS if i % 3 else SHORT_MAX_TOKENS,
                                                          temperature=0, stream=True):
            if chunk.choices:
                finish = chunk.choices[0].finish_reason or finish
        return finish

    try:
        return await asyncio.wait_for(read(), STREAM_TIMEOUT_S) or "no finish_reason"
    except (asyncio.TimeoutError, openai.APITimeoutError):
        return "stalled"


def _unfinished(finishes) -> int:
    return sum(f not in ("stop", "length") for f in finishes)


async def _rounds(url: str) -> list[dict]:
    def new_client() -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=STREAM_TIMEOUT_S)

    lone = new_client()
    crowd = [new_client() for _ in range(CONCURRENT_CLIENTS)]  # kept across rounds, as long-lived clients are
    results = []
    for round_index in range(ROUNDS):
        sequential = [await _stream(lone, i) for i in range(3)]
        await asyncio.sleep(IDLE_S)
        pending = list(range(CONCURRENT_REQUESTS))
        concurrent: dict[int, str] = {}

        async def one_client(client: openai.AsyncOpenAI) -> None:
            while pending:  # each client sends its next request as soon as its last one ended
                i = pending.pop(0)
                concurrent[i] = await _stream(client, i)

        await asyncio.gather(*(one_client(client) for client in crowd))
        gauges = httpx.get(f"{url}/metrics").text
        results.append({"round": round_index, "sequential": sequential, "concurrent": concurrent,
                        "running": re.search(r"^hepta_requests_running (\S+)$", gauges, re.M).group(1),
                        "waiting": re.search(r"^hepta_requests_waiting (\S+)$", gauges, re.M).group(1)})
        if _unfinished(sequential) or _unfinished(concurrent.values()):
            break  # one round shows the failure; more would only multiply the timeouts
        if round_index < ROUNDS - 1:
            await asyncio.sleep(IDLE_S)
    for client in [lone, *crowd]:
        await client.close()
    return results


def test_rounds_of_one_and_sixteen_streaming_clients_all_finish(served):
    url, log = served
    results = asyncio.run(_rounds(url))
    finishes = [f for r in results for f in r["sequential"] + list(r["concurrent"].values())]
    stalled = [f"round {r['round']}: {_unfinished(r['concurrent'].values())} of {CONCURRENT_REQUESTS} concurrent and "
               f"{_unfinished(r['sequential'])} of 3 sequential streams (then {r['running']} running, "
               f"{r['waiting']} waiting)" for r in results
               if _unfinished(r["sequential"]) or _unfinished(r["concurrent"].values())]
    assert not stalled, (f"{_unfinished(finishes)} of {len(finishes)} streams did not finish within "
                         f"{STREAM_TIMEOUT_S:.0f} s; " + "; ".join(stalled))
    assert len(finishes) == ROUNDS * (3 + CONCURRENT_REQUESTS)
    # the load this test means: answers ended by EOS (some at the first token) next to ones cut by max_tokens
    assert finishes.count("stop") > 0 and finishes.count("length") > 0, finishes
    assert "Traceback" not in log.read_text()
