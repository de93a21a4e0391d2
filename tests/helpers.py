"""Shared test fixtures: a small real-text corpus and a micro model configuration."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

# A model small enough that a training step takes milliseconds on one core.
MICRO = {
    "vocab_size": 512, "num_layers": 2, "dim": 64, "num_heads": 2, "num_kv_heads": 1, "head_dim": 32,
    "num_experts": 4, "top_k": 2, "expert_hidden_dim": 32, "num_dense_layers": 1, "dense_hidden_dim": 64,
    "max_seq_len": 128,
}


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


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hepta", *args], capture_output=True, text=True, timeout=timeout)


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
    """(transformers' greedy tokens, hepta's greedy tokens decoded through its KV cache)."""
    import torch

    with torch.no_grad():
        expected = hf_model.generate(prompt, max_new_tokens=num_tokens, do_sample=False,
                                     min_new_tokens=num_tokens)[0, prompt.shape[1]:].tolist()
        cache = hepta_model.new_cache(batch_size=1, max_len=prompt.shape[1] + num_tokens)
        logits = hepta_model(prompt, cache=cache)[:, -1]
        got = []
        for _ in range(num_tokens):
            got.append(int(logits.argmax(-1)))
            logits = hepta_model(torch.tensor([[got[-1]]]), cache=cache)[:, -1]
    return expected, got, cache


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
    cfg = hepta.get_preset("tiny").replace(vocab_size=512, dim=64, num_layers=2, num_heads=2, num_kv_heads=1,
                                           head_dim=32, num_experts=4, expert_hidden_dim=32, max_seq_len=256)
    return hepta.build_model(cfg, seed=0).eval(), tokenizer
