"""Autoregressive generation with the KV cache, streaming text as it is decoded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from hepta.errors import HeptaError
from hepta.infer.sampling import SamplingParams, sample_next, sampleable
from hepta.infer.stream_text import StreamingText
from hepta.model import Transformer
from hepta.tokenizer import Tokenizer


@dataclass
class Generation:
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str = "length"  # "length" | "stop" (stop string or end token)


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
    end_ids, banned = sampleable(tokenizer, model.config.vocab_size)

    model.eval()
    cache = model.new_cache(batch_size=1, max_len=len(prompt_ids) + max_tokens)
    logits = model(torch.tensor([prompt_ids]), cache=cache)[:, -1]
    text = StreamingText(tokenizer, stop)
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
