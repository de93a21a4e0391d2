"""What an oversized request costs the other clients: inter-token latency of a running stream while 50 MB
prompts arrive.

    .venv/bin/python benchmarks/oversized_request.py [--rounds 5] [--json results.json]

Two `hepta serve` processes on the `tiny`-shaped model of benchmarks/serve.py: one with the default body limit
(32 MB), one with --max-body-mb 64, so that a 50 MB body is read and parsed and then refused by the prompt-
length check that runs before tokenizing. Per round, interleaved: a client streams 128 tokens (end tokens
banned) and, once its first token is in, another sends 50 MB completion prompts one after another until the
stream ends ("storm"); the same stream alone is the baseline ("quiet"). Reported: medians over rounds of the
stream's inter-token p99 and median, their ratio to quiet, and the time each big request took to be refused.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from serve import Client, build_folders  # noqa: E402

from hepta.serve.runner import free_port, wait_healthy  # noqa: E402
from hepta.tokenizer import Tokenizer  # noqa: E402

BIG = 50 << 20


def start(model_dir: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "hepta", "serve", "--model", str(model_dir), "--name", "bench",
                                "--port", str(port), *extra], stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, timeout=120, process=process)
    return process, url


async def round_(url: str, end_ids: list[int], storm: bool) -> dict:
    client = Client(url, 128, end_ids)
    prompt = list(range(10, 42))
    refusals: list[float] = []
    stream = asyncio.create_task(client.request(prompt))
    if storm:
        body = json.dumps({"model": "bench", "prompt": "x" * BIG, "max_tokens": 1}).encode()
        async with httpx.AsyncClient(timeout=600) as big:
            await asyncio.sleep(0.3)  # the stream is under way
            while not stream.done():
                start = time.perf_counter()
                response = await big.post(f"{url}/v1/completions", content=body,
                                          headers={"content-type": "application/json"})
                assert response.status_code in (400, 413), response.status_code
                refusals.append(time.perf_counter() - start)
    result = await stream
    await client.http.aclose()
    gaps = [b - a for a, b in zip(result["times"], result["times"][1:])]
    gaps.sort()
    return {"itl_p99": gaps[int(0.99 * (len(gaps) - 1))], "itl_median": statistics.median(gaps),
            "refusal_s": statistics.median(refusals) if refusals else None, "refused": len(refusals)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        model_dir, _, _ = build_folders(Path(root))
        tokenizer = Tokenizer.load(model_dir)
        end_ids = sorted(tokenizer.stop_ids)
        limited, limited_url = start(model_dir)
        parsed, parsed_url = start(model_dir, "--max-body-mb", "64")
        try:
            runs = {"quiet": [], "limit (413 unread)": [], "parsed (400 before tokenizing)": []}
            for _ in range(args.rounds):  # interleaved, so the host's drift hits all alike
                runs["quiet"].append(asyncio.run(round_(limited_url, end_ids, storm=False)))
                runs["limit (413 unread)"].append(asyncio.run(round_(limited_url, end_ids, storm=True)))
                runs["parsed (400 before tokenizing)"].append(asyncio.run(round_(parsed_url, end_ids, storm=True)))
        finally:
            for process in (limited, parsed):
                process.terminate()
                process.wait(10)
    quiet = statistics.median(r["itl_p99"] for r in runs["quiet"])
    results = {}
    for name, rows in runs.items():
        p99 = statistics.median(r["itl_p99"] for r in rows)
        refusal = [r["refusal_s"] for r in rows if r["refusal_s"] is not None]
        results[name] = {"itl_p99_ms": round(p99 * 1000, 2),
                         "itl_median_ms": round(statistics.median(r["itl_median"] for r in rows) * 1000, 2),
                         "p99_vs_quiet": round(p99 / quiet, 2),
                         "refusal_ms": round(statistics.median(refusal) * 1000, 1) if refusal else None,
                         "big_requests_per_round": statistics.median(r["refused"] for r in rows)}
        print(f"{name:32s} ITL p99 {results[name]['itl_p99_ms']:7.2f} ms ({results[name]['p99_vs_quiet']:.2f}x quiet)"
              f"  median {results[name]['itl_median_ms']:6.2f} ms"
              + (f"  50 MB refused in {results[name]['refusal_ms']:.1f} ms" if refusal else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
