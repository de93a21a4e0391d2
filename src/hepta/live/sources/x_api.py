"""What every X API v2 source shares: the bearer token, the API root, the post fields to ask
for, rate-limit headers and the user errors X's answers turn into."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from hepta.errors import HeptaError
from hepta.live.sources.registry import SourceOption

if TYPE_CHECKING:  # httpx is imported where a client is made: the `hepta` parser reads this module
    import httpx

DEFAULT_BASE_URL = "https://api.x.com"
TOKEN_ENV = "X_BEARER_TOKEN"

log = logging.getLogger("hepta.live.sources")

# Everything `Post` reads: the post fields, the author expansion and the author's username.
POST_FIELDS = {
    "tweet.fields": "id,text,author_id,created_at,lang,public_metrics,entities,referenced_tweets,"
                    "conversation_id,edit_history_tweet_ids,note_tweet",
    "expansions": "author_id",
    "user.fields": "username,name",
}

BASE_URL = SourceOption("--base-url", f"X API root (default: {DEFAULT_BASE_URL})", metavar="URL")


def bearer_token(environ: dict | None = None) -> str:
    token = (os.environ if environ is None else environ).get(TOKEN_ENV, "").strip()
    if not token:
        raise HeptaError(f"{TOKEN_ENV} is not set; export {TOKEN_ENV}=<your X API bearer token> to read posts from X")
    return token


def make_client(token: str, base_url: str = DEFAULT_BASE_URL, read_timeout_s: float = 20.0,
                transport: httpx.BaseTransport | None = None) -> httpx.Client:
    import httpx

    if not base_url.startswith(("http://", "https://")):
        raise HeptaError(f"--base-url {base_url!r} is not an http(s) URL; write for example https://api.x.com")
    return httpx.Client(
        base_url=base_url.rstrip("/"), transport=transport,
        headers={"Authorization": f"Bearer {token}", "User-Agent": "hepta-live"},
        timeout=httpx.Timeout(10.0, read=read_timeout_s),
    )


def rate_limit_reset(response: httpx.Response) -> float | None:
    """`x-rate-limit-reset`: epoch seconds when the window resets (None when absent)."""
    value = response.headers.get("x-rate-limit-reset")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def rate_limit_exhausted(response: httpx.Response) -> bool:
    return response.headers.get("x-rate-limit-remaining") == "0"


def retryable(status: int) -> bool:
    """HTTP answers worth reconnecting after; the rest are the caller's to fix (token, query, plan)."""
    return status == 429 or status >= 500


def client_error(response: httpx.Response, what: str) -> HeptaError:
    """A HeptaError for a 4xx X will keep giving: bad token, bad query, endpoint not in the plan."""
    detail = _problem_detail(response)
    if response.status_code == 401:
        return HeptaError(f"X rejected the bearer token while {what} (HTTP 401{detail}); check {TOKEN_ENV}")
    if response.status_code == 403:
        return HeptaError(f"X refused access while {what} (HTTP 403{detail}); the token's app or plan lacks this endpoint")
    return HeptaError(f"X rejected the request while {what} (HTTP {response.status_code}{detail}); fix it and retry")


def _problem_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    errors = body.get("errors")
    message = body.get("detail") or body.get("title")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        message = errors[0].get("message") or errors[0].get("detail") or message
    return f": {message}" if message else ""


class Pacer:
    """The waits of one X source: recorded in order (tests compare them with X's schedule),
    slept through an injectable `sleep`; the default sleep ends early when `stop()` is called."""

    def __init__(self, name: str, sleep: Callable[[float], object] | None, clock: Callable[[], float]):
        self.name = name
        self.stopping = threading.Event()
        self.sleep = sleep or self.stopping.wait
        self.clock = clock
        self.waits: list[tuple[str, float]] = []  # (network | http | rate_limit | rate_limit_window, seconds)

    def wait(self, kind: str, seconds: float, cause: object) -> None:
        self.waits.append((kind, seconds))
        log.warning("%s is unavailable (%s); retrying in %.2f s", self.name, cause, seconds)
        self.sleep(seconds)
