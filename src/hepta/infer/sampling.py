"""Next-token sampling: temperature, top-k, top-p (nucleus), penalties; greedy at temperature 0.

Every row of a batch has its own parameters and, when seeded, its own random generator, so a
request samples the same tokens whatever else shares its batch.

Dims: B batch, V vocabulary, K top logprobs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from hepta.errors import HeptaError
from hepta.tokenizer import TextTokenizer


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_k: int = 0  # 0 = no top-k limit
    top_p: float = 1.0
    seed: int | None = None
    presence_penalty: float = 0.0  # subtracted once from every token already generated
    frequency_penalty: float = 0.0  # subtracted per earlier occurrence

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise HeptaError(f"temperature must be 0 (greedy) or more, got {self.temperature}")
        if self.top_k < 0:
            raise HeptaError(f"top-k must be 0 (off) or more, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise HeptaError(f"top-p must be in (0, 1], got {self.top_p}")

    @property
    def has_penalties(self) -> bool:
        return bool(self.presence_penalty or self.frequency_penalty)


def sampleable(tokenizer: TextTokenizer, vocab_size: int) -> tuple[set[int], torch.Tensor]:
    """(end ids, additive mask [V]: 0 where a token may be sampled, -inf elsewhere).

    Only generatable and end tokens may be sampled: structure ids and the padding rows of the
    embedding past the tokenizer are not something to write.
    """
    end_ids = {i for i in tokenizer.stop_ids if i < vocab_size}
    allowed_V = torch.zeros(vocab_size, dtype=torch.bool)
    allowed_V[:min(tokenizer.num_generatable_ids, vocab_size)] = True
    allowed_V[list(end_ids)] = True
    return end_ids, torch.where(allowed_V, 0.0, float("-inf"))


def apply_penalties(logits_BV: torch.Tensor, counts_BV: torch.Tensor, presence_B: torch.Tensor,
                    frequency_B: torch.Tensor) -> torch.Tensor:
    """OpenAI's penalties: logit - presence * [count > 0] - frequency * count, per generated token."""
    counts_BV = counts_BV.to(logits_BV.dtype)
    return logits_BV - presence_B[:, None] * (counts_BV > 0) - frequency_B[:, None] * counts_BV


def sample_batch(logits_BV: torch.Tensor, params: Sequence[SamplingParams],
                 generators: Sequence[torch.Generator | None]) -> torch.Tensor:
    """Token ids [B] drawn from last-position logits [B, V], one parameter set and generator per row."""
    logits_BV = logits_BV.float()  # sampling in fp32: bf16 ties and tiny probabilities matter here
    B, V = logits_BV.shape
    next_B = logits_BV.argmax(dim=-1)
    temperature_B = torch.tensor([p.temperature for p in params])
    sampled_rows = temperature_B.gt(0).nonzero().flatten().tolist()
    if not sampled_rows:
        return next_B
    # shift so the best logit is 0 before dividing: a tiny temperature then gives -inf for the
    # others instead of inf - inf = nan
    scaled_BV = (logits_BV - logits_BV.amax(dim=-1, keepdim=True)) / temperature_B.clamp(min=1e-8)[:, None]
    # the sort behind top-k and top-p costs far more than sampling: only rows that filter pay it
    filtered = [row for row, p in enumerate(params) if 0 < p.top_k < V or p.top_p < 1.0]
    if filtered:
        rows = torch.tensor(filtered)
        scaled_BV[rows] = _filter_top_k_top_p(scaled_BV[rows], [params[row] for row in filtered])
    probs_BV = scaled_BV.softmax(dim=-1)
    for row in sampled_rows:
        next_B[row] = torch.multinomial(probs_BV[row], 1, generator=generators[row])[0]
    return next_B


def _filter_top_k_top_p(scaled_RV: torch.Tensor, params: Sequence[SamplingParams]) -> torch.Tensor:
    """Logits [R, V] with the tokens outside each row's top-k, then top-p, set to -inf."""
    V = scaled_RV.shape[-1]
    sorted_RV, order_RV = scaled_RV.sort(dim=-1, descending=True)
    top_k_R = torch.tensor([p.top_k if 0 < p.top_k < V else V for p in params])
    drop_sorted_RV = torch.arange(V)[None, :] >= top_k_R[:, None]
    probs_sorted_RV = sorted_RV.masked_fill(drop_sorted_RV, float("-inf")).softmax(dim=-1)
    # top-p over what top-k kept: drop a token once the tokens before it already cover top_p;
    # the first always stays
    top_p_R = torch.tensor([p.top_p for p in params])
    drop_sorted_RV |= (probs_sorted_RV.cumsum(dim=-1) - probs_sorted_RV) >= top_p_R[:, None]
    return scaled_RV.masked_fill(drop_sorted_RV.scatter(1, order_RV, drop_sorted_RV), float("-inf"))


def sample_next(logits_BV: torch.Tensor, params: SamplingParams, generator: torch.Generator | None = None) -> torch.Tensor:
    """Token ids [B] drawn from the last-position logits [B, V], one parameter set for all rows."""
    return sample_batch(logits_BV, [params] * logits_BV.shape[0], [generator] * logits_BV.shape[0])


def top_logprobs(logits_BV: torch.Tensor, chosen_B: torch.Tensor, k: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(chosen logprob [B], top-k logprobs [B, K], their ids [B, K]) under the model's distribution."""
    logprobs_BV = logits_BV.float().log_softmax(dim=-1)
    chosen = logprobs_BV.gather(1, chosen_B[:, None])[:, 0]
    top_values, top_ids = logprobs_BV.topk(k, dim=-1) if k else (logprobs_BV[:, :0], chosen_B[:, None][:, :0])
    return chosen, top_values, top_ids
