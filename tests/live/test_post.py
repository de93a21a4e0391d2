"""Post: X API v2 post JSON (stream lines, search pages) into one record and back."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from hepta.live.post import MalformedPost, Post, format_created_at, posts_from_response

DATA = {
    "id": "1880000000000000002", "text": "Rocket launch today! #space @nasa https://t.co/abc",
    "author_id": "42", "created_at": "2026-03-01T12:34:56.789Z", "lang": "en",
    "conversation_id": "1880000000000000001",
    "edit_history_tweet_ids": ["1880000000000000000", "1880000000000000002"],
    "public_metrics": {"retweet_count": 3, "reply_count": 2, "like_count": 10, "quote_count": 1,
                       "bookmark_count": 4, "impression_count": 900},
    "entities": {"hashtags": [{"start": 21, "end": 27, "tag": "space"}],
                 "mentions": [{"start": 28, "end": 33, "username": "nasa", "id": "11348282"}],
                 "urls": [{"start": 34, "end": 51, "url": "https://t.co/abc", "expanded_url": "https://example.org/x",
                           "display_url": "example.org/x"}]},
    "referenced_tweets": [{"type": "replied_to", "id": "1880000000000000001"}],
}
USERS = {"users": [{"id": "7", "username": "someone"}, {"id": "42", "username": "spacefan", "name": "Space Fan"}]}


def test_stream_line_gives_every_field():
    line = {"data": DATA, "includes": USERS, "matching_rules": [{"id": "99", "tag": "space"}, {"id": "100"}]}
    (post,) = posts_from_response(line)
    assert post.id == "1880000000000000002" and post.author_id == "42" and post.username == "spacefan"
    assert post.created_at == datetime(2026, 3, 1, 12, 34, 56, 789000, tzinfo=timezone.utc)
    assert post.created_at.utcoffset().total_seconds() == 0
    assert (post.like_count, post.retweet_count, post.reply_count, post.quote_count, post.impression_count,
            post.bookmark_count) == (10, 3, 2, 1, 900, 4)
    assert post.hashtags == ("space",) and post.mentions == ("nasa",) and post.urls == ("https://example.org/x",)
    assert post.referenced == (("replied_to", "1880000000000000001"),)
    assert post.conversation_id == "1880000000000000001" and post.lang == "en"
    assert post.edit_history_ids == ("1880000000000000000", "1880000000000000002")
    assert post.original_id == "1880000000000000000" and post.edit_history_ids[-1] == post.id
    assert post.matching_rules == ("space", "100")  # the tag, or the id of a rule without one
    assert post.url == "https://x.com/i/status/1880000000000000002"


def test_raw_gives_back_the_line_and_rebuilds_the_same_post():
    line = {"data": DATA, "includes": USERS, "matching_rules": [{"id": "99", "tag": "space"}]}
    post = posts_from_response(line)[0]
    back = json.loads(post.raw)
    assert back["data"] == DATA and back["matching_rules"] == line["matching_rules"]
    assert back["includes"] == {"users": [USERS["users"][1]]}  # the author only
    assert "\n" not in post.raw and ", " not in post.raw  # compact, one line
    assert posts_from_response(back) == [post]
    # the text a stream line arrived as is kept as it is
    text = json.dumps(line)
    assert posts_from_response(json.loads(text), line=text + "\r\n")[0].raw == text


def test_search_page_joins_each_author_and_defaults_absent_fields():
    page = {"data": [DATA, {"id": "5", "text": "bare", "author_id": "7", "created_at": "2026-03-01T00:00:00Z"}],
            "includes": USERS, "meta": {"result_count": 2, "newest_id": DATA["id"], "oldest_id": "5"}}
    first, bare = posts_from_response(page)
    assert first.username == "spacefan" and bare.username == "someone"
    assert (bare.like_count, bare.impression_count, bare.hashtags, bare.referenced, bare.lang) == (0, 0, (), (), None)
    assert bare.edit_history_ids == ("5",) and bare.matching_rules == ()
    assert posts_from_response({"meta": {"result_count": 0}}) == []  # an empty page
    assert posts_from_response({"errors": [{"title": "operational-disconnect"}]}) == []  # a stream notice


def test_author_missing_from_includes_leaves_username_empty_and_note_tweet_gives_full_text():
    long = {**DATA, "text": "truncated…", "note_tweet": {"text": "the whole long post " * 30}}
    post = Post.from_x(long)
    assert post.username is None and post.text.startswith("the whole long post")


@pytest.mark.parametrize("change, words", [
    ({"id": 5}, "id must be a string of digits"),
    ({"id": "abc"}, "id must be a string of digits"),
    ({"text": None}, "has no text"),
    ({"author_id": None}, "has no author_id"),
    ({"created_at": "yesterday"}, "not an ISO 8601 time"),
    ({"created_at": "2026-03-01T12:00:00"}, "has no time zone"),
    ({"public_metrics": {"like_count": "10"}}, "public_metrics.like_count must be an integer"),
    ({"public_metrics": {"like_count": True}}, "public_metrics.like_count must be an integer"),
    ({"entities": {"hashtags": [{"start": 1}]}}, "malformed entity"),
    ({"referenced_tweets": [{"type": "quoted"}]}, "malformed entity or referenced_tweets"),
    ({"edit_history_tweet_ids": ["1"]}, "edit_history_tweet_ids must be a list of id strings containing"),
])
def test_malformed_posts_raise_one_clear_sentence(change, words):
    data = {k: v for k, v in {**DATA, **change}.items() if v is not None}
    with pytest.raises(MalformedPost, match=words) as info:
        Post.from_x(data, USERS)
    assert isinstance(info.value, ValueError) and str(info.value).count(". ") == 0


def test_malformed_shapes_and_skipping_one_bad_post_in_a_page():
    with pytest.raises(MalformedPost, match="expected a JSON object"):
        posts_from_response([DATA])
    with pytest.raises(MalformedPost, match="'data' must be"):
        posts_from_response({"data": "x"})
    with pytest.raises(MalformedPost, match="a post must be a JSON object"):
        posts_from_response({"data": [DATA, 3]})
    skipped = []
    posts = posts_from_response({"data": [DATA, {"id": "1"}, DATA], "includes": USERS}, on_malformed=skipped.append)
    assert len(posts) == 2 and len(skipped) == 1 and "has no text" in str(skipped[0])


def test_created_at_round_trips_in_x_format():
    post = Post.from_x(DATA)
    assert format_created_at(post.created_at) == DATA["created_at"]
    offset = Post.from_x({**DATA, "created_at": "2026-03-01T21:34:56.789+09:00"})
    assert offset.created_at == post.created_at  # converted to UTC
