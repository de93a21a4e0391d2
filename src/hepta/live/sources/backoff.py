"""X's documented reconnect waits for streaming connections.

Once an established connection drops, reconnect at once. When a (re)connect fails, wait:
network errors (TCP/IP, timeouts) linearly, 250 ms more each attempt, capped at 16 s;
HTTP errors exponentially from 5 s, doubling, capped at 320 s; HTTP 429 exponentially from
60 s, doubling, and never before the time in `x-rate-limit-reset`. A successful connection
starts every schedule again.
"""

from __future__ import annotations

NETWORK_STEP_S = 0.25
NETWORK_CAP_S = 16.0
HTTP_FIRST_S = 5.0
HTTP_CAP_S = 320.0
RATE_LIMIT_FIRST_S = 60.0


class Backoff:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._network = self._http = self._rate_limit = 0

    def network_error(self) -> float:
        self._network += 1
        return min(NETWORK_STEP_S * self._network, NETWORK_CAP_S)

    def http_error(self) -> float:
        wait = min(HTTP_FIRST_S * 2 ** self._http, HTTP_CAP_S)
        self._http += 1
        return wait

    def rate_limited(self, reset_epoch_s: float | None, now_epoch_s: float) -> float:
        """Each 429 doubles the wait (X lengthens the penalty on every one); the reset time is a floor."""
        wait = RATE_LIMIT_FIRST_S * 2 ** self._rate_limit
        self._rate_limit += 1
        if reset_epoch_s is not None:
            wait = max(wait, reset_epoch_s - now_epoch_s)
        return wait
