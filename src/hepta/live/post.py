"""A post as the X API v2 describes it, flattened into one immutable record.

`Post.from_x` reads the `data` object of a post (with `tweet.fields` id, text, author_id,
created_at, lang, public_metrics, entities, referenced_tweets, conversation_id,
edit_history_tweet_ids) and joins the author's username from `includes.users`.
`posts_from_response` reads both shapes X sends: a filtered-stream line (`data` is one post)
and a recent-search page (`data` is a list). Every post keeps its own X JSON line in `raw`,
so a store can export it and a replay can send it again unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

URL_PREFIX = "https://x.com/i/status/"
METRICS = ("like_count", "retweet_count", "reply_count", "quote_count", "impression_count", "bookmark_count")


class MalformedPost(ValueError):
    """A post object that does not have the X API v2 shape (missing id/text, bad created_at...)."""


@dataclass(frozen=True, slots=True)
class Post:
    id: str
    text: str
    author_id: str
    username: str | None
    created_at: datetime  # timezone-aware, UTC
    lang: str | None
    like_count: int
    retweet_count: int
    reply_count: int
    quote_count: int
    impression_count: int
    bookmark_count: int
    hashtags: tuple[str, ...]
    mentions: tuple[str, ...]  # usernames, without "@"
    urls: tuple[str, ...]  # expanded when X gives the expansion
    referenced: tuple[tuple[str, str], ...]  # (replied_to | quoted | retweeted, post id)
    conversation_id: str | None
    edit_history_ids: tuple[str, ...]  # oldest first; always contains `id`; the last is the newest edit
    matching_rules: tuple[str, ...]  # filtered-stream rule tags (the rule id when a rule has no tag)
    raw: str  # this post's X v2 JSON line, compact

    @property
    def url(self) -> str:
        return URL_PREFIX + self.id

    @property
    def original_id(self) -> str:
        return self.edit_history_ids[0]

    @classmethod
    def from_x(cls, data: dict, includes: dict | None = None, matching_rules: list | None = None) -> "Post":
        return _build(data, _authors(includes), matching_rules)


def posts_from_response(obj: dict, on_malformed: Callable[[MalformedPost], None] | None = None,
                        line: str | None = None) -> list[Post]:
    """Posts in a stream line ({"data": {...}}) or a search page ({"data": [...]}); [] when there is no data.

    A malformed post raises MalformedPost, unless `on_malformed` is given: then it gets the error
    and the other posts of a page are still returned. `line`, the text `obj` was parsed from,
    becomes the `raw` of a stream line's post as it is (it already is that post's X JSON line).
    """
    if not isinstance(obj, dict):
        raise MalformedPost(f"expected a JSON object with 'data', got {type(obj).__name__}")
    data = obj.get("data")
    if data is None:  # an empty search page, or a stream message that carries only "errors"
        return []
    includes = obj.get("includes")
    authors = _authors(includes)
    rules = obj.get("matching_rules")
    if isinstance(data, dict):
        return [_build(data, authors, rules, line.strip() if line is not None else None)]
    if isinstance(data, list):
        if on_malformed is None:
            return [_build(item, authors, rules) for item in data]
        posts = []
        for item in data:
            try:
                posts.append(_build(item, authors, rules))
            except MalformedPost as e:
                on_malformed(e)
        return posts
    raise MalformedPost(f"'data' must be a post object or a list of them, got {type(data).__name__}")


def parse_created_at(value: object) -> datetime:
    if not isinstance(value, str):
        raise MalformedPost(f"created_at must be an ISO 8601 string such as 2026-01-02T03:04:05.000Z, got {value!r}")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise MalformedPost(f"created_at {value!r} is not an ISO 8601 time such as 2026-01-02T03:04:05.000Z") from None
    if when.tzinfo is None:
        raise MalformedPost(f"created_at {value!r} has no time zone; X sends UTC times ending in Z")
    return when.astimezone(timezone.utc)


def format_created_at(when: datetime) -> str:
    """X's own format: milliseconds and a Z."""
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _authors(includes: dict | None) -> dict[str, dict]:
    """includes.users by id (the expansion author_id puts each post's author there)."""
    users = includes.get("users") if isinstance(includes, dict) else None
    return {u["id"]: u for u in users or () if isinstance(u, dict) and "id" in u}


def _build(data: object, authors: dict[str, dict], rules: list | None, raw: str | None = None) -> Post:
    if not isinstance(data, dict):
        raise MalformedPost(f"a post must be a JSON object, got {type(data).__name__}")
    post_id = data.get("id")
    if not isinstance(post_id, str) or not post_id.isdigit():
        raise MalformedPost(f"post id must be a string of digits, got {post_id!r}")
    # long posts carry their full text in note_tweet; `text` is then a truncated preview
    note = data.get("note_tweet")
    text = note.get("text") if isinstance(note, dict) and isinstance(note.get("text"), str) else data.get("text")
    if not isinstance(text, str):
        raise MalformedPost(f"post {post_id} has no text; request it (it is a default field)")
    author_id = data.get("author_id")
    if not isinstance(author_id, str):
        raise MalformedPost(f"post {post_id} has no author_id; request tweet.fields=author_id")
    if "created_at" not in data:
        raise MalformedPost(f"post {post_id} has no created_at; request tweet.fields=created_at")
    created_at = parse_created_at(data["created_at"])

    metrics = data.get("public_metrics") or {}
    if not isinstance(metrics, dict):
        raise MalformedPost(f"post {post_id} public_metrics must be an object, got {type(metrics).__name__}")
    counts = [metrics.get(name, 0) for name in METRICS]
    for name, value in zip(METRICS, counts):
        if type(value) is not int:  # noqa: E721 (bool is not a count)
            raise MalformedPost(f"post {post_id} public_metrics.{name} must be an integer, got {value!r}")

    entities = data.get("entities") or {}
    if not isinstance(entities, dict):
        raise MalformedPost(f"post {post_id} entities must be an object, got {type(entities).__name__}")
    try:
        hashtags = tuple(h["tag"] for h in entities.get("hashtags") or ())
        mentions = tuple(m["username"] for m in entities.get("mentions") or ())
        urls = tuple(u.get("expanded_url") or u["url"] for u in entities.get("urls") or ())
        referenced = tuple((r["type"], r["id"]) for r in data.get("referenced_tweets") or ())
    except (KeyError, TypeError, AttributeError) as e:
        raise MalformedPost(f"post {post_id} has a malformed entity or referenced_tweets item ({e!r})") from None

    history = data.get("edit_history_tweet_ids")
    if history is None:
        history = (post_id,)
    elif not isinstance(history, list) or not all(isinstance(h, str) for h in history) or post_id not in history:
        raise MalformedPost(f"post {post_id} edit_history_tweet_ids must be a list of id strings containing {post_id}")

    tags = tuple(str(r.get("tag") or r.get("id")) for r in rules or () if isinstance(r, dict))
    author = authors.get(author_id)
    if raw is None:
        line: dict = {"data": data}
        if author is not None:
            line["includes"] = {"users": [author]}
        if rules:
            line["matching_rules"] = rules
        raw = json.dumps(line, ensure_ascii=False, separators=(",", ":"))

    return Post(
        id=post_id, text=text, author_id=author_id, username=author.get("username") if author else None,
        created_at=created_at,
        lang=data.get("lang"),
        like_count=counts[0], retweet_count=counts[1], reply_count=counts[2], quote_count=counts[3],
        impression_count=counts[4], bookmark_count=counts[5],
        hashtags=hashtags, mentions=mentions, urls=urls, referenced=referenced,
        conversation_id=data.get("conversation_id"), edit_history_ids=tuple(history),
        matching_rules=tags, raw=raw,
    )
