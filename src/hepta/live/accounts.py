"""Tracked accounts: what given handles posted, how often, how it was received, and about what."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from hepta.live.store import Store, StoredPost, normalize_handle, opened
from hepta.live.terms import cached_terms

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
TIMELINE = 10
TOPICS = 8


@dataclass
class Engagement:
    likes: int = 0
    retweets: int = 0
    replies: int = 0
    quotes: int = 0
    impressions: int = 0
    per_post: float = 0.0  # likes + retweets + replies + quotes, per post
    rate: float = 0.0  # the same over impressions (0 when X reported none)


@dataclass
class AccountReport:
    handle: str  # as asked, lower case, without "@"
    username: str | None  # as the posts spell it; None when the store has no post from the handle
    num_posts: int
    first_post: str | None  # ISO 8601 UTC
    last_post: str | None
    posts_per_day: float  # over the span from the first post to `now` (at least an hour)
    posts_last_24h: int
    engagement: Engagement
    top_topics: list[tuple[str, int]]  # (term, posts using it), most used first
    top_post: StoredPost | None  # the most engaging post
    timeline: list[StoredPost] = field(default_factory=list)  # newest first


def accounts(store: Store | str | Path, handles: list[str], now: datetime | None = None,
             window: timedelta | None = None, timeline: int = TIMELINE, topics: int = TOPICS) -> list[AccountReport]:
    """One report per handle, over the window ending at `now` (default: all stored posts)."""
    with opened(store) as db:
        now = now or db.latest_time() or datetime.now(timezone.utc)
        start = now - window if window is not None else EPOCH
        reports = []
        for handle in handles:
            posts = list(db.posts_between(start, now + timedelta(milliseconds=1), handles=[handle]))
            reports.append(_report(normalize_handle(handle), posts, now, timeline, topics))
    return reports


def _report(handle: str, posts: list[StoredPost], now: datetime, timeline: int, topics: int) -> AccountReport:
    if not posts:
        return AccountReport(handle=handle, username=None, num_posts=0, first_post=None, last_post=None,
                             posts_per_day=0.0, posts_last_24h=0, engagement=Engagement(), top_topics=[],
                             top_post=None)
    engagement = Engagement(likes=sum(p.like_count for p in posts), retweets=sum(p.retweet_count for p in posts),
                            replies=sum(p.reply_count for p in posts), quotes=sum(p.quote_count for p in posts),
                            impressions=sum(p.impression_count for p in posts))
    interactions = engagement.likes + engagement.retweets + engagement.replies + engagement.quotes
    engagement.per_post = round(interactions / len(posts), 3)
    engagement.rate = round(interactions / engagement.impressions, 5) if engagement.impressions else 0.0
    span_days = max((now.timestamp() - posts[0].timestamp) / 86400, 1 / 24)
    day_ago = now.timestamp() - 86400
    terms = Counter(term for p in posts for term in cached_terms(p.text, p.lang))
    return AccountReport(
        handle=handle, username=posts[-1].username, num_posts=len(posts), first_post=posts[0].created_at,
        last_post=posts[-1].created_at, posts_per_day=round(len(posts) / span_days, 3),
        posts_last_24h=sum(1 for p in posts if p.timestamp > day_ago), engagement=engagement,
        top_topics=sorted(terms.items(), key=lambda item: (-item[1], item[0]))[:topics],
        top_post=max(posts, key=lambda p: (p.engagement, p.timestamp)),
        timeline=posts[::-1][:timeline])
