"""Tracked accounts: timeline, posting rate, engagement, top topics."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import timedelta

from hepta.live.accounts import accounts
from hepta.live.store import Store

from test_store import T0, make_post


def test_reports_for_handles(tmp_path):
    posts = [make_post(i, f"rocket launch update {i} #space", username="NASA", at=i * 3600, likes=10 * i,
                       retweets=i, replies=1, views=1000) for i in range(1, 49)]  # one an hour for two days
    posts += [make_post(1000 + i, "coffee time", username="bob", at=i * 600) for i in range(3)]
    posts += [make_post(2000, "宇宙ロケットの打ち上げ", username="jaxa_jp", lang="ja", at=100)]
    with Store(tmp_path / "acc.db") as store:
        store.upsert(posts)
        nasa, bob, jaxa, nobody = accounts(store, ["@nasa", "Bob", "jaxa_jp", "ghost"], timeline=5)
    assert nasa.username == "NASA" and nasa.handle == "nasa" and nasa.num_posts == 48
    assert [p.id for p in nasa.timeline] == ["48", "47", "46", "45", "44"]  # newest first
    assert nasa.first_post == "2026-11-01T13:00:00Z" and nasa.last_post == "2026-11-03T12:00:00Z"
    assert nasa.posts_per_day == round(48 / (47 / 24), 3)  # over the 47 h from its first post to the newest stored
    assert nasa.posts_last_24h == 24  # hours 25..48
    e = nasa.engagement
    assert e.likes == 10 * sum(range(1, 49)) and e.retweets == sum(range(1, 49)) and e.replies == 48
    assert e.impressions == 48_000 and e.per_post == round((e.likes + e.retweets + e.replies) / 48, 3)
    assert e.rate == round((e.likes + e.retweets + e.replies) / 48_000, 5)
    assert nasa.top_topics[:3] == [("#space", 48), ("launch", 48), ("rocket", 48)]
    assert nasa.top_post.id == "48"
    assert bob.num_posts == 3 and bob.engagement.rate == 0.0 and bob.posts_per_day == 1.5  # 3 posts, first at 0 h, now 48 h
    assert jaxa.num_posts == 1 and ("打ち上げ" in dict(jaxa.top_topics) or "宇宙ロケット" in dict(jaxa.top_topics))
    assert nobody.num_posts == 0 and nobody.username is None and nobody.timeline == []
    json.dumps(asdict(nasa))  # plain data for the server


def test_window_limits_the_posts(tmp_path):
    with Store(tmp_path / "w.db") as store:
        store.upsert([make_post(i, "hello", username="amy", at=i * 3600) for i in range(10)])
        (amy,) = accounts(store, ["amy"], window=timedelta(hours=3), now=T0 + timedelta(hours=9))
    assert amy.num_posts == 4 and amy.first_post == "2026-11-01T18:00:00Z"
