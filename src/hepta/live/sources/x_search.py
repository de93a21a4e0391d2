"""X API v2 recent search (`GET /2/tweets/search/recent`) for backfill and polling.

One pass walks the pages (`next_token`) of posts newer than `since_id`, newest first; the
pass's `newest_id` becomes the next pass's `since_id`, so polling never reads a post twice.
When `x-rate-limit-remaining` reaches 0 the next request waits for `x-rate-limit-reset`.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from hepta.errors import HeptaError
from hepta.live.post import MalformedPost, Post, posts_from_response
from hepta.live.sources.backoff import Backoff
from hepta.live.sources.base import SourceStats
from hepta.live.sources.registry import SourceKind, SourceOption
from hepta.live.sources.x_api import (
    BASE_URL, DEFAULT_BASE_URL, POST_FIELDS, Pacer, bearer_token, client_error, make_client, rate_limit_exhausted,
    rate_limit_reset, retryable,
)

if TYPE_CHECKING:  # imported when searching: the `hepta` parser reads this module
    import httpx

SEARCH_PATH = "/2/tweets/search/recent"

log = logging.getLogger(__name__)


class XSearch:
    def __init__(self, token: str, query: str, base_url: str = DEFAULT_BASE_URL, *, since_id: str | None = None,
                 max_results: int = 100, poll_s: float | None = None, sleep: Callable[[float], object] | None = None,
                 clock: Callable[[], float] = time.time, transport: httpx.BaseTransport | None = None):
        if not query.strip():
            raise HeptaError("the search query is empty; write one, for example x-search:'#AI lang:en'")
        if not 10 <= max_results <= 100:
            raise HeptaError(f"max_results {max_results} is outside what recent search allows; choose 10 to 100")
        self.token, self.query, self.base_url, self.since_id = token, query, base_url, since_id
        self.max_results, self.poll_s, self.transport = max_results, poll_s, transport
        self.pacer = Pacer("recent search", sleep, clock)
        self._stopping = self.pacer.stopping
        self.waits = self.pacer.waits  # (kind, seconds) of every wait, in order
        self._not_before: float | None = None  # epoch seconds the rate-limit window reopens
        self.stats = SourceStats()

    def stop(self) -> None:
        self._stopping.set()

    def __iter__(self) -> Iterator[list[Post]]:
        backoff = Backoff()
        with make_client(self.token, self.base_url, transport=self.transport) as client:
            while True:
                yield from self._one_pass(client, backoff)
                if self.poll_s is None or self._stopping.is_set():
                    return
                self.pacer.sleep(self.poll_s)
                if self._stopping.is_set():
                    return

    def _one_pass(self, client: httpx.Client, backoff: Backoff) -> Iterator[list[Post]]:
        newest: str | None = None
        next_token: str | None = None
        while True:
            params = {"query": self.query, "max_results": str(self.max_results), **POST_FIELDS}
            if self.since_id:
                params["since_id"] = self.since_id
            if next_token:
                params["next_token"] = next_token
            page = self._get(client, params, backoff)
            meta = page.get("meta") or {}
            if meta.get("newest_id") and (newest is None or int(meta["newest_id"]) > int(newest)):
                newest = meta["newest_id"]
            posts = posts_from_response(page, on_malformed=self._skip)
            if posts:
                self.stats.lines += 1
                self.stats.posts += len(posts)
                yield posts
            next_token = meta.get("next_token")
            if not next_token:
                break
        if newest:
            self.since_id = newest

    def _skip(self, error: MalformedPost) -> None:
        self.stats.malformed += 1
        log.warning("skipped a malformed post in a search page: %s", error)

    def _get(self, client: httpx.Client, params: dict, backoff: Backoff) -> dict:
        import httpx

        while True:
            if self._not_before is not None:
                wait, self._not_before = self._not_before - self.pacer.clock(), None
                if wait > 0:
                    self.pacer.wait("rate_limit_window", wait, "no requests left in this rate-limit window")
            try:
                response = client.get(SEARCH_PATH, params=params)
            except httpx.TransportError as e:
                self.pacer.wait("network", backoff.network_error(), type(e).__name__)
                continue
            if response.status_code == 200:
                backoff.reset()
                if rate_limit_exhausted(response):
                    self._not_before = rate_limit_reset(response)
                try:
                    return response.json()
                except ValueError:
                    self.stats.malformed += 1
                    self.pacer.wait("http", backoff.http_error(), "a search page that is not JSON")
                    continue
            if not retryable(response.status_code):
                raise client_error(response, f"searching recent posts for {self.query!r}")
            if response.status_code == 429:
                self.pacer.wait("rate_limit", backoff.rate_limited(rate_limit_reset(response), self.pacer.clock()), "HTTP 429")
            else:
                self.pacer.wait("http", backoff.http_error(), f"HTTP {response.status_code}")


def open_search(query: str, options: argparse.Namespace) -> XSearch:
    token = bearer_token()
    if options.poll is not None and options.poll <= 0:
        raise HeptaError(f"--poll {options.poll} must be a positive number of seconds")
    return XSearch(token, query, options.base_url or DEFAULT_BASE_URL, poll_s=options.poll)


POLL = SourceOption("--poll", "x-search: search again for newer posts every SECONDS (default: one backfill pass)",
                    type=float, metavar="SECONDS")
SOURCE = SourceKind("x-search:QUERY", "X recent search", open_search, (BASE_URL, POLL))
