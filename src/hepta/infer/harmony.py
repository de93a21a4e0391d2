"""gpt-oss's Harmony output as chat-completion deltas: the analysis channel as `reasoning_content`, the
final and commentary channels as `content`, and the format's markers never shown.

A Harmony answer is a run of messages, each `<|channel|>NAME ...<|message|>TEXT` closed by `<|end|>`
(another message follows, opened by `<|start|>assistant`), `<|return|>` or `<|call|>`; the prompt
already ends with `<|start|>assistant`. The markers are special tokens, so they arrive whole; a
tail that could still become one is held back all the same. Text the model writes outside any
message (an untrained model's) is passed on as content, so nothing generated is lost.
"""

from __future__ import annotations

CHANNEL, MESSAGE = "<|channel|>", "<|message|>"
CLOSERS = ("<|end|>", "<|return|>", "<|call|>")
_MARKERS = (CHANNEL, MESSAGE, "<|start|>", *CLOSERS)


def uses_harmony(tokenizer) -> bool:
    """A tokenizer with Harmony's channel token (gpt-oss's o200k_harmony)."""
    backend = getattr(tokenizer, "hf", None)
    return backend is not None and backend.token_to_id(CHANNEL) is not None and \
        backend.token_to_id(MESSAGE) is not None


def _held_back(text: str) -> int:
    """How many characters at the end of `text` could be the start of a marker."""
    for size in range(min(len(text), max(map(len, _MARKERS)) - 1), 0, -1):
        if any(marker.startswith(text[-size:]) for marker in _MARKERS):
            return size
    return 0


class HarmonyStream:
    """Text pieces in, deltas out: `{"reasoning_content": ...}` for analysis, `{"content": ...}` otherwise."""

    def __init__(self):
        self._buffer = ""
        self._field: str | None = None  # inside a message: the delta field its text goes to
        self.reasoning, self.content = [], []  # everything emitted, for a whole (non-streamed) answer

    def push(self, text: str) -> list[dict]:
        self._buffer += text
        deltas = []
        while True:
            if self._field is None:  # a header: up to <|message|>
                at = self._buffer.find(MESSAGE)
                if at < 0:
                    break
                self._field = self._channel_field(self._buffer[:at])
                self._buffer = self._buffer[at + len(MESSAGE):]
                continue
            ends = [(at, closer) for closer in CLOSERS if (at := self._buffer.find(closer)) >= 0]
            if not ends:
                keep = _held_back(self._buffer)
                deltas += self._emit(self._buffer[:len(self._buffer) - keep])
                self._buffer = self._buffer[len(self._buffer) - keep:]
                break
            at, closer = min(ends)
            deltas += self._emit(self._buffer[:at])
            self._buffer, self._field = self._buffer[at + len(closer):], None
        return deltas

    def finish(self) -> list[dict]:
        """What is still held when generation ends: the rest of a message, or text written outside any message
        as content (an unfinished header, the model's own framing, is dropped)."""
        deltas = self.push("")
        rest = self._buffer
        if self._field is None:
            self._field = "content"
            if any(marker in rest for marker in _MARKERS):
                rest = ""
        deltas += self._emit(rest)
        self._buffer = ""
        return deltas

    @staticmethod
    def _channel_field(header: str) -> str:
        # e.g. "<|channel|>analysis", "<|start|>assistant<|channel|>final", "<|channel|>commentary to=functions.f"
        channel = header.partition(CHANNEL)[2].split("<|")[0].split()
        return "reasoning_content" if channel[:1] == ["analysis"] else "content"

    def _emit(self, text: str) -> list[dict]:
        if not text:
            return []
        (self.reasoning if self._field == "reasoning_content" else self.content).append(text)
        return [{self._field: text}]


def split_harmony(text: str) -> tuple[str, str]:
    """(reasoning, content) of a whole Harmony answer."""
    stream = HarmonyStream()
    stream.push(text)
    stream.finish()
    return "".join(stream.reasoning), "".join(stream.content)
