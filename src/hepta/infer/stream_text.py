"""Text deltas from a growing token list, with stop strings that never leak into the output."""

from __future__ import annotations

from typing import Sequence

from hepta.tokenizer import TextTokenizer


class StreamingText:
    """Turns a growing token list into text deltas.

    Decodes incrementally: only the tokens since the last complete text are decoded, each time
    together with the window before them (decoders such as SentencePiece's write a leading space
    depending on what precedes), so a step costs the same at token 10 and at token 10,000.
    Holds back (a) an incomplete UTF-8 character (byte-level BPE can split one across tokens)
    and (b) any tail that could still become a stop string, so stop strings never leak out.
    """

    def __init__(self, tokenizer: TextTokenizer, stop: Sequence[str]):
        self.tokenizer, self.stop = tokenizer, [s for s in stop if s]
        self.longest_stop = max((len(s) for s in self.stop), default=0)
        self.text = ""  # decoded text of the tokens before read_offset: whole characters only
        self.prefix_offset = self.read_offset = 0
        self.emitted = 0
        self.final_text: str | None = None

    def _decode_new(self, ids: list[int]) -> str:
        """Text of ids[read_offset:], decoded in the context of the previous window."""
        before = self.tokenizer.decode(ids[self.prefix_offset:self.read_offset])
        return self.tokenizer.decode(ids[self.prefix_offset:])[len(before):]

    def push(self, ids: list[int]) -> str:
        new = self._decode_new(ids)
        searched_from = max(0, len(self.text) - self.longest_stop + 1)
        if new and not new.endswith("\ufffd"):  # a whole character at the end: the window moves on
            self.text += new
            self.prefix_offset, self.read_offset = self.read_offset, len(ids)
            new = ""
        text = self.text
        hits = [i for i in (text.find(s, searched_from) for s in self.stop) if i >= 0]
        if hits:
            self.final_text = text[:min(hits)]
            return self._emit_upto(self.final_text, len(self.final_text))
        safe = len(text)
        for s in self.stop:
            for k in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:k]):
                    safe = min(safe, len(text) - k)
                    break
        return self._emit_upto(text, safe)

    def finish(self, ids: list[int]) -> str:
        text = self.final_text if self.final_text is not None else self.text + self._decode_new(ids)
        return self._emit_upto(text, len(text))

    def _emit_upto(self, text: str, end: int) -> str:
        delta = text[self.emitted:end] if end > self.emitted else ""
        self.emitted = max(self.emitted, end)
        return delta
