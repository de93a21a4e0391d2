"""Live search over stored posts with xAI's `search_parameters` semantics, and the prompt context.

    search(store, "rocket launch", {"mode": "on", "sources": [{"type": "x", "included_x_handles": ["nasa"]}],
                                    "from_date": "2026-11-01", "max_search_results": 10})

Fields, as xAI's Live Search defines them (validated here without pydantic; a bad value raises
SearchParameterError naming the field):
- mode: "auto" (default; search when the question is about recent events or names accounts, by
  the rules in `needs_search`, or when included_x_handles names accounts), "on" (always), "off" (never).
- sources: a list of source objects; this store holds X posts, so the one source type is "x" with
  included_x_handles or excluded_x_handles (not both, at most 10, "@" optional, case-insensitive),
  post_favorite_count (minimum likes) and post_view_count (minimum views). An empty list or no
  sources searches X.
- from_date, to_date: ISO dates "YYYY-MM-DD" in UTC, both days included.
- max_search_results: 1..50, default 15.
- return_citations: default true; the citations are the posts' URLs https://x.com/i/status/{id}.

Matching: the query's words (English stopwords and question words dropped) must all occur; when no
post has them all, any of them will do. Japanese words match as substrings (see store.py). Handles
written in the question ("what did @nasa say") restrict the search to those accounts when the
parameters name no handles. A query with no word left (only punctuation, or only handles) lists
the posts that pass the filters, ranked by recency and engagement.

Ranking: the newest CANDIDATES matching posts (the index is walked newest first and stops, as
real-time search engines do) are scored by
    0.6 * relevance + 0.25 * recency + 0.15 * engagement
relevance = BM25 / best BM25 among the candidates; recency = 0.5 ** (age / 6 h) with age taken
from `now` (default: the newest stored post, so replays rank like live streams); engagement =
log1p(likes + 2 retweets + replies + quotes) / its maximum among the candidates.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

from hepta.live.store import StoredPost, Store, fts_query, normalize_handle, opened, query_words

MODES = ("auto", "on", "off")
OTHER_SOURCE_TYPES = ("web", "news", "rss")
X_SOURCE_FIELDS = ("type", "included_x_handles", "excluded_x_handles", "post_favorite_count", "post_view_count",
                   "x_handles")
FIELDS = ("mode", "sources", "from_date", "to_date", "max_search_results", "return_citations")
MAX_HANDLES = 10
MAX_RESULTS = 50
DEFAULT_MAX_RESULTS = 15
CANDIDATES = 300
WEIGHTS = {"relevance": 0.6, "recency": 0.25, "engagement": 0.15}
RECENCY_HALF_LIFE_S = 6 * 3600.0

# Question words that say "search" but name nothing to match.
QUERY_STOPWORDS = frozenset("""
what whats happening happened happen saying said say says think thinks thought people latest news recent recently
tell show anything everyone posts post tweets tweet talking talk going on about x twitter opinion opinions
reaction reactions update updates current currently someone anyone give find me any
""".split())

_RECENT_WORDS = re.compile(
    r"\b(now|today|tonight|yesterday|this (?:morning|week|month|year|weekend)|last (?:night|week|hour|few days)|"
    r"latest|recent|recently|currently|current|breaking|news|trending|trends?|happening|right now|live|"
    r"update|updates|just (?:announced|happened|released|said)|people (?:saying|think)|saying about|"
    r"reactions?|on x|on twitter|tweets?|posts?|posted|tweeted|20[2-9][0-9])\b", re.IGNORECASE)
_RECENT_JA = re.compile(r"今日|今週|今月|最新|最近|速報|ニュース|トレンド|話題|昨日|現在|いま|今年|反応|評判|ツイート|ポスト|投稿")
_HANDLE = re.compile(r"(?<![\w@])@([A-Za-z0-9_]{1,15})\b")


class SearchParameterError(ValueError):
    """A search_parameters field with a value xAI's Live Search does not accept."""


@dataclass(frozen=True)
class SearchParameters:
    mode: str = "auto"
    included_handles: tuple[str, ...] = ()
    excluded_handles: tuple[str, ...] = ()
    min_likes: int | None = None
    min_views: int | None = None
    from_date: date | None = None
    to_date: date | None = None
    max_search_results: int = DEFAULT_MAX_RESULTS
    return_citations: bool = True


@dataclass
class SearchResult:
    query: str
    searched: bool  # False when mode is off, or auto decided the question needs no search
    posts: list[StoredPost] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)  # combined ranking score of each post
    citations: list[str] = field(default_factory=list)  # empty when return_citations is false
    num_sources_used: int = 0  # posts given to the model, as xAI's usage.num_sources_used


def parse_search_parameters(value: dict | None) -> SearchParameters:
    """search_parameters as sent in a request -> SearchParameters; SearchParameterError when invalid."""
    if value is None:
        return SearchParameters()
    if not isinstance(value, dict):
        raise SearchParameterError(f"search_parameters must be a JSON object, got {type(value).__name__}")
    for name in value:
        if name not in FIELDS:
            raise SearchParameterError(f"search_parameters.{name} is not a Live Search field; "
                                       f"the fields are {', '.join(FIELDS)}")
    mode = value.get("mode", "auto")
    if mode not in MODES:
        raise SearchParameterError(f"search_parameters.mode must be one of {', '.join(MODES)}, got {mode!r}")
    x_source = _x_source(value.get("sources"))
    included = _handles(x_source, "included_x_handles") or _handles(x_source, "x_handles")
    excluded = _handles(x_source, "excluded_x_handles")
    if included and excluded:
        raise SearchParameterError("sources[].included_x_handles and sources[].excluded_x_handles cannot be used "
                                   "together; give one of them")
    from_date = _date(value, "from_date")
    to_date = _date(value, "to_date")
    if from_date and to_date and from_date > to_date:
        raise SearchParameterError(f"search_parameters.from_date {from_date} is after to_date {to_date}")
    max_results = value.get("max_search_results", DEFAULT_MAX_RESULTS)
    if not _is_int(max_results) or not 1 <= max_results <= MAX_RESULTS:
        raise SearchParameterError(f"search_parameters.max_search_results must be an integer from 1 to {MAX_RESULTS}, "
                                   f"got {max_results!r}")
    citations = value.get("return_citations", True)
    if not isinstance(citations, bool):
        raise SearchParameterError(f"search_parameters.return_citations must be true or false, got {citations!r}")
    return SearchParameters(mode=mode, included_handles=included, excluded_handles=excluded,
                            min_likes=_count(x_source, "post_favorite_count"),
                            min_views=_count(x_source, "post_view_count"),
                            from_date=from_date, to_date=to_date, max_search_results=max_results,
                            return_citations=citations)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _x_source(sources: object) -> dict:
    if sources is None:
        return {}
    if not isinstance(sources, list):
        raise SearchParameterError(f"search_parameters.sources must be a list of source objects, "
                                   f"got {type(sources).__name__}")
    x_sources = []
    for i, source in enumerate(sources):
        if not isinstance(source, dict) or "type" not in source:
            raise SearchParameterError(f"sources[{i}] must be an object with a type, such as {{\"type\": \"x\"}}")
        if source["type"] in OTHER_SOURCE_TYPES:
            raise SearchParameterError(f"sources[{i}].type {source['type']!r} is not available: this server searches "
                                       "X posts only, so use {\"type\": \"x\"}")
        if source["type"] != "x":
            raise SearchParameterError(f"sources[{i}].type must be \"x\", got {source['type']!r}")
        for name in source:
            if name not in X_SOURCE_FIELDS:
                raise SearchParameterError(f"sources[{i}].{name} is not a field of an x source; the fields are "
                                           "included_x_handles, excluded_x_handles, post_favorite_count, post_view_count")
        x_sources.append(source)
    if len(x_sources) > 1:
        raise SearchParameterError("sources lists the x source more than once; merge them into one")
    return x_sources[0] if x_sources else {}


def _handles(source: dict, name: str) -> tuple[str, ...]:
    handles = source.get(name)
    if handles is None:
        return ()
    if not isinstance(handles, list) or not all(isinstance(h, str) and normalize_handle(h) for h in handles):
        raise SearchParameterError(f"sources[].{name} must be a list of X handles such as [\"nasa\"], got {handles!r}")
    if len(handles) > MAX_HANDLES:
        raise SearchParameterError(f"sources[].{name} allows at most {MAX_HANDLES} handles, got {len(handles)}")
    return tuple(normalize_handle(h) for h in handles)


def _count(source: dict, name: str) -> int | None:
    value = source.get(name)
    if value is not None and (not _is_int(value) or value < 0):
        raise SearchParameterError(f"sources[].{name} must be a non-negative integer, got {value!r}")
    return value


def _date(value: dict, name: str) -> date | None:
    raw = value.get(name)
    if raw is None:
        return None
    try:
        if not isinstance(raw, str):
            raise ValueError
        return date.fromisoformat(raw)
    except ValueError:
        raise SearchParameterError(f"search_parameters.{name} must be an ISO date such as 2026-11-01, "
                                   f"got {raw!r}") from None


def needs_search(question: str) -> bool:
    """mode auto: does the question ask about recent events, what people say, or named accounts?"""
    return bool(_HANDLE.search(question) or _RECENT_WORDS.search(question) or _RECENT_JA.search(question))


def search(store: Store | str | Path, query: str, search_parameters: dict | SearchParameters | None = None,
           now: datetime | None = None) -> SearchResult:
    """The posts for a question or keywords, ranked, with citations (see the module docstring)."""
    params = (search_parameters if isinstance(search_parameters, SearchParameters)
              else parse_search_parameters(search_parameters))
    # auto: the question is about recent events or accounts, or the parameters name accounts
    if params.mode == "off" or (params.mode == "auto" and not (needs_search(query) or params.included_handles)):
        return SearchResult(query=query, searched=False)
    named = tuple(normalize_handle(h) for h in _HANDLE.findall(query))
    text = _HANDLE.sub(" ", query)
    included = params.included_handles or (named if not params.excluded_handles else ())
    content_words = [w for w in query_words(text, drop_stopwords=True) if w not in QUERY_STOPWORDS]
    words = content_words or ([] if named else query_words(text))
    start = datetime.combine(params.from_date, time(), timezone.utc) if params.from_date else None
    end = datetime.combine(params.to_date + timedelta(days=1), time(), timezone.utc) if params.to_date else None
    filters = dict(start=start, end=end, handles=list(included) or None,
                   excluded_handles=list(params.excluded_handles) or None,
                   min_likes=params.min_likes, min_views=params.min_views, limit=CANDIDATES)
    with opened(store) as db:
        if words:
            candidates = db.match_ranks(fts_query(words), **filters)
            if not candidates and len(words) > 1:
                candidates = db.match_ranks(fts_query(words, any_word=True), **filters)
        else:
            candidates = db.match_ranks(None, **filters)
        reference = now or db.latest_time() or datetime.now(timezone.utc)
        ranked = rank(candidates, reference)[:params.max_search_results]
        posts = db.by_keys([key for key, _ in ranked])
    return SearchResult(query=query, searched=True, posts=posts, scores=[round(s, 6) for _, s in ranked],
                        citations=[p.url for p in posts] if params.return_citations else [],
                        num_sources_used=len(posts))


def rank(candidates: list[tuple], now: datetime) -> list[tuple[int, float]]:
    """(key, score) of candidates from Store.match_ranks, best first; ties go to the newer post."""
    if not candidates:
        return []
    best_bm25 = min(row[6] for row in candidates)  # FTS5 bm25 is negative; more negative is better
    engagement = [math.log1p(likes + 2 * retweets + replies + quotes)
                  for _, _, likes, retweets, replies, quotes, _ in candidates]
    top_engagement = max(engagement) or 1.0
    now_ms = now.timestamp() * 1000
    scored = []
    for (key, created_ms, *_, bm25), eng in zip(candidates, engagement):
        relevance = bm25 / best_bm25 if best_bm25 < 0 else 1.0
        age_s = max(0.0, now_ms - created_ms) / 1000
        recency = 0.5 ** (age_s / RECENCY_HALF_LIFE_S)
        score = (WEIGHTS["relevance"] * relevance + WEIGHTS["recency"] * recency
                 + WEIGHTS["engagement"] * eng / top_engagement)
        scored.append((key, score))
    scored.sort(key=lambda item: (-item[1], -item[0]))  # keys grow with time
    return scored


def format_context(posts: list[StoredPost]) -> str:
    """Posts rendered for a model prompt, numbered so an answer can cite [n]."""
    blocks = []
    for i, post in enumerate(posts, 1):
        handle = f"@{post.username}" if post.username else f"user {post.author_id}"
        when = post.created_at.replace("T", " ")[:16] + " UTC"
        blocks.append(f"[{i}] {handle} · {when} · {post.like_count} likes · {post.url}\n{post.text.strip()}")
    return "\n\n".join(blocks)


def result_dict(result: SearchResult) -> dict:
    """The JSON object the CLI prints and the server returns."""
    return {"query": result.query, "searched": result.searched, "num_sources_used": result.num_sources_used,
            "citations": result.citations,
            "posts": [{**asdict(p), "score": s} for p, s in zip(result.posts, result.scores)]}
