"""Next-token sampling: temperature, top-k, top-p (nucleus); greedy at temperature 0.

Dims: B batch, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hepta.errors import HeptaError


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_k: int = 0  # 0 = no top-k limit
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise HeptaError(f"temperature must be 0 (greedy) or more, got {self.temperature}")
        if self.top_k < 0:
            raise HeptaError(f"top-k must be 0 (off) or more, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise HeptaError(f"top-p must be in (0, 1], got {self.top_p}")


def sample_next(logits_BV: torch.Tensor, params: SamplingParams, generator: torch.Generator | None = None) -> torch.Tensor:
    """Token ids [B] drawn from the last-position logits [B, V]."""
    logits_BV = logits_BV.float()  # sampling in fp32: bf16 ties and tiny probabilities matter here
    if params.temperature == 0:
        return logits_BV.argmax(dim=-1)
    # shift so the best logit is 0 before dividing: a tiny temperature then gives -inf for the
    # others instead of inf - inf = nan
    logits_BV = (logits_BV - logits_BV.amax(dim=-1, keepdim=True)) / params.temperature
    if params.top_k and params.top_k < logits_BV.shape[-1]:
        kth = logits_BV.topk(params.top_k, dim=-1).values[:, -1:]
        logits_BV = logits_BV.masked_fill(logits_BV < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = logits_BV.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # drop a token once the tokens before it already cover top_p; the first always stays
        drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= params.top_p
        logits_BV = logits_BV.masked_fill(drop_sorted.scatter(1, order, drop_sorted), float("-inf"))
    probs_BV = logits_BV.softmax(dim=-1)
    return torch.multinomial(probs_BV, 1, generator=generator).squeeze(-1)
