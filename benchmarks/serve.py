"""Serving benchmark in the manner of vLLM's benchmark_serving, plus transformers' generate as the peer.

    .venv/bin/python benchmarks/serve.py [--rounds 5] [--output-len 64] [--clients 16] [--json results.json]
        [--device auto] [--dtype float32] [--shape tiny]

hepta runs without its prefix cache here: rounds repeat some prompts, and a kept prefix would turn their
prefill into a copy (benchmarks/prefix_cache.py measures that).

On a CUDA device (--device auto finds one) both servers, the in-process engine and generate run there;
--shape olmoe-200m gives the GPU a model worth the name, --dtype bfloat16 its usual precision.

`hepta serve` runs in its own process on a `tiny`-shaped model (random weights, OLMoE-compatible
so transformers can load the very same weights); clients stream /v1/completions over HTTP
from this process. Prompts are token ids from a fixed length mix; end tokens get a logit bias
of -100, so every request writes exactly --output-len tokens (vLLM's ignore_eos).

Per round, interleaved (so the host's clock drift hits all alike):
  single    one client, one request at a time: TTFT and decode tokens/s (after the first token)
  peer      transformers `generate` with KV cache on the same weights, same prompt, greedy:
            decode tokens/s = (L - 1) / (time for L tokens - time for 1 token)
  c1 / cN   closed-loop load: 1 or N clients, each sending its next request when the last ends;
            request throughput, output tokens/s, TTFT and TPOT (mean, median, p99)
  cN ramped the same N clients starting one after another over one request's time (as a ramp-up does), so
            that their prompts do not all arrive in one burst: TTFT p99 of a server under way. Starting
            together, the last of N prompts waits for all N prefills, which on a CPU cost their tokens'
            arithmetic: the report gives that work as a bound on the burst's TTFT ratio
  server peer  `transformers serve --continuous-batching` on the same weights and tokenizer (written by
            hepta's OLMoE export), and hepta beside it, both at 1 and N clients with the same text prompts
            (transformers serve takes text only and has no logit_bias: its tokens are counted from its usage,
            and an answer may end early at an end token)
  step      the cost of serving one decode step of N sequences: the same N requests (N = --clients)
            decoded by an in-process Engine in this process (no HTTP), with torch's default threads
            and with the engine process's count (one fewer), and sent at once by N streaming HTTP
            clients; per-step time = median over the requests of the time per token once all N
            have their first token; the ratio is HTTP over the better engine-alone time
Reported: medians over rounds, and the target ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch

import hepta
import _device
from _shapes import shaped
from hepta.infer.core import engine_threads
from hepta.scale.flops import inference_flops_per_token, matmul_params
from hepta.infer.engine import Engine, EngineConfig
from hepta.infer.request import Event, Request as EngineRequest
from hepta.infer.sampling import SamplingParams
from hepta.interop.hf_save import save_hf
from hepta.interop.hf_tokenizer_export import write_tokenizer_files
from hepta.serve.runner import free_port, wait_healthy
from hepta.tokenizer import Tokenizer

PROMPT_LENS = (32, 64, 128)
SINGLE_PROMPT_LEN = 64


def model_config(shape: str = "tiny") -> hepta.ModelConfig:
    # the shape with the MoE options OLMoE has, so transformers runs identical weights
    return shaped(shape, **{
        "moe.num_shared_experts": 0, "moe.num_dense_layers": 0, "router.scoring": "softmax",
        "router.norm_topk_prob": True, "attention.qk_norm_per_head": False, "router.z_loss_coef": 0.0,
        "router.bias_update_rate": 0.0})


def build_folders(root: Path, shape: str = "tiny") -> tuple[Path, Path, hepta.ModelConfig]:
    cfg = model_config(shape)
    model = hepta.build_model(cfg, seed=0).eval()
    hepta_dir, hf_dir = root / "hepta", root / "hf"
    hepta.save_model(model, hepta_dir)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = [p.read_text(errors="replace") for p in sorted(stdlib.glob("*.py"))[:60]]
    tokenizer = Tokenizer.train(texts, text_vocab_size=cfg.vocab_size - 32)
    tokenizer.save(hepta_dir)
    save_hf(model, hf_dir, model_type="olmoe")
    tokenizer.save(hf_dir)  # tokenizer.json, and the files transformers reads beside it
    write_tokenizer_files(tokenizer, hf_dir, cfg.max_seq_len)
    return hepta_dir, hf_dir, cfg


def start_server(model_dir: Path, port: int, max_num_seqs: int, device: str = "cpu",
                 dtype: str = "auto") -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "hepta", "serve", "--model", str(model_dir), "--name", "bench",
                                "--port", str(port), "--max-num-seqs", str(max_num_seqs), "--device", device,
                                "--dtype", dtype, "--prefix-cache-mb", "0"],
                               stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", timeout=120, process=process)
    except Exception:
        process.kill()
        raise
    return process


def start_peer_server(hf_dir: Path, port: int, device: str = "cpu", dtype: str = "auto") -> subprocess.Popen:
    """`transformers serve --continuous-batching` on the OLMoE export of the same model."""
    log = tempfile.TemporaryFile(mode="w+")  # its own words, should it not start
    process = subprocess.Popen([sys.executable, "-m", "transformers.cli.transformers", "serve", str(hf_dir),
                                "--continuous-batching", "--port", str(port), "--device", device, "--dtype", dtype],
                               stderr=log, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:  # its /health answers before the model is loaded: ask for a token instead
        try:
            response = httpx.post(f"{url}/v1/completions", json={"model": str(hf_dir), "prompt": "x", "max_tokens": 1},
                                  timeout=60)
            if response.status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            log.seek(0)
            said = [line.strip() for line in log.read().splitlines() if line.strip()][-1:] or ["nothing"]
            raise RuntimeError(f"transformers serve did not start (its last words: {said[0]}); it needs "
                               "pip install 'transformers[serving]' accelerate")
        time.sleep(1)


class Client:
    def __init__(self, url: str, output_len: int, end_ids: list[int], model: str = "bench", exact: bool = True):
        """exact: every request writes output_len tokens (end tokens banned); a peer without logit_bias may stop
        earlier, and its tokens are then counted from its usage."""
        self.url, self.output_len, self.model, self.exact = url, output_len, model, exact
        self.bias = {str(i): -100 for i in end_ids}
        self.http = httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=256))

    async def request(self, prompt_ids: list[int] | str) -> dict:
        body = {"model": self.model, "prompt": prompt_ids, "max_tokens": self.output_len, "temperature": 0,
                "stream": True, "logit_bias": self.bias, "stream_options": {"include_usage": True}}
        start = time.perf_counter()
        times = []  # arrival of each token's chunk
        tokens = 0
        async with self.http.stream("POST", f"{self.url}/v1/completions", json=body) as response:
            response.raise_for_status()
            # SSE events split from the raw bytes, as OpenAI's client does, rather than through
            # httpx's text decoder and line splitter: the clients share the server's 2 cores
            pending = b""
            async for data in response.aiter_bytes():
                *events, pending = (pending + data).split(b"\n\n")
                for event in events:
                    if not event.startswith(b"data: ") or event == b"data: [DONE]":
                        continue
                    chunk = json.loads(event[6:])
                    if chunk["choices"]:
                        times.append(time.perf_counter())
                    elif chunk.get("usage"):
                        tokens = chunk["usage"]["completion_tokens"]
            assert not pending.strip(), pending
        end = time.perf_counter()
        assert tokens == self.output_len or (not self.exact and 0 < tokens <= self.output_len), tokens
        first = times[0]
        return {"ttft": first - start, "latency": end - start, "tokens": tokens,
                "tpot": (end - first) / max(1, tokens - 1), "times": times}


def prompt(length: int, seed: int, vocab: int) -> list[int]:
    return torch.randint(0, vocab, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


async def closed_loop(client: Client, clients: int, requests_per_client: int, vocab: int, seed: int,
                      as_text: Tokenizer | None = None, ramp_s: float = 0.0) -> dict:
    """`as_text`: send the prompts as the text that tokenizer decodes them to (for a server that takes text only);
    `ramp_s`: client w starts w/clients of it late."""
    results = []

    async def worker(w: int):
        await asyncio.sleep(ramp_s * w / clients)
        for r in range(requests_per_client):
            length = PROMPT_LENS[(w + r) % len(PROMPT_LENS)]
            ids = prompt(length, seed * 1000 + w * 100 + r, vocab)
            results.append(await client.request(as_text.decode(ids) if as_text is not None else ids))

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(clients)))
    wall = time.perf_counter() - start
    return {"wall": wall, "results": results}


def summarize(run: dict) -> dict:
    results = run["results"]
    ttfts = sorted(r["ttft"] for r in results)
    tpots = sorted(r["tpot"] for r in results)

    def stats(values):
        return {"mean": statistics.fmean(values), "median": statistics.median(values),
                "p99": values[min(len(values) - 1, int(round(0.99 * (len(values) - 1))))]}

    return {"requests_per_s": len(results) / run["wall"],
            "output_tokens_per_s": sum(r["tokens"] for r in results) / run["wall"],
            "ttft_s": stats(ttfts), "tpot_s": stats(tpots)}


@torch.no_grad()
def peer_decode_rate(hf_model, ids: list[int], output_len: int) -> float:
    x = torch.tensor([ids], device=hf_model.device)

    def timed(n):
        start = time.perf_counter()
        out = hf_model.generate(x, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        _device.sync(out.device)
        assert out.shape[1] == len(ids) + n
        return time.perf_counter() - start

    return (output_len - 1) / (timed(output_len) - timed(1))


def engine_process_threads(cfg, clients: int) -> int:
    """The engine process's threads for a decode step of `clients` sequences (infer/core.py)."""
    return engine_threads(2 * matmul_params(cfg) * clients, torch.get_num_threads())


def step_prompts(clients: int, vocab: int) -> list[list[int]]:
    return [prompt(PROMPT_LENS[i % len(PROMPT_LENS)], 5000 + i, vocab) for i in range(clients)]


def engine_alone_step_s(engine: Engine, prompts: list[list[int]], output_len: int, end_ids: list[int],
                        threads: int) -> float:
    """Per-step decode time of `prompts` decoded together by an in-process engine using `threads` threads."""
    engine.run_exclusive(lambda: torch.set_num_threads(threads)).result()  # on the engine's own thread
    times: list[list[float]] = [[] for _ in prompts]
    finished = threading.Semaphore(0)

    def sink(i):
        def put(event: Event) -> None:
            times[i].append(time.perf_counter())
            if event.finish_reason:
                assert event.finish_reason == "length" and not event.error, event
                finished.release()
        return put

    bias = {i: -100.0 for i in end_ids}
    for i, ids in enumerate(prompts):
        engine.submit(EngineRequest(ids, output_len, SamplingParams(temperature=0), logit_bias=bias, sink=sink(i)))
    for _ in prompts:
        assert finished.acquire(timeout=600)
    return steady_step_s(times)


async def http_step_s(client: "Client", prompts: list[list[int]]) -> float:
    """Per-step decode time of `prompts` sent at once by one streaming HTTP client each."""
    results = await asyncio.gather(*(client.request(ids) for ids in prompts))
    return steady_step_s([r["times"] for r in results])


def steady_step_s(times: list[list[float]]) -> float:
    """Median over requests of the time per token once every request has its first token (all of
    them decode together from then on; the prefills before are not decode steps)."""
    all_started = max(t[0] for t in times)
    steps = []
    for t in times:
        steady = [x for x in t if x >= all_started]
        if len(steady) > 1:
            steps.append((steady[-1] - steady[0]) / (len(steady) - 1))
    return statistics.median(steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests-per-client", type=int, default=2)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--no-peer-server", action="store_true", help="skip transformers serve")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--shape", default="tiny", choices=("tiny", "olmoe-200m"))
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM

    device = _device.pick(args.device)
    dtype = getattr(torch, args.dtype)
    print(f"{_device.describe(device)}; shape {args.shape}, {args.dtype}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        hepta_dir, hf_dir, cfg = build_folders(Path(tmp), args.shape)
        hf_model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=dtype).to(device).eval()
        hf_model.set_experts_implementation("grouped_mm")  # transformers' fastest MoE path on CPU here and on GPUs
        tokenizer = Tokenizer.load(hepta_dir)
        max_num_seqs = max(32, args.clients)
        engine = Engine(hepta.load(hepta_dir, device=device, dtype=dtype), tokenizer,
                        EngineConfig(max_num_seqs=max_num_seqs, prefix_cache_bytes=0)).start()
        port = free_port()
        server = start_server(hepta_dir, port, max_num_seqs=max_num_seqs, device=str(device), dtype=args.dtype)
        peer_port = free_port()
        peer = None
        if not args.no_peer_server:
            try:
                peer = start_peer_server(hf_dir, peer_port, str(device), args.dtype)
            except RuntimeError as e:  # reported, and the rest still measured
                print(f"{e}; the server comparison is left out", flush=True)
        try:
            peer_client = None if peer is None else Client(f"http://127.0.0.1:{peer_port}", args.output_len, [],
                                                           model=str(hf_dir), exact=False)
            rounds = asyncio.run(run_rounds(args, f"http://127.0.0.1:{port}", sorted(tokenizer.stop_ids), cfg,
                                            hf_model, engine, peer_client, tokenizer))
        finally:
            for process in (server, peer):
                if process is not None:
                    process.terminate()
                    process.wait(timeout=30)
            engine.stop()
    report(args, rounds, cfg, device)


async def run_rounds(args, url: str, end_ids: list[int], cfg, hf_model, engine: Engine, peer_server: Client | None,
                     tokenizer: Tokenizer) -> list[dict]:
    client = Client(url, args.output_len, end_ids)
    # prompts of ids the tokenizer has (a bigger model's embedding has rows past a tokenizer trained on little text)
    vocab = min(cfg.vocab_size, tokenizer.num_generatable_ids)
    single_prompt = prompt(SINGLE_PROMPT_LEN, 7, vocab)
    prompts = step_prompts(args.clients, vocab)
    process_threads = engine_process_threads(cfg, args.clients)
    for _ in range(2):  # warm-up: first requests pay for allocations and lazy imports
        await client.request(single_prompt)
        peer_decode_rate(hf_model, single_prompt, 8)
        await http_step_s(client, prompts)
        engine_alone_step_s(engine, prompts, 8, end_ids, torch.get_num_threads())
    rounds = []
    for r in range(args.rounds):
        single = await client.request(single_prompt)
        peer = peer_decode_rate(hf_model, single_prompt, args.output_len)
        c1 = summarize(await closed_loop(client, 1, 4, vocab, seed=r))
        cn = summarize(await closed_loop(client, args.clients, args.requests_per_client, vocab, seed=r))
        ramped = summarize(await closed_loop(client, args.clients, args.requests_per_client, vocab, seed=r,
                                             ramp_s=single["latency"]))
        # the engine alone with torch's default threads, and with the engine process's for this step
        alone_default = engine_alone_step_s(engine, prompts, args.output_len, end_ids, torch.get_num_threads())
        alone_fewer = engine_alone_step_s(engine, prompts, args.output_len, end_ids, process_threads)
        http = await http_step_s(client, prompts)
        alone = min(alone_default, alone_fewer)  # the better of the two is the bar
        servers = {}
        if peer_server is not None:  # both servers, the same text prompts, one after the other
            for name, target in (("hepta", client), ("transformers_serve", peer_server)):
                servers[name] = {
                    "c1": summarize(await closed_loop(target, 1, 4, vocab, r, as_text=tokenizer)),
                    f"c{args.clients}": summarize(await closed_loop(target, args.clients, args.requests_per_client,
                                                                   vocab, r, as_text=tokenizer))}
        rounds.append({"single_decode_tokens_per_s": 1 / single["tpot"], "single_ttft_s": single["ttft"],
                       "peer_decode_tokens_per_s": peer, "c1": c1, f"c{args.clients}": cn,
                       f"c{args.clients}_ramped": ramped,
                       "engine_alone_default_threads_step_s": alone_default,
                       "engine_alone_process_threads_step_s": alone_fewer, "engine_alone_step_s": alone,
                       "http_step_s": http, "servers": servers})
        print(f"round {r + 1}: decode {1 / single['tpot']:.0f} vs transformers {peer:.0f} tok/s; "
              f"c1 {c1['output_tokens_per_s']:.0f}, c{args.clients} {cn['output_tokens_per_s']:.0f} tok/s; "
              f"TTFT single {single['ttft'] * 1000:.1f} ms, p99@{args.clients} {cn['ttft_s']['p99'] * 1000:.1f} ms, "
              f"ramped {ramped['ttft_s']['p99'] * 1000:.1f} ms; "
              f"{args.clients}-sequence step: engine alone {alone_default * 1000:.2f} ms ({torch.get_num_threads()} "
              f"threads) / {alone_fewer * 1000:.2f} ms ({process_threads}), HTTP {http * 1000:.2f} ms"
              + "".join(f"; {name} text c1/c{args.clients} {v['c1']['output_tokens_per_s']:.0f}/"
                        f"{v[f'c{args.clients}']['output_tokens_per_s']:.0f} tok/s" for name, v in servers.items()),
              flush=True)
    await client.http.aclose()
    return rounds


def report(args, rounds: list[dict], cfg, device) -> None:
    def med(path):
        values = []
        for r in rounds:
            value = r
            for key in path:
                value = value[key]
            values.append(value)
        return statistics.median(values)

    cn = f"c{args.clients}"
    decode, peer = med(["single_decode_tokens_per_s"]), med(["peer_decode_tokens_per_s"])
    c1_tps, cn_tps = med(["c1", "output_tokens_per_s"]), med([cn, "output_tokens_per_s"])
    single_ttft, cn_p99 = med(["single_ttft_s"]), med([cn, "ttft_s", "p99"])
    ramped_p99 = med([f"{cn}_ramped", "ttft_s", "p99"])
    burst_tokens = sum(PROMPT_LENS[w % len(PROMPT_LENS)] for w in range(args.clients))  # the clients' first prompts
    print(f"\nmedians of {args.rounds} rounds (torch {torch.__version__}, {os.cpu_count()} CPUs), output {args.output_len} "
          f"tokens, prompts {'/'.join(map(str, PROMPT_LENS))} tokens")
    print(f"{'':26}{'req/s':>8}{'out tok/s':>11}{'TTFT mean':>11}{'median':>9}{'p99':>9}{'TPOT mean':>11}"
          f"{'median':>9}{'p99':>9}")
    for name in ("c1", cn, f"{cn}_ramped"):
        row = [med([name, "requests_per_s"]), med([name, "output_tokens_per_s"])]
        row += [med([name, "ttft_s", k]) * 1000 for k in ("mean", "median", "p99")]
        row += [med([name, "tpot_s", k]) * 1000 for k in ("mean", "median", "p99")]
        label = f"{name[1:]} client(s)".replace("_ramped client(s)", " clients, ramped")
        print(f"{label:26}{row[0]:8.2f}{row[1]:11.0f}" + "".join(f"{v:9.1f}" if i not in (0, 3) else f"{v:11.1f}"
                                                              for i, v in enumerate(row[2:])) + "   (ms)")
    alone, http = med(["engine_alone_step_s"]), med(["http_step_s"])
    process_threads = engine_process_threads(cfg, args.clients)
    print(f"\n{args.clients}-sequence decode step: engine alone "
          f"{med(['engine_alone_default_threads_step_s']) * 1000:.2f} ms ({torch.get_num_threads()} threads), "
          f"{med(['engine_alone_process_threads_step_s']) * 1000:.2f} ms ({process_threads} threads, as the "
          f"engine process), better per round {alone * 1000:.2f} ms; through HTTP {http * 1000:.2f} ms")
    # model-FLOPs utilisation of decoding at N clients: FLOPs per generated token (2 x active matmul weights +
    # attention over the mean context) x output tokens/s, over a matmul of the model's dtype measured here
    context = statistics.mean(PROMPT_LENS) + args.output_len / 2
    flops = inference_flops_per_token(cfg, context) * cn_tps
    peak = _device.matmul_flops_per_s(device, getattr(torch, args.dtype))
    print(f"decode MFU at {args.clients} clients: {flops / 1e9:.2f} GFLOP/s of model FLOPs = {100 * flops / peak:.2f}% "
          f"of a {args.dtype} matmul measured here ({peak / 1e12:.2f} TFLOP/s)")
    targets = {
        f"{args.clients}-sequence decode step, HTTP / engine alone": (http / alone, 1.15,
                                                                    f"{http * 1000:.2f} vs {alone * 1000:.2f} ms"),
        "single-stream decode vs transformers generate": (decode / peer, 1.5,
                                                          f"{decode:.0f} vs {peer:.0f} tokens/s"),
        f"{args.clients} clients vs 1, output tokens/s": (cn_tps / c1_tps, 6.0, f"{cn_tps:.0f} vs {c1_tps:.0f}"),
        f"TTFT p99 at {args.clients} clients starting together / single": (
            cn_p99 / single_ttft, 3.0, f"{cn_p99 * 1000:.1f} vs {single_ttft * 1000:.1f} ms; their prompts are "
            f"{burst_tokens / SINGLE_PROMPT_LEN:.1f}x the single one's tokens"),
        f"TTFT p99 at {args.clients} clients, ramped / single": (
            ramped_p99 / single_ttft, 3.0, f"{ramped_p99 * 1000:.1f} vs {single_ttft * 1000:.1f} ms"),
    }
    if rounds[0]["servers"]:
        for n in ("c1", cn):
            ours, theirs = (med(["servers", name, n, "output_tokens_per_s"]) for name in ("hepta", "transformers_serve"))
            targets[f"{n[1:]} client(s): hepta serve vs transformers serve"] = (
                ours / theirs, 2.0, f"{ours:.0f} vs {theirs:.0f} output tokens/s, the same text prompts")
    print()
    for name, (ratio, target, detail) in targets.items():
        at_most = name.startswith("TTFT") or "engine alone" in name  # lower is better for these
        met = ratio <= target if at_most else ratio >= target
        bound = "<=" if at_most else ">="
        print(f"{name:48} {ratio:6.2f}x  (target {bound} {target}x: {'met' if met else 'MISSED'}; {detail})")
    if args.json:
        Path(args.json).write_text(json.dumps({"rounds": rounds, "ratios": {k: v[0] for k, v in targets.items()}},
                                              indent=1))


if __name__ == "__main__":
    main()
