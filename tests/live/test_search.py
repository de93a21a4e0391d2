"""Live search: xAI search_parameters validation, exact filters, ranking, citations, prompt context."""

from __future__ import annotations

import json
import random
from datetime import date, datetime, timedelta, timezone

import pytest

from hepta.live.search import (SearchParameterError, format_context, needs_search, parse_search_parameters,
                               result_dict, search)
from hepta.live.store import Store

from test_store import T0, make_post

HANDLES = ["nasa", "SpaceX", "alice", "bob", "carol", "dave"]
WORDS = ["rocket", "launch", "weather", "coffee", "election", "market"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """300 posts over 10 days: random authors, words, likes and views."""
    rng = random.Random(7)
    posts = []
    for i in range(1, 301):
        words = rng.sample(WORDS, 2)
        posts.append(make_post(i, f"talking about {words[0]} and {words[1]} {i}", username=rng.choice(HANDLES),
                               at=rng.uniform(0, 10 * 86400), likes=rng.randrange(0, 200),
                               views=rng.randrange(0, 5000)))
    store = Store(tmp_path_factory.mktemp("search") / "posts.db")
    store.upsert(posts)
    yield store, posts
    store.close()


@pytest.mark.parametrize("params, field", [
    ({"mode": "sometimes"}, "mode"),
    ({"max_search_results": 0}, "max_search_results"),
    ({"max_search_results": 51}, "max_search_results"),
    ({"max_search_results": True}, "max_search_results"),
    ({"from_date": "01/11/2026"}, "from_date"),
    ({"to_date": 20261101}, "to_date"),
    ({"from_date": "2026-11-05", "to_date": "2026-11-01"}, "from_date"),
    ({"return_citations": "yes"}, "return_citations"),
    ({"sources": {"type": "x"}}, "sources"),
    ({"sources": [{"type": "web"}]}, "sources[0].type"),
    ({"sources": [{"type": "tiktok"}]}, "sources[0].type"),
    ({"sources": [{"type": "x", "included_x_handles": ["a"], "excluded_x_handles": ["b"]}]}, "included_x_handles"),
    ({"sources": [{"type": "x", "included_x_handles": [f"h{i}" for i in range(11)]}]}, "included_x_handles"),
    ({"sources": [{"type": "x", "excluded_x_handles": "nasa"}]}, "excluded_x_handles"),
    ({"sources": [{"type": "x", "post_favorite_count": -1}]}, "post_favorite_count"),
    ({"sources": [{"type": "x", "post_view_count": 1.5}]}, "post_view_count"),
    ({"sources": [{"type": "x", "min_likes": 3}]}, "min_likes"),
    ({"sources": [{"type": "x"}, {"type": "x"}]}, "sources"),
    ({"max_results": 3}, "max_results"),
])
def test_invalid_parameters_raise_one_sentence_naming_the_field(params, field):
    with pytest.raises(SearchParameterError) as info:
        parse_search_parameters(params)
    assert field in str(info.value) and isinstance(info.value, ValueError)
    assert str(info.value).count(". ") == 0  # one sentence


def test_defaults_and_a_full_valid_request():
    assert parse_search_parameters(None).max_search_results == 15
    params = parse_search_parameters({
        "mode": "on", "sources": [{"type": "x", "included_x_handles": ["@NASA", "spacex"], "post_favorite_count": 5,
                                   "post_view_count": 100}],
        "from_date": "2026-11-01", "to_date": "2026-11-03", "max_search_results": 50, "return_citations": False})
    assert params.included_handles == ("nasa", "spacex") and params.min_likes == 5 and params.min_views == 100
    assert (params.from_date, params.to_date) == (date(2026, 11, 1), date(2026, 11, 3))
    assert params.mode == "on" and params.max_search_results == 50 and params.return_citations is False


def _satisfies(post, word, start, end, included, excluded, min_likes, min_views) -> bool:
    return (word in post.text.split() and start <= post.created_at < end
            and (not included or post.username.lower() in included)
            and (not excluded or post.username.lower() not in excluded)
            and post.like_count >= min_likes and post.impression_count >= min_views)


def test_filters_hold_exactly_and_nothing_matching_is_missing(corpus):
    store, posts = corpus
    rng = random.Random(1)
    checked_full = 0
    for _ in range(40):
        word = rng.choice(WORDS)
        day0 = rng.randrange(0, 9)
        day1 = rng.randrange(day0, 10)
        handles = [h.lower() for h in rng.sample(HANDLES, rng.randrange(0, 4))]
        side = rng.choice(["included_x_handles", "excluded_x_handles"])
        min_likes, min_views = rng.choice([0, 20, 100]), rng.choice([0, 500, 2500])
        max_results = rng.choice([5, 15, 50])
        source = {"type": "x", "post_favorite_count": min_likes, "post_view_count": min_views}
        if handles:
            source[side] = handles
        params = {"mode": "on", "sources": [source], "max_search_results": max_results,
                  "from_date": (T0 + timedelta(days=day0)).date().isoformat(),
                  "to_date": (T0 + timedelta(days=day1)).date().isoformat()}
        start = datetime.combine(T0.date() + timedelta(days=day0), datetime.min.time(), timezone.utc)
        end = datetime.combine(T0.date() + timedelta(days=day1 + 1), datetime.min.time(), timezone.utc)
        included = handles if side == "included_x_handles" else []
        excluded = handles if side == "excluded_x_handles" else []
        expected = {p.id for p in posts if _satisfies(p, word, start, end, included, excluded, min_likes, min_views)}
        result = search(store, word, params)
        got = [p.id for p in result.posts]
        assert len(got) == len(set(got)) <= max_results
        assert set(got) <= expected  # every result satisfies every filter
        if len(expected) <= max_results:
            assert set(got) == expected  # and none that does is missing
            checked_full += bool(expected)
        else:
            assert len(got) == max_results
        assert result.scores == sorted(result.scores, reverse=True)
        assert result.citations == [f"https://x.com/i/status/{i}" for i in got]
    assert checked_full >= 10


def test_ranking_combines_relevance_recency_and_engagement(tmp_path):
    with Store(tmp_path / "rank.db") as store:
        store.upsert([
            make_post(1, "volcano", at=0),
            make_post(2, "volcano", at=3600 * 6),  # newer
            make_post(3, "volcano", at=0, likes=5000, retweets=900),  # more engaging
            make_post(4, "volcano volcano eruption", at=0),  # more relevant
            make_post(5, "a long post that mentions the volcano once among very many other words", at=0),
            make_post(6, "nothing relevant here", at=3600 * 6),
        ])
        result = search(store, "volcano", {"mode": "on"})
        order = [p.id for p in result.posts]
        assert sorted(order) == ["1", "2", "3", "4", "5"]
        assert order.index("4") < order.index("1") and order.index("1") < order.index("5")  # BM25
        assert order.index("2") < order.index("1")  # recency
        assert order.index("3") < order.index("1")  # engagement


def test_modes_and_the_auto_rule(corpus):
    store, _ = corpus
    assert not search(store, "rocket", {"mode": "off"}).searched
    assert search(store, "rocket", {"mode": "on"}).searched
    assert search(store, "what is the latest on the rocket launch?").searched  # auto is the default
    assert not search(store, "explain how a rocket engine works").searched
    assert search(store, "rocket engines", {"sources": [{"type": "x", "included_x_handles": ["nasa"]}]}).searched
    for question in ("What are people saying about the election?", "any news on coffee prices",
                     "what did @nasa post this week", "今日の地震の速報は？", "Who won the 2026 final?"):
        assert needs_search(question), question
    for question in ("Write a haiku about autumn", "What is 17 * 23?", "Translate 'cat' into French",
                     "量子力学を説明して"):
        assert not needs_search(question), question


def test_handles_named_in_the_question_restrict_the_authors(corpus):
    store, posts = corpus
    result = search(store, "what did @nasa say about the market", {"mode": "auto", "max_search_results": 50})
    assert result.posts and {p.username for p in result.posts} == {"nasa"}
    assert all("market" in p.text for p in result.posts)
    everything = search(store, "what are @SpaceX posts saying", {"max_search_results": 50})
    assert {p.username for p in everything.posts} == {"SpaceX"}
    assert len(everything.posts) == min(50, sum(p.username == "SpaceX" for p in posts))


def test_question_words_are_dropped_and_no_common_word_falls_back_to_any(corpus):
    store, _ = corpus
    result = search(store, "What are people saying about coffee right now?", {"max_search_results": 50})
    assert result.posts and all("coffee" in p.text for p in result.posts)
    either = search(store, "coffee zeppelin", {"mode": "on", "max_search_results": 50})
    assert either.posts and all("coffee" in p.text for p in either.posts)


def test_citations_can_be_turned_off_and_results_serialise(corpus):
    store, _ = corpus
    result = search(store, "weather", {"mode": "on", "return_citations": False, "max_search_results": 3})
    assert result.citations == [] and len(result.posts) == 3 and result.num_sources_used == 3
    data = json.loads(json.dumps(result_dict(result)))
    assert data["num_sources_used"] == 3 and data["posts"][0]["url"].startswith("https://x.com/i/status/")


def test_japanese_search_and_prompt_context(tmp_path):
    with Store(tmp_path / "ja.db") as store:
        store.upsert([make_post(1, "東京都で大きな地震がありました", username="tokyo_news", lang="ja", likes=12),
                      make_post(2, "京都の紅葉がきれい", username="kyoto", lang="ja", at=60),
                      make_post(3, "Earthquake felt in Tokyo", username="reporter", at=120)])
        result = search(store, "地震の最新情報", {"mode": "auto"})
        assert [p.id for p in result.posts] == ["1"]
        context = format_context(result.posts)
        assert context.startswith("[1] @tokyo_news · 2026-11-01 12:00 UTC · 12 likes · https://x.com/i/status/1\n")
        assert "東京都で大きな地震がありました" in context


def test_search_opens_a_store_path_and_rejects_a_missing_one(corpus, tmp_path):
    store, _ = corpus
    assert search(store.path, "coffee", {"mode": "on"}).posts
    from hepta.errors import HeptaError
    with pytest.raises(HeptaError, match="no post store"):
        search(tmp_path / "nope.db", "coffee", {"mode": "on"})
