"""Per-key token buckets for requests per minute and tokens per minute, with OpenAI's headers.

Each limited key has two buckets that hold up to a minute's allowance and refill continuously
(rpm/60 requests and tpm/60 tokens each second), so a full minute's allowance may arrive as
one burst and a steady client is never refused. A request is admitted only when both buckets
cover it (one request; its estimated tokens: prompt plus max_tokens), and then it takes from
both. `settle` gives back what the estimate over-charged (or takes what it under-charged) once
the request has finished.

Buckets live in memory: a restart refills every key. Usage totals, which are money, persist in
the key file instead. A limit changed in the key file applies to the next check.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from hepta.serve.keys import KeyRecord

SECONDS_PER_MINUTE = 60.0


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether to serve a request now, and the headers to send either way.

    `reason`: "" when allowed; "requests" or "tokens" when a bucket is short (wait
    `retry_after_s`; headers `retry-after` and `retry-after-ms`); "too_large" when the estimate
    exceeds the whole tokens-per-minute limit, which no wait fixes (header `x-should-retry: false`).
    `message` is a sentence for the 429 body.
    """

    allowed: bool
    retry_after_s: float
    headers: dict[str, str] = field(default_factory=dict)
    reason: str = ""
    message: str = ""


class _Bucket:
    __slots__ = ("capacity", "level", "updated")

    def __init__(self, capacity: int, now: float):
        self.capacity = capacity
        self.level = float(capacity)
        self.updated = now

    @property
    def rate(self) -> float:  # units per second
        return self.capacity / SECONDS_PER_MINUTE

    def refill(self, capacity: int, now: float) -> None:
        self.capacity = capacity  # the key file's current limit: a change applies at once
        self.level = min(float(self.capacity), self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait_for(self, amount: float) -> float:
        """Seconds until the bucket holds `amount`."""
        return max(0.0, (amount - self.level) / self.rate)

    def time_to_full(self) -> float:
        return max(0.0, (self.capacity - self.level) / self.rate)


class RateLimiter:
    """Token-bucket limits per key; thread-safe. `clock` is injectable for tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[tuple[int, str], _Bucket] = {}

    def _bucket(self, key: KeyRecord, kind: str, now: float) -> _Bucket | None:
        limit = key.rpm if kind == "requests" else key.tpm
        if limit is None:
            self._buckets.pop((key.id, kind), None)
            return None
        bucket = self._buckets.get((key.id, kind))
        if bucket is None:
            bucket = self._buckets[(key.id, kind)] = _Bucket(limit, now)
        else:
            bucket.refill(limit, now)
        return bucket

    def check(self, key: KeyRecord, estimated_tokens: int) -> Decision:
        """Admits the request (taking one request and `estimated_tokens` from the buckets) or says how long to wait."""
        assert estimated_tokens >= 0, estimated_tokens
        with self._lock:
            now = self._clock()
            requests = self._bucket(key, "requests", now)
            tokens = self._bucket(key, "tokens", now)
            if tokens is not None and estimated_tokens > tokens.capacity:
                headers = _headers(requests, tokens)
                headers["x-should-retry"] = "false"  # the openai client's signal: waiting cannot help
                return Decision(False, 0.0, headers, "too_large",
                                f"Request too large for key {key.name!r}: it may use {estimated_tokens} tokens "
                                f"(prompt plus max_tokens) but the limit is {tokens.capacity} tokens per minute; "
                                "lower max_tokens or shorten the prompt.")
            waits = {}
            if requests is not None and requests.level < 1:
                waits["requests"] = requests.wait_for(1)
            if tokens is not None and tokens.level < estimated_tokens:
                waits["tokens"] = tokens.wait_for(estimated_tokens)
            if waits:
                reason = max(waits, key=waits.get)
                retry = waits[reason]
                headers = _headers(requests, tokens)
                # whole seconds for HTTP; the openai client prefers the exact wait in retry-after-ms
                headers["retry-after"] = str(max(1, math.ceil(retry)))
                headers["retry-after-ms"] = str(max(1, math.ceil(retry * 1000 - 1e-6)))
                limit = requests.capacity if reason == "requests" else tokens.capacity
                unit = "requests" if reason == "requests" else "tokens"
                return Decision(False, retry, headers, reason,
                                f"Rate limit reached for key {key.name!r}: {limit} {unit} per minute; "
                                f"try again in {format_reset(retry)}.")
            if requests is not None:
                requests.level -= 1
            if tokens is not None:
                tokens.level -= estimated_tokens
            return Decision(True, 0.0, _headers(requests, tokens))

    def settle(self, key: KeyRecord, estimated_tokens: int, actual_tokens: int) -> None:
        """Corrects the tokens bucket once the request's real size is known.

        An under-estimate may leave the bucket below zero: the debt delays the key's next requests.
        """
        with self._lock:
            tokens = self._bucket(key, "tokens", self._clock())
            if tokens is not None:
                tokens.level = min(float(tokens.capacity), tokens.level + estimated_tokens - actual_tokens)


def _headers(requests: _Bucket | None, tokens: _Bucket | None) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers; an unlimited dimension sends none of its three."""
    headers = {}
    for kind, bucket in (("requests", requests), ("tokens", tokens)):
        if bucket is not None:
            headers[f"x-ratelimit-limit-{kind}"] = str(bucket.capacity)
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, math.floor(bucket.level)))
            headers[f"x-ratelimit-reset-{kind}"] = format_reset(bucket.time_to_full())
    return headers


def format_reset(seconds: float) -> str:
    """A duration the way OpenAI's reset headers write it (Go's style): "12ms", "1s", "17.28s", "6m0s", "1h0m0s".

    Rounded up to the millisecond, so waiting the stated time is always enough.
    """
    total_ms = max(0, math.ceil(seconds * 1000 - 1e-6))  # the epsilon keeps 0.1 + 0.2 style noise from adding 1ms
    if total_ms < 1000:
        return f"{total_ms}ms" if total_ms else "0s"
    hours, rest_ms = divmod(total_ms, 3_600_000)
    minutes, rest_ms = divmod(rest_ms, 60_000)
    secs, ms = divmod(rest_ms, 1000)
    text = f"{secs}.{ms:03d}".rstrip("0") + "s" if ms else f"{secs}s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    if minutes:
        return f"{minutes}m{text}"
    return text
