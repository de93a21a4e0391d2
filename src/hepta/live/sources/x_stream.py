"""The X API v2 filtered stream (`GET /2/tweets/search/stream`) as an iterator of post batches.

X sends one post per line (newline-delimited JSON over chunked HTTP) and a blank `\\r\\n` at
least every 20 seconds to show the connection is alive; 20 s without a byte means the
connection is gone. Malformed lines are logged and skipped; the stream goes on.
Reconnects follow X's documented schedule (see backoff.py). With `backfill_minutes` (1-5)
a reconnect asks X to send again what it sent while the connection was down, which
re-delivers some posts: the store's idempotent upsert keeps each once.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from hepta.errors import HeptaError
from hepta.live.post import Post, posts_from_response
from hepta.live.sources.backoff import Backoff
from hepta.live.sources.base import SourceStats
from hepta.live.sources.registry import SourceKind, SourceOption
from hepta.live.sources.x_api import (
    BASE_URL, DEFAULT_BASE_URL, POST_FIELDS, Pacer, bearer_token, client_error, make_client, rate_limit_reset,
    retryable,
)

if TYPE_CHECKING:  # imported when the stream is read: the `hepta` parser reads this module
    import httpx

STREAM_PATH = "/2/tweets/search/stream"
READ_TIMEOUT_S = 20.0

log = logging.getLogger(__name__)


class XStream:
    def __init__(self, token: str, base_url: str = DEFAULT_BASE_URL, *, backfill_minutes: int = 0,
                 read_timeout_s: float = READ_TIMEOUT_S, sleep: Callable[[float], object] | None = None,
                 clock: Callable[[], float] = time.time, transport: httpx.BaseTransport | None = None):
        if not 0 <= backfill_minutes <= 5:
            raise HeptaError(f"backfill_minutes {backfill_minutes} is outside what X offers; choose 0 to 5")
        self.token, self.base_url, self.backfill_minutes = token, base_url, backfill_minutes
        self.read_timeout_s, self.transport = read_timeout_s, transport
        self.pacer = Pacer("the filtered stream", sleep, clock)
        self._stopping = self.pacer.stopping
        self.waits = self.pacer.waits  # (kind, seconds) of every wait, in order
        self.stats = SourceStats()

    def stop(self) -> None:
        """Stop at the next keep-alive or reconnect, so every post already on the wire is read first."""
        self._stopping.set()

    def __iter__(self) -> Iterator[list[Post]]:
        import httpx

        backoff = Backoff()
        reconnect = False
        with make_client(self.token, self.base_url, self.read_timeout_s, self.transport) as client:
            while not self._stopping.is_set():
                params = dict(POST_FIELDS)
                if reconnect:
                    self.stats.reconnects += 1
                    if self.backfill_minutes:
                        params["backfill_minutes"] = str(self.backfill_minutes)
                reconnect = True
                alive = False
                try:
                    # each connection carries one endless response; reusing a pooled one the server has just
                    # closed would fail the reconnect and count as a network error, so none is pooled
                    with client.stream("GET", STREAM_PATH, params=params, headers={"Connection": "close"}) as response:
                        if response.status_code != 200:
                            response.read()
                            self._wait_after_http_error(response, backoff)
                            continue
                        self.stats.connections += 1
                        for batch in self._read(response):
                            if not alive:  # the connection works: every schedule starts again
                                alive = True
                                backoff.reset()
                            if batch:
                                yield batch
                    if self._stopping.is_set():
                        return
                    if alive:
                        log.info("the filtered stream closed; reconnecting")
                    else:  # 200 and an empty body: as good as refused
                        self.pacer.wait("network", backoff.network_error(), "closed before sending anything")
                except httpx.TransportError as e:  # refused, reset, truncated chunk, 20 s without a byte
                    if alive:  # an established connection dropped: reconnect at once
                        log.info("the filtered stream dropped (%s); reconnecting", type(e).__name__)
                    else:
                        self.pacer.wait("network", backoff.network_error(), type(e).__name__)

    def _read(self, response: httpx.Response) -> Iterator[list[Post]]:
        """Yields a (possibly empty) batch per line, so the caller sees every sign of life."""
        for line in response.iter_lines():
            if not line.strip():
                self.stats.keepalives += 1
                if self._stopping.is_set():
                    return
                yield []
                continue
            self.stats.lines += 1
            try:
                message = json.loads(line)
                posts = posts_from_response(message, line=line)
            except ValueError as e:  # JSONDecodeError and MalformedPost alike
                self.stats.malformed += 1
                log.warning("skipped a malformed stream line (%s): %.120s", e, line)
                yield []
                continue
            if not posts and isinstance(message, dict) and message.get("errors"):
                log.warning("the filtered stream reported: %s", json.dumps(message["errors"])[:300])
            self.stats.posts += len(posts)
            yield posts

    def _wait_after_http_error(self, response: httpx.Response, backoff: Backoff) -> None:
        if not retryable(response.status_code):
            raise client_error(response, "connecting to the filtered stream")
        if response.status_code == 429:
            self.pacer.wait("rate_limit", backoff.rate_limited(rate_limit_reset(response), self.pacer.clock()),
                            "HTTP 429")
        else:
            self.pacer.wait("http", backoff.http_error(), f"HTTP {response.status_code}")


def open_stream(_: str, options: argparse.Namespace) -> XStream:
    """The filtered stream, once it has rules: those of --rule added when missing, else the ones X keeps."""
    from hepta.live.sources.x_rules import StreamRules

    token = bearer_token()
    base_url = options.base_url or DEFAULT_BASE_URL
    stream = XStream(token, base_url, backfill_minutes=options.backfill_minutes)
    with make_client(token, base_url) as client:
        rules = StreamRules(client).ensure(options.rule) if options.rule else StreamRules(client).list()
    if not rules:
        raise HeptaError("the filtered stream has no rules, so X would send no posts; add one with --rule VALUE")
    # --quiet is `hepta live ingest`'s own flag (the display), not a source option: absent for other callers
    if not getattr(options, "quiet", False):
        print("stream rules: " + "; ".join(r.value for r in rules), file=sys.stderr)
    return stream


RULE = SourceOption("--rule", "x-stream: a filtered-stream rule to add if missing (repeatable), "
                    "e.g. --rule '#AI lang:en'", metavar="VALUE", repeat=True)
BACKFILL = SourceOption("--backfill-minutes", "x-stream: on reconnect, ask X for the last N (1-5) minutes missed "
                        "(plans that offer it)", type=int, default=0, metavar="N")
SOURCE = SourceKind("x-stream", "X filtered stream", open_stream, (BASE_URL, RULE, BACKFILL))
