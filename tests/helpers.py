"""Shared test fixtures: a small real-text corpus and a micro model configuration."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

# A model small enough that a training step takes milliseconds on one core.
MICRO = {
    "vocab_size": 512, "num_layers": 2, "dim": 64, "attention.num_heads": 2, "attention.num_kv_heads": 1,
    "attention.head_dim": 32, "moe.num_experts": 4, "moe.top_k": 2, "moe.expert_hidden_dim": 32,
    "moe.num_dense_layers": 1, "moe.dense_hidden_dim": 64, "max_seq_len": 128,
}


def never_end(model_dir) -> dict[str, int]:
    """A logit bias that keeps a random micro model from drawing an end id, so a sampled request runs to max_tokens."""
    from hepta.loading import load_tokenizer

    return {str(t): -100 for t in load_tokenizer(model_dir).stop_ids}


def micro_overrides() -> dict:
    return dict(MICRO)


def micro_set_flags() -> list[str]:
    return [arg for k, v in MICRO.items() for arg in ("--set", f"{k}={v}")]


def make_corpus(folder: Path) -> Path:
    """A few hundred KB of real text: the json and email packages of the standard library."""
    folder.mkdir(parents=True, exist_ok=True)
    root = Path(sysconfig.get_paths()["stdlib"])
    for f in sorted((root / "json").glob("*.py")) + sorted((root / "email").glob("*.py"))[:10]:
        shutil.copy(f, folder / f"{f.parent.name}_{f.name}")
    return folder


def run_cli(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hepta", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def random_ids(vocab_size: int, batch: int, seq_len: int, seed: int):
    import torch

    return torch.randint(0, vocab_size, (batch, seq_len), generator=torch.Generator().manual_seed(seed))


def max_logit_difference(hf_model, hepta_model, ids) -> float:
    """Largest |logit| difference between a transformers model and a hepta model on `ids`."""
    import torch

    with torch.no_grad():
        expected = hf_model(ids).logits
        got = hepta_model(ids)
    assert got.shape == expected.shape
    return (got - expected).abs().max().item()


def greedy_pair(hf_model, hepta_model, prompt, num_tokens: int):
    """(transformers' greedy tokens, hepta's greedy tokens decoded through its KV cache, that cache)."""
    import torch

    with torch.no_grad():
        expected = hf_model.generate(prompt, max_new_tokens=num_tokens, do_sample=False,
                                     min_new_tokens=num_tokens)[0, prompt.shape[1]:].tolist()
        cache = hepta_model.new_slot_cache(num_slots=1, max_len=prompt.shape[1] + num_tokens)
        cache.set_window(0, 1)
        logits = hepta_model(prompt, cache=cache)[:, -1]
        got = []
        for _ in range(num_tokens):
            got.append(int(logits.argmax(-1)))
            cache.set_window(0, 1)
            logits = hepta_model(torch.tensor([[got[-1]]]), cache=cache)[:, -1]
    return expected, got, cache


def decoded_logits(model, ids_BT, prefill: int):
    """(logits [B, T, V] of `ids_BT` as decoding computes them, the cache): the first `prefill`
    tokens prefilled into a slot cache, then one token per step at each sequence's position."""
    import torch

    B, T = ids_BT.shape
    cache = model.new_slot_cache(num_slots=B, max_len=T)
    steps = []
    with torch.no_grad():
        for start, end in [(0, prefill)] + [(t, t + 1) for t in range(prefill, T)]:
            cache.set_window(0, B)
            steps.append(model(ids_BT[:, start:end], cache=cache))
    return torch.cat(steps, dim=1), cache


def greedy_full_forward(model, tokenizer, prompt_ids: list[int], max_tokens: int) -> list[int]:
    """Greedy continuation recomputed with a full forward per token, without a cache: what any
    cached decoding must equal. Only text and end tokens are candidates; an end token stops."""
    import torch

    vocab_size = model.config.vocab_size
    end_ids = {i for i in tokenizer.stop_ids if i < vocab_size}
    candidates_V = torch.zeros(vocab_size, dtype=torch.bool)
    candidates_V[:min(tokenizer.num_generatable_ids, vocab_size)] = True
    candidates_V[list(end_ids)] = True
    ids, out = list(prompt_ids), []
    with torch.no_grad():
        for _ in range(max_tokens):
            logits_V = model(torch.tensor([ids]))[0, -1].masked_fill(~candidates_V, float("-inf"))
            token = int(logits_V.argmax())
            if token in end_ids:
                break
            out.append(token)
            ids.append(token)
    return out


def engine_generate(model, tokenizer, prompt: str, spec, max_tokens: int, params=None, logit_bias=None):
    """One constrained (or free, spec None) answer from the serving engine: a Choice(text, token_ids, finish_reason)."""
    from hepta.infer.engine import Engine, EngineConfig, generate
    from hepta.infer.request import Request
    from hepta.infer.sampling import SamplingParams

    engine = Engine(model, tokenizer, EngineConfig(max_num_seqs=1)).start()
    try:
        request = Request(tokenizer.encode(prompt), max_tokens, params or SamplingParams(), constraint=spec,
                          logit_bias=logit_bias)
        return generate(engine, request, timeout=120)[0]
    finally:
        engine.stop()


def engine_model_and_tokenizer(corpus: Path):
    """A small model (256-token context) and a tokenizer trained on real text, for the engine's tests."""
    import hepta
    from hepta.tokenizer import Tokenizer

    tokenizer = Tokenizer.train([f.read_text() for f in sorted(corpus.iterdir())], text_vocab_size=480)
    cfg = hepta.get_preset("tiny").with_changes({
        "vocab_size": 512, "dim": 64, "num_layers": 2, "attention.num_heads": 2, "attention.num_kv_heads": 1,
        "attention.head_dim": 32, "moe.num_experts": 4, "moe.expert_hidden_dim": 32, "max_seq_len": 256})
    return hepta.build_model(cfg, seed=0).eval(), tokenizer


def hours_long_video(hours: int) -> bytes:
    """An MP4 of 3 tiny frames whose header says it lasts `hours` hours (one frame every hours/3)."""
    import io
    from fractions import Fraction

    import av
    import numpy as np

    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(1, hours * 3600 // 3))
        stream.width = stream.height = 16
        stream.pix_fmt = "yuv420p"
        for _ in range(3):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((16, 16), np.uint8), format="gray")))
        container.mux(stream.encode(None))
    return out.getvalue()
