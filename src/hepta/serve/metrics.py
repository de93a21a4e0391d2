"""Prometheus metrics of one server: requests, latency histograms, batch state, throughput.

Each app has its own registry, so several servers in one process (tests, the demo) do not
collide. Gauges of the engine's state are read at scrape time.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from hepta.infer.client import EngineClient
from hepta.infer.engine import Observer

# seconds; TTFT spans queueing plus prefill, inter-token one decode step of a whole batch
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
THROUGHPUT_WINDOW_S = 10.0


class ServerMetrics(Observer):
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("hepta_requests", "HTTP requests by endpoint and status", ["endpoint", "status"],
                                registry=r)
        self.ttft = Histogram("hepta_time_to_first_token_seconds", "Request arrival to first generated token",
                              buckets=TTFT_BUCKETS, registry=r)
        self.itl = Histogram("hepta_inter_token_latency_seconds", "Time between two tokens of one sequence",
                             buckets=ITL_BUCKETS, registry=r)
        self.prompt_tokens = Counter("hepta_prompt_tokens", "Prompt tokens processed", registry=r)
        self.prefix_cache_hit_tokens = Counter("hepta_prefix_cache_hit_tokens",
                                               "Prompt tokens served from kept prefixes instead of prefilled", registry=r)
        self.generation_tokens = Counter("hepta_generation_tokens", "Tokens generated", registry=r)
        self.running = Gauge("hepta_requests_running", "Requests in the running batch", registry=r)
        self.waiting = Gauge("hepta_requests_waiting", "Requests queued for a slot", registry=r)
        self.kv_usage = Gauge("hepta_kv_cache_usage_ratio", "Share of KV cache token capacity in use", registry=r)
        self.tokens_per_s = Gauge("hepta_generation_tokens_per_second",
                                  f"Generated tokens per second over the last {THROUGHPUT_WINDOW_S:.0f} s", registry=r)
        self._recent: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()
        self.tokens_per_s.set_function(self._throughput)

    def watch(self, engine: EngineClient) -> None:
        self.running.set_function(lambda: engine.num_requests_running)
        self.waiting.set_function(lambda: engine.num_waiting)
        self.kv_usage.set_function(lambda: engine.kv_usage)

    def unwatch(self) -> None:
        """No engine is serving (it died): its gauges read 0 until `watch` is given the next one."""
        for gauge in (self.running, self.waiting, self.kv_usage):
            gauge.set_function(lambda: 0.0)

    # --- engine hooks (the engine client's reader thread, as the engine's batches arrive) ---

    def first_token(self, seconds: float) -> None:
        self.ttft.observe(seconds)

    def inter_token(self, seconds: float) -> None:
        self.itl.observe(seconds)

    def tokens_generated(self, count: int) -> None:
        self.generation_tokens.inc(count)
        now = time.monotonic()
        with self._lock:
            self._recent.append((now, count))
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._recent and self._recent[0][0] < now - THROUGHPUT_WINDOW_S:
            self._recent.popleft()

    def _throughput(self) -> float:
        now = time.monotonic()
        with self._lock:
            self._trim(now)
            return sum(count for _, count in self._recent) / THROUGHPUT_WINDOW_S
