"""Synthetic stream: valid X JSON, deterministic, bilingual, with bursts, replies, quotes, edits, duplicates."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from statistics import mean

import pytest

from hepta.errors import HeptaError
from hepta.live.post import posts_from_response
from hepta.live.synth import SAMPLE_STREAM, SynthConfig, synthesize_stream, truth_path_for, write_stream


@pytest.fixture(scope="module")
def synth():
    result = synthesize_stream(SynthConfig(posts=4000, seed=5))
    return result, [posts_from_response(line)[0] for line in result.lines]


def test_every_line_is_a_valid_stream_line_in_time_order(synth):
    result, posts = synth
    assert len(posts) == len(result.lines) == result.truth["lines"]
    assert all(set(line) == {"data", "includes"} for line in result.lines)
    assert all(p.username for p in posts)  # the author is in includes
    times = [p.created_at for p in posts]
    assert times == sorted(times)
    ids = [int(p.id) for p in posts]
    assert ids == sorted(ids)  # snowflake ids grow with time, as X's do
    for post in posts:  # entity offsets point at the text they name
        data = json.loads(post.raw)["data"]
        for kind, prefix, key in (("hashtags", "#", "tag"), ("mentions", "@", "username")):
            for e in data.get("entities", {}).get(kind, ()):
                assert post.text[e["start"]:e["end"]] == prefix + e[key]


def test_same_seed_same_bytes_other_seed_other_stream(tmp_path):
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    write_stream(a, SynthConfig(posts=500, seed=1))
    write_stream(b, SynthConfig(posts=500, seed=1))
    write_stream(c, SynthConfig(posts=500, seed=2))
    assert a.read_bytes() == b.read_bytes() and a.read_bytes() != c.read_bytes()
    assert truth_path_for(a).read_bytes() == truth_path_for(b).read_bytes()


def test_both_languages_replies_quotes_edits_and_duplicates(synth):
    result, posts = synth
    by_id = {p.id: p for p in posts}
    langs = Counter(p.lang for p in posts)
    assert langs["en"] > 0.4 * len(posts) and langs["ja"] > 0.3 * len(posts)
    replies = [p for p in posts if p.referenced and p.referenced[0][0] == "replied_to"]
    quotes = [p for p in posts if p.referenced and p.referenced[0][0] == "quoted"]
    assert len(replies) > 0.08 * len(posts) and len(quotes) > 0.03 * len(posts)
    for reply in replies:  # a reply answers an earlier post, in its conversation and language, naming its author
        parent = by_id[reply.referenced[0][1]]
        assert parent.created_at <= reply.created_at and reply.conversation_id == parent.conversation_id
        assert reply.lang == parent.lang and reply.mentions == (parent.username,)
    for quote in quotes:
        assert any(u.endswith(f"/status/{quote.referenced[0][1]}") for u in quote.urls)
    edits = result.truth["edits"]
    assert len(edits) > 20
    for original, newest in edits:
        assert by_id[newest].edit_history_ids == (original, newest)
        assert by_id[original].edit_history_ids == (original,)
        assert by_id[original].created_at < by_id[newest].created_at
    counts = Counter(p.id for p in posts)
    assert sorted(i for i, n in counts.items() if n > 1) == sorted(result.truth["duplicates"])
    assert result.truth["distinct_ids"] == len(counts)


def test_influential_accounts_draw_the_engagement(synth):
    result, posts = synth
    influential = {a.id for a in result.accounts if a.influential}
    top = [p.like_count for p in posts if p.author_id in influential]
    rest = [p.like_count for p in posts if p.author_id not in influential]
    assert top and mean(top) > 20 * mean(rest)


def test_bursts_are_where_the_ground_truth_says(synth):
    result, posts = synth
    bursts = result.truth["bursts"]
    assert {b["lang"] for b in bursts} == {"en", "ja"}
    for burst in bursts:
        start, end = (datetime.fromisoformat(burst[k]) for k in ("start", "end"))
        inside = [p for p in posts if burst["term"] in p.text.lower() and start <= p.created_at <= end]
        outside = [p for p in posts if burst["term"] in p.text.lower() and not start <= p.created_at <= end]
        assert len(inside) >= burst["posts"]  # every planned burst post names the term
        assert all(p.lang == burst["lang"] for p in inside)
        assert len(outside) <= 0.05 * len(inside)  # elsewhere only in late edits of burst posts
        assert len({p.author_id for p in inside}) > 20  # many voices, not one account


def test_bundled_sample_is_the_default_synth_output(tmp_path):
    assert SAMPLE_STREAM.stat().st_size < 2_000_000
    fresh = tmp_path / "sample.jsonl"
    write_stream(fresh, SynthConfig())
    assert fresh.read_bytes() == SAMPLE_STREAM.read_bytes()


def test_bad_settings_are_user_errors(tmp_path):
    with pytest.raises(HeptaError, match="--posts 0 is too small"):
        SynthConfig(posts=0)
    with pytest.raises(HeptaError, match="is a folder"):
        write_stream(tmp_path, SynthConfig(posts=10))
