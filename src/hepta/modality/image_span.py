"""Image spans in the shared id space, and the grammar that keeps generated ones well formed.

A span is `<|image_start|>`, then `grid` rows of `grid` code ids each followed by
`<|image_row|>`, then `<|image_end|>`: 2 + grid * (grid + 1) ids (22 for a 4x4 grid). The row
marker tells the model where it is in the grid without a second position scheme, and lets a
reader check the span's shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class ImageVocab:
    """Where images live in the id space of one tokenizer."""

    start_id: int  # <|image_start|>
    end_id: int  # <|image_end|>
    row_id: int  # <|image_row|>
    code_start: int  # the first image code id
    num_codes: int
    grid: int  # codes per row and rows per image

    @property
    def span_length(self) -> int:
        return 2 + self.grid * (self.grid + 1)

    def span_ids(self, codes_hw: torch.Tensor | Sequence[Sequence[int]]) -> list[int]:
        codes = torch.as_tensor(codes_hw)
        assert tuple(codes.shape) == (self.grid, self.grid), f"codes are {tuple(codes.shape)}, expected a {self.grid}x{self.grid} grid"
        ids = [self.start_id]
        for row in (codes + self.code_start).tolist():
            ids.extend(row)
            ids.append(self.row_id)
        ids.append(self.end_id)
        return ids

    def is_image_id(self, token_id: int) -> bool:
        """Whether the id belongs to an image span (codes and the three markers)."""
        return self.code_start <= token_id < self.code_start + self.num_codes or \
            token_id in (self.start_id, self.end_id, self.row_id)

    def image_mask(self, ids: torch.Tensor) -> torch.Tensor:
        codes = (ids >= self.code_start) & (ids < self.code_start + self.num_codes)
        return codes | (ids == self.start_id) | (ids == self.end_id) | (ids == self.row_id)

    def find_spans(self, ids: Sequence[int]) -> list[torch.Tensor]:
        """The code grids [grid, grid] of every complete, well-formed span in `ids`, in order."""
        grids, i = [], 0
        while i < len(ids):
            if ids[i] == self.start_id and i + self.span_length <= len(ids):
                span = list(ids[i:i + self.span_length])
                if self._well_formed(span):
                    rows = [span[1 + r * (self.grid + 1): 1 + r * (self.grid + 1) + self.grid] for r in range(self.grid)]
                    grids.append(torch.tensor(rows) - self.code_start)
                    i += self.span_length
                    continue
            i += 1
        return grids

    def _well_formed(self, span: list[int]) -> bool:
        return span[0] == self.start_id and all(self.allows(span[:k], span[k]) for k in range(1, len(span)))

    # --- the grammar ------------------------------------------------------------------------

    def open_span_position(self, ids: Sequence[int]) -> int:
        """How many ids of an unfinished span end `ids` (0 when none is open)."""
        for back in range(1, min(len(ids), self.span_length - 1) + 1):
            token = ids[-back]
            if token == self.end_id:
                return 0
            if token == self.start_id:
                return back
        return 0

    def next_position(self, position: int) -> int:
        """The position after one more id of a span (a finished span closes: 0)."""
        position += 1
        return 0 if position >= self.span_length else position

    def expected(self, span_so_far: Sequence[int]) -> str | None:
        """What comes next in a span whose ids so far (starting with <|image_start|>) are given:
        "code", "row", "end", or None when the span is complete or not started."""
        k = len(span_so_far)
        if k == 0 or k >= self.span_length:
            return None
        if k == self.span_length - 1:
            return "end"
        return "row" if k % (self.grid + 1) == 0 else "code"

    def allows(self, span_so_far: Sequence[int], token_id: int) -> bool:
        want = self.expected(span_so_far)
        if want == "code":
            return self.code_start <= token_id < self.code_start + self.num_codes
        return token_id == {"row": self.row_id, "end": self.end_id}.get(want, -1)

    def allowed_mask(self, position_in_span: int, vocab_size: int) -> torch.Tensor:
        """Bool [V]: the ids allowed after `position_in_span` ids of a started span (>= 1)."""
        allowed_V = torch.zeros(vocab_size, dtype=torch.bool)
        want = self.expected([self.start_id] * position_in_span)
        if want == "code":
            allowed_V[self.code_start:self.code_start + self.num_codes] = True
        elif want is not None:
            allowed_V[self.row_id if want == "row" else self.end_id] = True
        return allowed_V
