"""Time to first token with a shared system prompt and with a conversation's history, prefix cache on and off.

    .venv/bin/python benchmarks/prefix_cache.py [--rounds 5] [--system 2000] [--clients 16] [--json results.json]

Two in-process Engines on the `tiny` preset (random weights, context 4,096), one keeping prompt prefixes (the
default) and one with prefix_cache_bytes=0, measured in turn each round:
  one     a --system-token system prompt + a 24-token question, one request at a time (the system prompt was
          seen once before): median time to first token
  burst   --clients such requests with different questions at once: p99 time to first token
  turns   a conversation of 6 turns, each prompt the whole history so far (answers of 32 tokens) plus a new
          24-token message: median time to first token of turns 2-6
Reported: medians over rounds, and each ratio of off over on.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from pathlib import Path

import torch

from hepta.infer.engine import Engine, EngineConfig
from hepta.infer.request import Request
from hepta.infer.sampling import SamplingParams
from _shapes import long_context_tiny

GREEDY = SamplingParams(temperature=0.0)


def answers(engine: Engine, prompts: list[list[int]], max_tokens: int, end_ids: list[int]) -> list[tuple[float, list]]:
    """Submits all `prompts` at once; (seconds to its first token, its tokens) for each (end tokens banned)."""
    firsts, tokens, done = [None] * len(prompts), [[] for _ in prompts], threading.Semaphore(0)
    no_end = {i: -100.0 for i in end_ids}

    def sink(i, start):
        def put(event):
            if firsts[i] is None:
                firsts[i] = time.perf_counter() - start
            tokens[i] += event.token_ids
            if event.finish_reason:
                done.release()
        return put

    for i, ids in enumerate(prompts):
        engine.submit(Request(ids, max_tokens, GREEDY, logit_bias=no_end, sink=sink(i, time.perf_counter())))
    for _ in prompts:
        assert done.acquire(timeout=600)
    return list(zip(firsts, tokens))


def words(generator: torch.Generator, n: int) -> list[int]:
    return torch.randint(0, 200, (n,), generator=generator).tolist()


def one_round(engine: Engine, system: list[int], clients: int, seed: int, end_ids: list[int]) -> dict:
    generator = torch.Generator().manual_seed(seed)
    answers(engine, [system + words(generator, 24)], 1, end_ids)  # the system prompt, seen once
    one = [answers(engine, [system + words(generator, 24)], 1, end_ids)[0][0] for _ in range(5)]
    burst = sorted(t for t, _ in answers(engine, [system + words(generator, 24) for _ in range(clients)], 1, end_ids))
    history, turns = system[:], []
    for _ in range(6):
        history += words(generator, 24)
        ((first, tokens),) = answers(engine, [history], 32, end_ids)
        turns.append(first)
        history += tokens
    return {"one": statistics.median(one), "burst_p99": burst[int(0.99 * (len(burst) - 1))],
            "turns": statistics.median(turns[1:]), "history": len(history)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--system", type=int, default=2000, help="system prompt tokens")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--json")
    args = parser.parse_args()
    model, tokenizer = long_context_tiny()
    end_ids = sorted(tokenizer.stop_ids)
    system = words(torch.Generator().manual_seed(1), args.system)
    engines = {"on": Engine(model, tokenizer, EngineConfig(max_num_seqs=args.clients)).start(),
               "off": Engine(model, tokenizer, EngineConfig(max_num_seqs=args.clients, prefix_cache_bytes=0)).start()}
    try:
        for engine in engines.values():  # warm-up
            answers(engine, [system[:256]], 1, end_ids)
        rows = {name: [] for name in engines}
        for r in range(args.rounds):
            for name, engine in engines.items():
                rows[name].append(one_round(engine, system, args.clients, seed=100 + r, end_ids=end_ids))
    finally:
        for engine in engines.values():
            engine.stop()
    results = {}
    for name, runs in rows.items():
        results[name] = {key: statistics.median(r[key] for r in runs) for key in ("one", "burst_p99", "turns")}
    print(f"tiny preset, {torch.get_num_threads()} threads; system prompt {args.system} tokens + 24-token questions; "
          f"conversations of 6 turns to {rows['on'][0]['history']} tokens; medians of {args.rounds} rounds")
    print(f"{'':10}{'one TTFT':>12}{f'p99 TTFT of {args.clients}':>18}{'turn TTFT':>12}   (ms)")
    for name in ("off", "on"):
        r = results[name]
        print(f"prefix {name:3}{r['one'] * 1e3:12.1f}{r['burst_p99'] * 1e3:18.1f}{r['turns'] * 1e3:12.1f}")
    ratios = {key: results["off"][key] / results["on"][key] for key in ("one", "burst_p99", "turns")}
    print(f"off / on:  {ratios['one']:10.2f}x{ratios['burst_p99']:17.2f}x{ratios['turns']:11.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"results_s": results, "off_over_on": ratios, "rounds": rows}, indent=1))


if __name__ == "__main__":
    main()
