"""Autoregressive generation with the KV cache, streaming text as it is decoded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from hepta.errors import HeptaError
from hepta.infer.sampling import SamplingParams, sample_next
from hepta.model import Transformer
from hepta.tokenizer import Tokenizer


@dataclass
class Generation:
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str = "length"  # "length" | "stop" (stop string or end token)


class _StreamingText:
    """Turns a growing token list into text deltas.

    Holds back (a) an incomplete UTF-8 character (byte-level BPE can split one across tokens)
    and (b) any tail that could still become a stop string, so stop strings never leak out.
    """

    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str]):
        self.tokenizer, self.stop = tokenizer, [s for s in stop if s]
        self.emitted = 0
        self.final_text: str | None = None

    def push(self, ids: list[int]) -> str:
        text = self.tokenizer.decode(ids)
        hits = [text.find(s) for s in self.stop if s in text]
        if hits:
            self.final_text = text[:min(hits)]
            return self._emit_upto(self.final_text, len(self.final_text))
        base = len(text.rstrip("\ufffd"))
        safe = base
        for s in self.stop:
            for k in range(min(len(s) - 1, base), 0, -1):
                if text[:base].endswith(s[:k]):
                    safe = min(safe, base - k)
                    break
        return self._emit_upto(text, safe)

    def finish(self, ids: list[int]) -> str:
        text = self.final_text if self.final_text is not None else self.tokenizer.decode(ids)
        return self._emit_upto(text, len(text))

    def _emit_upto(self, text: str, end: int) -> str:
        delta = text[self.emitted:end] if end > self.emitted else ""
        self.emitted = max(self.emitted, end)
        return delta


def stream_generate(model: Transformer, tokenizer: Tokenizer, prompt: str, max_tokens: int = 64,
                    params: SamplingParams = SamplingParams(), stop: Sequence[str] = (),
                    result: Generation | None = None) -> Iterator[str]:
    """Text deltas of the continuation of `prompt`; fills `result` as it goes.

    The request is checked here, before the first delta is asked for, so a caller can report
    a bad prompt before printing anything.
    """
    result = result if result is not None else Generation()
    context = model.config.max_seq_len
    prompt_ids = tokenizer.encode_prompt(prompt)
    if not prompt_ids:
        prompt_ids = [tokenizer.bos_id if getattr(tokenizer, "bos_id", None) is not None else tokenizer.eos_id]
    if len(prompt_ids) >= context:
        raise HeptaError(f"the prompt is {len(prompt_ids)} tokens but the model's context is {context}; "
                         "shorten the prompt")
    if max_tokens <= 0:
        raise HeptaError(f"max tokens must be positive, got {max_tokens}")
    return _decode(model, tokenizer, prompt_ids, min(max_tokens, context - len(prompt_ids)), params, stop, result)


@torch.no_grad()
def _decode(model: Transformer, tokenizer: Tokenizer, prompt_ids: list[int], max_tokens: int,
            params: SamplingParams, stop: Sequence[str], result: Generation) -> Iterator[str]:
    generator = torch.Generator().manual_seed(params.seed) if params.seed is not None else None
    end_ids = {i for i in tokenizer.stop_ids if i < model.config.vocab_size}
    # Only generatable and end tokens may be sampled: structure ids and the padding rows of
    # the embedding past the tokenizer are not something to write.
    allowed = torch.zeros(model.config.vocab_size, dtype=torch.bool)
    allowed[:min(tokenizer.num_generatable_ids, model.config.vocab_size)] = True
    allowed[list(end_ids)] = True
    banned = torch.where(allowed, 0.0, float("-inf"))

    model.eval()
    cache = model.new_cache(batch_size=1, max_len=len(prompt_ids) + max_tokens)
    logits = model(torch.tensor([prompt_ids]), cache=cache)[:, -1]
    text = _StreamingText(tokenizer, stop)
    for _ in range(max_tokens):
        next_id = int(sample_next(logits + banned, params, generator)[0])
        if next_id in end_ids:
            result.finish_reason = "stop"
            break
        result.token_ids.append(next_id)
        delta = text.push(result.token_ids)
        if delta:
            result.text += delta
            yield delta
        if text.final_text is not None:
            result.finish_reason = "stop"
            break
        if len(result.token_ids) < max_tokens:
            logits = model(torch.tensor([[next_id]]), cache=cache)[:, -1]
    tail = text.finish(result.token_ids)
    if tail:
        result.text += tail
        yield tail


def generate(model: Transformer, tokenizer: Tokenizer, prompt: str, **kwargs) -> Generation:
    result = Generation()
    for _ in stream_generate(model, tokenizer, prompt, result=result, **kwargs):
        pass
    return result
