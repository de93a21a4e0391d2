"""Random tokens written twice: the task on which a model learns to look back for an earlier
occurrence of what it just read and copy what followed it (an induction head).

Answering from a long prompt needs that look-up: "which digit appeared third" is the digit after
the caption that says 3, and copying what followed an earlier token is what an induction head
does. Models form one in a sudden step after enough training; the repeat of random tokens, where
nothing but the look-up predicts the second half, is the plainest test of whether a model has one.
"""

from __future__ import annotations

from typing import Callable

import torch

from hepta.train.conversations import IGNORE

# A byte-level BPE vocabulary starts with its 256 single characters; a few symbols for the repeats
# are taken after them, from the merged tokens that text is mostly written in.
FIRST_MERGED_ID = 256


def repeat_batch(symbols: tuple[int, int], generator: torch.Generator, rows: int = 16,
                 lengths: tuple[int, int] = (10, 60)) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets [rows, 2L - 1]: L random ids from `symbols` (low, high), then the same
    again; only the repeat is a target. L is drawn from `lengths` once per batch."""
    length = int(torch.randint(lengths[0], lengths[1] + 1, (1,), generator=generator))
    first = torch.randint(symbols[0], symbols[1], (rows, length), generator=generator)
    ids = torch.cat([first, first], 1)
    targets = torch.full_like(ids, IGNORE)
    targets[:, length:-1] = ids[:, length + 1:]
    return ids[:, :-1], targets[:, :-1]


@torch.no_grad()
def repeat_accuracy(logits_of: Callable[[torch.Tensor], torch.Tensor], symbols: tuple[int, int],
                    length: int = 50, rows: int = 8, seed: int = 1) -> float:
    """Share of the repeat of `length` random ids that `logits_of` (ids [B, T] -> logits [B, T, V])
    predicts right: near 0 for a model without an induction head, near 1 with one."""
    generator = torch.Generator().manual_seed(seed)
    first = torch.randint(symbols[0], symbols[1], (rows, length), generator=generator)
    ids = torch.cat([first, first], 1)
    return (logits_of(ids)[:, length:-1].argmax(-1) == ids[:, length + 1:]).float().mean().item()
