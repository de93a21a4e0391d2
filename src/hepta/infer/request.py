"""What a caller asks the engine for, and what comes back, token by token."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from hepta.infer.sampling import SamplingParams

_request_numbers = itertools.count()


@dataclass
class TokenLogprob:
    token_id: int
    logprob: float
    top: list[tuple[int, float]]  # (token id, logprob), most likely first


@dataclass
class Event:
    """One step of one choice: new text (possibly empty while a stop string is held back), the
    tokens behind it, and the finish reason on the last event of the choice."""

    index: int  # which of the request's n choices
    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None  # "stop" | "length" | "cancelled" | "error"
    error: str | None = None
    cached_tokens: int = 0  # on a choice's first event: its prompt tokens that a kept prefix served


@dataclass
class Request:
    """A generation request: n choices continuing `prompt_ids`.

    `sink` receives every `Event`: in-process (`engine.generate`, `hepta generate`) the engine's
    thread calls it; in the server the engine client calls it on the event loop, with the events
    it reads from the engine process.
    """

    prompt_ids: list[int]
    max_tokens: int
    sampling: SamplingParams = SamplingParams()
    n: int = 1
    stop: tuple[str, ...] = ()
    logprobs: int | None = None  # None: no logprobs; k >= 0: the chosen token's and the top k
    constraint: Any = None  # a ConstraintSpec (hepta.infer.constrain), one Constraint per choice
    logit_bias: dict[int, float] | None = None  # added to those tokens' logits before sampling
    media: list | None = None  # images and videos whose features fill the prompt's placeholders (Qwen3-VL)
    sink: Callable[[Event], None] = lambda event: None
    id: int = field(default_factory=lambda: next(_request_numbers))
    arrival: float = field(default_factory=time.perf_counter)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        """Stop generating; the engine frees the request's slots at the next token boundary."""
        self.cancelled.set()
