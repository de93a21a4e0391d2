"""Text deltas from a growing token list, with stop strings that never leak into the output."""

from __future__ import annotations

from typing import Sequence

from hepta.tokenizer import Tokenizer


class StreamingText:
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
