"""Token buckets per key with a fake clock: bursts, refill, exact waits and OpenAI's headers."""

import threading

import pytest

from hepta.serve.keys import KeyRecord
from hepta.serve.ratelimit import RateLimiter, format_reset


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def key(rpm=None, tpm=None, id=1):
    return KeyRecord(id=id, name=f"k{id}", prefix="hk-abcdefgh", created_at=0.0, revoked=False, rpm=rpm, tpm=tpm)


@pytest.fixture
def clock():
    return FakeClock()


def test_burst_of_a_minutes_requests_then_exact_wait(clock):
    limiter, k = RateLimiter(clock), key(rpm=6)
    for i in range(6):
        d = limiter.check(k, 0)
        assert d.allowed and d.headers["x-ratelimit-remaining-requests"] == str(5 - i)
    d = limiter.check(k, 0)
    assert not d.allowed and d.reason == "requests"
    assert d.retry_after_s == pytest.approx(10.0)  # 6/min refills one request every 10 s
    assert d.headers["retry-after"] == "10" and d.headers["retry-after-ms"] == "10000"
    assert d.headers["x-ratelimit-remaining-requests"] == "0"
    assert d.headers["x-ratelimit-reset-requests"] == "1m0s"  # empty to full
    assert "6 requests per minute" in d.message and "10s" in d.message
    clock.now += 9.999
    assert not limiter.check(k, 0).allowed
    clock.now += 0.001
    d = limiter.check(k, 0)
    assert d.allowed and d.headers["x-ratelimit-remaining-requests"] == "0"


def test_refused_requests_take_nothing(clock):
    limiter, k = RateLimiter(clock), key(rpm=60, tpm=600)
    assert limiter.check(k, 600).allowed
    for _ in range(5):
        d = limiter.check(k, 100)
        assert not d.allowed and d.reason == "tokens"
        assert d.headers["x-ratelimit-remaining-requests"] == "59"
        assert d.headers["x-ratelimit-remaining-tokens"] == "0"
    # 600/min refills 10 tokens/s; 100 tokens after 10 s, however often it was refused meanwhile
    assert d.retry_after_s == pytest.approx(10.0)
    clock.now += 10
    d = limiter.check(k, 100)
    assert d.allowed and d.headers["x-ratelimit-remaining-tokens"] == "0"


def test_tokens_headers_and_retry_after_rounds_up(clock):
    limiter, k = RateLimiter(clock), key(tpm=1000)
    d = limiter.check(k, 250)
    assert d.allowed
    assert d.headers == {"x-ratelimit-limit-tokens": "1000", "x-ratelimit-remaining-tokens": "750",
                         "x-ratelimit-reset-tokens": "15s"}  # 250 tokens at 1000/min = 15 s
    assert limiter.check(k, 700).allowed
    d = limiter.check(k, 100)  # 50 left; 50 more take 3 s
    assert not d.allowed and d.retry_after_s == pytest.approx(3.0) and d.headers["retry-after"] == "3"
    clock.now += 2.5
    d = limiter.check(k, 100)  # 91.67 left... 8.33 more take 0.5 s; retry-after is whole seconds, rounded up
    assert not d.allowed and d.retry_after_s == pytest.approx(0.5) and d.headers["retry-after"] == "1"
    assert d.headers["retry-after-ms"] == "500"
    assert d.headers["x-ratelimit-remaining-tokens"] == "91"


def test_both_buckets_must_cover_and_the_longer_wait_wins(clock):
    limiter, k = RateLimiter(clock), key(rpm=1, tpm=60)
    assert limiter.check(k, 30).allowed
    d = limiter.check(k, 60)  # requests: 60 s to the next; tokens: 30 s to 60
    assert not d.allowed and d.reason == "requests" and d.retry_after_s == pytest.approx(60.0)
    assert d.headers["retry-after"] == "60"


def test_request_larger_than_the_limit_is_too_large_not_wait(clock):
    limiter, k = RateLimiter(clock), key(tpm=100)
    d = limiter.check(k, 101)
    assert not d.allowed and d.reason == "too_large" and "retry-after" not in d.headers
    assert d.headers["x-should-retry"] == "false"
    assert "101 tokens" in d.message and "100 tokens per minute" in d.message
    assert limiter.check(k, 100).allowed  # nothing was taken


def test_settle_gives_back_or_charges_the_difference(clock):
    limiter, k = RateLimiter(clock), key(tpm=600)
    assert limiter.check(k, 500).allowed  # prompt + max_tokens
    limiter.settle(k, 500, 120)  # the answer stopped early
    d = limiter.check(k, 0)
    assert d.headers["x-ratelimit-remaining-tokens"] == "480"
    limiter.settle(k, 0, 580)  # an under-estimate leaves a debt of 100 tokens
    d = limiter.check(k, 0)
    assert not d.allowed and d.retry_after_s == pytest.approx(10.0)
    limiter.settle(k, 10_000, 0)  # never more than a full bucket
    assert limiter.check(k, 0).headers["x-ratelimit-remaining-tokens"] == "600"


def test_unlimited_keys_always_pass_and_send_no_headers(clock):
    limiter = RateLimiter(clock)
    k = key()
    for _ in range(1000):
        d = limiter.check(k, 10**9)
        assert d.allowed and d.headers == {}
    only_rpm = limiter.check(key(rpm=5, id=2), 10**9)
    assert only_rpm.allowed and set(only_rpm.headers) == {
        "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"}


def test_keys_have_their_own_buckets(clock):
    limiter = RateLimiter(clock)
    assert limiter.check(key(rpm=1, id=1), 0).allowed
    assert not limiter.check(key(rpm=1, id=1), 0).allowed
    assert limiter.check(key(rpm=1, id=2), 0).allowed


def test_a_changed_limit_applies_to_the_next_check(clock):
    limiter = RateLimiter(clock)
    assert limiter.check(key(rpm=2), 0).allowed
    assert limiter.check(key(rpm=2), 0).allowed
    assert not limiter.check(key(rpm=2), 0).allowed
    d = limiter.check(key(rpm=120), 0)  # raised: 2 req/s refill now
    assert not d.allowed and d.retry_after_s == pytest.approx(0.5)
    assert limiter.check(key(), 0).allowed  # limit removed


def test_threads_never_get_more_than_the_burst(clock):
    limiter, k = RateLimiter(clock), key(rpm=100, tpm=10_000)
    allowed = []

    def worker():
        for _ in range(50):
            allowed.append(limiter.check(k, 10).allowed)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(allowed) == 100 and len(allowed) == 400


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (0.0004, "1ms"), (0.012, "12ms"), (0.999, "999ms"), (0.9999, "1s"), (1, "1s"), (17.28, "17.28s"),
    (59.5, "59.5s"), (60, "1m0s"), (90.25, "1m30.25s"), (360, "6m0s"), (3600, "1h0m0s"), (3725.5, "1h2m5.5s"),
    (0.1 + 0.2, "300ms")])
def test_reset_durations_read_like_openais(seconds, text):
    assert format_reset(seconds) == text
