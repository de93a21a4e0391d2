"""What a long prompt arriving costs a running stream: its inter-token latency with whole-prompt prefill and with
chunked prefill.

    .venv/bin/python benchmarks/long_prompt.py [--rounds 5] [--prompt 4000] [--chunk 512] [--device auto]
        [--json results.json]

An in-process Engine on the `tiny` preset (random weights, context 4,096). Per round, interleaved: a stream decodes
256 tokens (end tokens banned, greedy) alone ("alone"), then again while a --prompt-token prompt is submitted
after its 32nd token, once with whole-prompt prefill and prefilled --chunk tokens a step, each chunk packed into
the stream's decode forward ("chunked") and, as an ablation, in a forward of its own after it ("separate"). On a
CUDA device (--device auto finds one) the model runs there. Reported: medians
over rounds of the stream's inter-token p99 and largest gap, each against alone, and the long prompt's time to
its first token.
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
import _device
from _shapes import long_context_tiny

GREEDY = SamplingParams(temperature=0.0)


def run(engine: Engine, stream_ids: list[int], long_ids: list[int] | None, end_ids: list[int]) -> dict:
    times, done, first_long = [], threading.Event(), {}
    bias = {i: -100.0 for i in end_ids}
    submitted = {}

    def stream_sink(event):
        times.append(time.perf_counter())
        if len(times) == 32 and long_ids is not None:
            submitted["at"] = time.perf_counter()
            engine.submit(Request(long_ids, 4, GREEDY, logit_bias=bias, sink=long_sink))
        if event.finish_reason:
            done.set()

    def long_sink(event):
        first_long.setdefault("at", time.perf_counter())

    engine.submit(Request(stream_ids, 256, GREEDY, logit_bias=bias, sink=stream_sink))
    assert done.wait(600)
    gaps = sorted(b - a for a, b in zip(times[31:], times[32:]))  # from the long prompt's arrival (after token 32) on
    return {"p99": gaps[int(0.99 * (len(gaps) - 1))], "max": gaps[-1],
            "ttft": first_long["at"] - submitted["at"] if first_long else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--prompt", type=int, default=4000)
    parser.add_argument("--chunk", type=int, default=512)
    parser.add_argument("--json")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = _device.pick(args.device)
    model, tokenizer = long_context_tiny()
    model.to(device)
    print(_device.describe(device))
    end_ids = sorted(tokenizer.stop_ids)
    generator = torch.Generator().manual_seed(0)
    stream_ids = torch.randint(0, 200, (64,), generator=generator).tolist()
    long_ids = torch.randint(0, 200, (args.prompt,), generator=generator).tolist()
    # no prefix cache: every round prefills the same long prompt again, as a new one would be
    engines = {"whole": Engine(model, tokenizer, EngineConfig(max_num_seqs=4, prefill_chunk=None,
                                                              prefix_cache_bytes=0)).start(),
               "chunked": Engine(model, tokenizer, EngineConfig(max_num_seqs=4, prefill_chunk=args.chunk,
                                                                prefix_cache_bytes=0)).start(),
               "separate": Engine(model, tokenizer, EngineConfig(max_num_seqs=4, prefill_chunk=args.chunk,
                                                                 prefix_cache_bytes=0, pack_prefill=False)).start()}
    try:
        run(engines["whole"], stream_ids, long_ids[:256], end_ids)  # warm-up
        rows = {"alone": [], "whole": [], "chunked": [], "separate": []}
        for _ in range(args.rounds):
            rows["alone"].append(run(engines["whole"], stream_ids, None, end_ids))
            rows["whole"].append(run(engines["whole"], stream_ids, long_ids, end_ids))
            rows["chunked"].append(run(engines["chunked"], stream_ids, long_ids, end_ids))
            rows["separate"].append(run(engines["separate"], stream_ids, long_ids, end_ids))
    finally:
        for engine in engines.values():
            engine.stop()
    alone = statistics.median(r["p99"] for r in rows["alone"])
    results = {}
    for name, runs in rows.items():
        p99, worst = statistics.median(r["p99"] for r in runs), statistics.median(r["max"] for r in runs)
        ttft = [r["ttft"] for r in runs if r["ttft"] is not None]
        results[name] = {"itl_p99_ms": p99 * 1000, "itl_max_ms": worst * 1000, "p99_vs_alone": p99 / alone,
                         "long_prompt_ttft_s": statistics.median(ttft) if ttft else None}
        print(f"{name:8s} stream ITL p99 {p99 * 1000:8.1f} ms ({p99 / alone:5.2f}x alone), largest gap "
              f"{worst * 1000:8.1f} ms" + (f"; the {args.prompt}-token prompt's first token after "
                                           f"{statistics.median(ttft):.2f} s" if ttft else ""))
    print(f"target: ITL p99 while the prompt arrives at most 2x alone: "
          f"{'met' if results['chunked']['p99_vs_alone'] <= 2 else 'MISSED'} ({results['chunked']['p99_vs_alone']:.2f}x)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
