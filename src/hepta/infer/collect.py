"""Whole answers from engine events: the one accumulator behind every non-streamed caller.

`engine.generate` (blocking, in-process) and the server's non-streamed routes (async, events
from the engine process) both feed events into a `Collector`; only how they wait differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Collection

from hepta.errors import HeptaError
from hepta.infer.request import Event, TokenLogprob


class GenerationFailed(HeptaError):
    """The engine ended a choice with an error (a failing forward, or the engine process died)."""


@dataclass
class Choice:
    text: str = ""
    token_ids: list[int] = field(default_factory=list)  # generated tokens, end tokens left out
    finish_reason: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)


class Collector:
    """Accumulates the events of `num_choices` choices (indices 0..num_choices-1) until each has finished."""

    def __init__(self, num_choices: int, end_ids: Collection[int], choices: list[Choice] | None = None):
        """`choices`: the objects to fill (a caller that reads the answer while it grows passes its own)."""
        self.choices = choices if choices is not None else [Choice() for _ in range(num_choices)]
        self.end_ids = end_ids
        self.remaining = num_choices

    @property
    def done(self) -> bool:
        return self.remaining == 0

    def add(self, index: int, event: Event) -> None:
        """Folds one event into choice `index`; raises GenerationFailed for an error event."""
        if event.error:
            raise GenerationFailed(f"generation failed: {event.error}")
        choice = self.choices[index]
        choice.text += event.text
        choice.token_ids += [t for t in event.token_ids if t not in self.end_ids]
        choice.logprobs += event.logprobs or []
        if event.finish_reason:
            choice.finish_reason = event.finish_reason
            self.remaining -= 1
