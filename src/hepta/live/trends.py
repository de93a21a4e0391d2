"""Trending terms: counts in the latest window scored against each term's own baseline.

A term trends when it is used far more in the latest window than its history predicts, by
enough distinct people. Per term, posts are counted in time buckets (a third of the window);
the baseline rate is an exponentially weighted mean of the bucket counts before the window
(recent buckets weigh more, alpha 0.15 per bucket), and the expected count in the window is that
rate times the window. Counts of rare events are Poisson, whose variance equals the mean, so
the burst score is the Poisson z-score

    score = (count - expected) / sqrt(expected + 1)

(+1 keeps a term never seen before from scoring infinitely high on a handful of posts). A term
is reported when score >= min_score, count >= min_count and distinct authors >= min_authors, so
one account posting a word fifty times is not a trend; the rules follow published trend
detection on Twitter (velocity over a per-term baseline with volume and diversity floors).

`TrendCounter` is incremental: `add` costs one term extraction and a few dict updates per post
and `trends(now)` looks only at terms used in the window. `trends(store, ...)` builds one from
the posts of the window and its history and asks it once.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from hepta.errors import HeptaError
from hepta.live.post import Post
from hepta.live.store import Store, StoredPost, opened
from hepta.live.terms import cached_terms

BUCKETS_PER_WINDOW = 3
HISTORY_WINDOWS = 8
ALPHA = 0.15
MIN_COUNT = 8
MIN_AUTHORS = 5
MIN_SCORE = 7.0
EXAMPLES = 3


@dataclass
class Trend:
    term: str
    count: int  # posts using the term in the window
    expected: float  # what the baseline predicts for the window
    score: float
    num_authors: int
    example_ids: list[str]  # the most engaging posts using it


@dataclass
class TrendReport:
    window_s: float
    start: str  # ISO 8601 UTC; the window is [start, end)
    end: str
    lang: str | None
    baseline_s: float  # history the baselines were measured on (0: none yet, so nothing can trend)
    num_posts: int  # posts in the window
    trends: list[Trend] = field(default_factory=list)


class TrendCounter:
    """Per-term bucket counts over a sliding history; see the module docstring."""

    def __init__(self, window: timedelta = timedelta(minutes=15), history_windows: int = HISTORY_WINDOWS,
                 lang: str | None = None, min_count: int = MIN_COUNT, min_authors: int = MIN_AUTHORS,
                 min_score: float = MIN_SCORE):
        if window <= timedelta(0):
            raise HeptaError(f"the trend window must be positive, got {window}")
        self.window_s = window.total_seconds()
        self.bucket_s = self.window_s / BUCKETS_PER_WINDOW
        self.history_buckets = history_windows * BUCKETS_PER_WINDOW
        self.lang = lang
        self.min_count, self.min_authors, self.min_score = min_count, min_authors, min_score
        # term -> bucket -> count; term -> bucket -> authors; bucket -> posts (for the window's examples)
        self.counts: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.authors: dict[str, dict[int, set]] = defaultdict(lambda: defaultdict(set))
        self.posts: dict[int, list[tuple[StoredPost, tuple[str, ...]]]] = defaultdict(list)
        self.totals: dict[int, int] = defaultdict(int)  # bucket -> posts
        self.seen: dict[int, set[str]] = defaultdict(set)  # bucket -> original ids counted there
        self.seen_in: dict[str, int] = {}  # original id -> the bucket it was counted in
        self.first_bucket: int | None = None
        self.latest_bucket: int | None = None

    def _bucket(self, timestamp: float) -> int:
        return math.floor(timestamp / self.bucket_s)

    def add(self, post: StoredPost | Post) -> None:
        """Counts one post (a stored one, or a Post straight from a source)."""
        if self.lang is not None and post.lang != self.lang:
            return
        when = post.created_at
        bucket = self._bucket(when.timestamp() if isinstance(when, datetime) else post.timestamp)
        # a re-delivered post or a later edit of one is the same post: count it once
        original = getattr(post, "original_id", post.id)
        if original in self.seen_in:
            return
        self.seen[bucket].add(original)
        self.seen_in[original] = bucket
        terms = cached_terms(post.text, post.lang)
        for term in terms:
            self.counts[term][bucket] += 1
            self.authors[term][bucket].add(post.author_id)
        self.posts[bucket].append((post, terms))
        self.totals[bucket] += 1
        self.first_bucket = bucket if self.first_bucket is None else min(self.first_bucket, bucket)
        if self.latest_bucket is None or bucket > self.latest_bucket:
            self.latest_bucket = bucket
            self._forget_before(bucket - self.history_buckets - BUCKETS_PER_WINDOW)

    def _forget_before(self, oldest: int) -> None:
        """Drops buckets too old to matter, so memory stays bounded on an endless stream."""
        for bucket in [b for b in self.posts if b < oldest]:
            for original in self.seen.pop(bucket, ()):
                del self.seen_in[original]
            del self.posts[bucket], self.totals[bucket]
        if self.latest_bucket % BUCKETS_PER_WINDOW:  # sweep the term tables once per window
            return
        for term in list(self.counts):
            per_bucket = self.counts[term]
            for bucket in [b for b in per_bucket if b < oldest]:
                del per_bucket[bucket]
                del self.authors[term][bucket]
            if not per_bucket:
                del self.counts[term], self.authors[term]

    def trends(self, now: datetime, limit: int = 20) -> TrendReport:
        """Terms trending in the window that ends at `now` (rounded up to a bucket boundary)."""
        end_bucket = math.ceil(now.timestamp() / self.bucket_s)  # window = [end - 3, end)
        window_start = end_bucket - BUCKETS_PER_WINDOW
        first = window_start - self.history_buckets
        if self.first_bucket is not None:
            first = max(first, self.first_bucket)
        history = range(first, window_start)
        weights = [(1 - ALPHA) ** (window_start - 1 - b) for b in history]
        history_posts = sum(w * self.totals.get(b, 0) for w, b in zip(weights, history))
        window_posts = [item for b in range(window_start, end_bucket) for item in self.posts.get(b, ())]
        report = TrendReport(window_s=self.window_s, start=_iso(window_start * self.bucket_s),
                             end=_iso(end_bucket * self.bucket_s), lang=self.lang,
                             baseline_s=len(history) * self.bucket_s, num_posts=len(window_posts))
        if len(history) < BUCKETS_PER_WINDOW or not history_posts:  # no baseline to beat yet
            return report
        used = {term for _, terms in window_posts for term in terms}
        found = []
        for term in used:
            per_bucket = self.counts[term]
            count = sum(per_bucket.get(b, 0) for b in range(window_start, end_bucket))
            if count < self.min_count:
                continue
            authors = set().union(*(self.authors[term].get(b, ()) for b in range(window_start, end_bucket)))
            if len(authors) < self.min_authors:
                continue
            share = sum(w * per_bucket.get(b, 0) for w, b in zip(weights, history)) / history_posts
            expected = share * len(window_posts)
            score = (count - expected) / math.sqrt(expected + 1.0)
            if score >= self.min_score:
                found.append(Trend(term=term, count=count, expected=round(expected, 3), score=round(score, 3),
                                   num_authors=len(authors), example_ids=[]))
        found.sort(key=lambda t: (-t.score, t.term))
        report.trends = found[:limit]
        for trend in report.trends:
            using = [post for post, terms in window_posts if trend.term in terms]
            using.sort(key=lambda p: (-(p.like_count + p.retweet_count + p.reply_count + p.quote_count), p.id))
            trend.example_ids = [p.id for p in using[:EXAMPLES]]
        return report


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat().replace("+00:00", "Z")


def trends(store: Store | str | Path, window: timedelta = timedelta(minutes=15), lang: str | None = None,
           now: datetime | None = None, history_windows: int = HISTORY_WINDOWS, limit: int = 20,
           min_count: int = MIN_COUNT, min_authors: int = MIN_AUTHORS, min_score: float = MIN_SCORE) -> TrendReport:
    """Trending terms in the window ending at `now` (default: the newest stored post)."""
    counter = TrendCounter(window, history_windows, lang, min_count, min_authors, min_score)
    with opened(store) as db:
        span = db.time_range()
        now = now or (span[1] if span else None) or datetime.now(timezone.utc)
        end = datetime.fromtimestamp(math.ceil(now.timestamp() / counter.bucket_s) * counter.bucket_s, timezone.utc)
        start = end - timedelta(seconds=counter.window_s * (history_windows + 1))
        if span is not None:  # history starts where the store does, not at an empty stretch before it
            counter.first_bucket = counter._bucket(max(span[0], start).timestamp())
        for post in db.posts_between(start, end, lang=lang):
            counter.add(post)
    return counter.trends(now, limit)
