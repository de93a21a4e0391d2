"""Audio spans in the shared id space, and the grammar that keeps generated ones well formed.

A span is `<|audio_start|>`, the clip's codes in time order (25 a second by default), then
`<|audio_end|>`. Unlike an image, a clip has no fixed length: inside a span the model may write
an audio code or close the span, nothing else; outside one it writes no audio code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class AudioVocab:
    """Where audio lives in the id space of one tokenizer."""

    start_id: int  # <|audio_start|>
    end_id: int  # <|audio_end|>
    code_start: int  # the first audio code id
    num_codes: int

    def span_ids(self, codes_K: torch.Tensor | Sequence[int]) -> list[int]:
        codes = torch.as_tensor(codes_K).flatten()
        return [self.start_id] + (codes + self.code_start).tolist() + [self.end_id]

    def is_code(self, token_id: int) -> bool:
        return self.code_start <= token_id < self.code_start + self.num_codes

    def audio_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """Bool, per id: an audio code or one of the two markers."""
        codes = (ids >= self.code_start) & (ids < self.code_start + self.num_codes)
        return codes | (ids == self.start_id) | (ids == self.end_id)

    def find_spans(self, ids: Sequence[int]) -> list[torch.Tensor]:
        """The codes [K] of every closed span in `ids` that holds at least one code, in order."""
        spans, current = [], None
        for token in ids:
            if token == self.start_id:
                current = []
            elif current is not None and self.is_code(token):
                current.append(token - self.code_start)
            elif current is not None:
                if token == self.end_id and current:
                    spans.append(torch.tensor(current))
                current = None
        return spans

    def open_span(self, ids: Sequence[int]) -> list[int]:
        """The ids of a span `ids` leaves open (from its <|audio_start|> on), or [] when none is."""
        for back in range(1, len(ids) + 1):
            token = ids[-back]
            if token == self.start_id:
                return list(ids[-back:])
            if not self.is_code(token):
                return []
        return []

    def inside_mask(self, vocab_size: int) -> torch.Tensor:
        """Bool [V]: the ids allowed inside an open span."""
        allowed_V = torch.zeros(vocab_size, dtype=torch.bool)
        allowed_V[self.code_start:self.code_start + self.num_codes] = True
        allowed_V[self.end_id] = True
        return allowed_V
