"""Opinion: per-post sentiment in English and Japanese, and a topic's summary over a window."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, timedelta

import pytest

from hepta.errors import HeptaError
from hepta.live.opinion import opinion, sentiment
from hepta.live.post import posts_from_response
from hepta.live.store import Store
from hepta.live.synth import SynthConfig, synthesize_stream

from test_store import T0, make_post

# Written for this test (not taken from the synthetic stream's phrases); label by a reader.
ENGLISH = [
    ("I love the new update, it works beautifully", "positive"),
    ("Great game last night, what a comeback!", "positive"),
    ("This airline lost my bag again. Worst service ever", "negative"),
    ("The new policy is a disaster for small shops", "negative"),
    ("Traffic is awful and I am so frustrated", "negative"),
    ("Thank you all for the kind messages, I'm so happy", "positive"),
    ("The meeting moved to 3pm on Thursday", "neutral"),
    ("The store opens at nine tomorrow", "neutral"),
    ("Not bad at all, honestly pretty good", "positive"),
    ("I don't like this design", "negative"),
]
JAPANESE = [
    ("新しいカフェのケーキが美味しかった", "positive"),
    ("今日のライブは最高に楽しかった！", "positive"),
    ("スタッフの対応がとても親切で安心しました", "positive"),
    ("電車が止まって本当に困った", "negative"),
    ("このアプリは使いにくくて不便だ", "negative"),
    ("結果を見て残念な気持ちになった", "negative"),
    ("明日は十時から会議があります", "neutral"),
    ("駅前に新しい店ができるらしい", "neutral"),
    ("この映画は面白くなかった", "negative"),  # negated positive
    ("思ったほど悪くない", "positive"),  # negated negative
    ("好きじゃないけど、嫌いでもない", "neutral"),
    ("サービスがひどいし、値段も高くて最悪", "negative"),
]


@pytest.mark.parametrize("lang, cases, floor", [("en", ENGLISH, 0.9), ("ja", JAPANESE, 0.9)])
def test_labelled_sentences(lang, cases, floor):
    right = [sentiment(text, lang)[1] == label for text, label in cases]
    print(lang, f"{sum(right)}/{len(right)}")  # measured: en 10/10, ja 12/12
    assert sum(right) / len(right) >= floor
    for text, _ in cases:
        score, _ = sentiment(text, lang)
        assert -1.0 <= score <= 1.0


def test_japanese_is_detected_from_the_text_whatever_the_language_code():
    assert sentiment("最悪の一日だった", "und")[1] == "negative"
    assert sentiment("最悪の一日だった", None)[1] == "negative"


def test_topic_shares_match_the_synthetic_streams_ground_truth(tmp_path):
    result = synthesize_stream(SynthConfig(posts=3000, seed=4, minutes=360))
    posts = [p for line in result.lines for p in posts_from_response(line)]
    truth = result.truth["topic_sentiment"]
    with Store(tmp_path / "opinion.db") as store:
        store.upsert(posts)
        for burst in result.truth["bursts"]:
            report = opinion(store, burst["term"])
            wanted = truth[burst["term"]]
            total = sum(wanted.values())
            tolerance = 0.05 if burst["lang"] == "ja" else 0.15  # VADER reads "Wow," and "Honestly," as moods
            for label in ("positive", "negative", "neutral"):
                assert abs(report.shares[label] - wanted[label] / total) <= tolerance, (burst["term"], label)
            assert sum(report.counts.values()) == report.num_posts >= 0.9 * total


def test_window_language_examples_and_json(tmp_path):
    with Store(tmp_path / "window.db") as store:
        store.upsert([
            make_post(1, "the ferry is wonderful", at=0, likes=5),
            make_post(2, "the ferry is terrible", at=3600, likes=50),
            make_post(3, "the ferry is terrible and late", at=3700, likes=9),
            make_post(4, "the ferry leaves at noon", at=3800),
            make_post(5, "フェリーが最高 ferry", at=3900, lang="ja"),
        ])
        everything = opinion(store, "ferry")
        assert everything.num_posts == 5
        assert everything.counts == {"positive": 2, "negative": 2, "neutral": 1}
        recent = opinion(store, "ferry", window=timedelta(minutes=10), now=T0 + timedelta(seconds=3900))
        assert recent.counts == {"positive": 1, "negative": 2, "neutral": 1}
        assert recent.shares["negative"] == 0.5
        assert [e.post.id for e in recent.examples["negative"]] == ["2", "3"]  # most engaging first
        assert recent.start == "2026-11-01T12:55:00Z"
        english = opinion(store, "ferry", lang="en")
        assert english.num_posts == 4 and english.lang == "en"
        data = json.loads(json.dumps(asdict(recent)))
        assert data["examples"]["negative"][0]["post"]["url"] == "https://x.com/i/status/2"
        assert opinion(store, "submarine").num_posts == 0
        with pytest.raises(HeptaError, match="no words"):
            opinion(store, " ?! ")
    assert datetime.fromisoformat(recent.end) > datetime.fromisoformat(recent.start)
