"""A synthetic X post stream for demos, tests and benchmarks (`hepta live synth`).

Writes JSONL in the filtered stream's wire format (one `{"data", "includes"}` object per
line), in English and Japanese: everyday topics at a steady rate, a few burst events, replies
that keep their conversation, quotes, edits (a new id whose `edit_history_tweet_ids` lists
the original first), re-delivered duplicates, and accounts of which a few are influential
and draw most of the engagement. The same seed writes the same bytes.

Beside the stream, `<out>.truth.json` records what a reader should find: each burst's term,
language and time window, the edit pairs, the duplicated ids and each topic's sentiment mix.
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
import random
import string
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from hepta.errors import HeptaError
from hepta.live.post import format_created_at
from hepta.live.synth_vocab import (
    BURST_EVENTS, NAME_PARTS, OPENERS, OPINIONS, QUOTE_COMMENTS, REPLIES, TOPICS, BurstEvent, Topic,
)

# The bundled stream for demos: `hepta live synth --out <it>` with the defaults (3000 posts, seed 0).
SAMPLE_STREAM = Path(__file__).parent / "data" / "sample_stream.jsonl"

X_EPOCH_MS = 1288834974657  # ids are snowflakes: milliseconds since this, shifted left 22 bits
DEFAULT_START = datetime(2026, 1, 15, tzinfo=timezone.utc)
LANGS = ("en", "ja")


@dataclass(frozen=True)
class SynthConfig:
    posts: int = 3000  # posts before edits and duplicates
    seed: int = 0
    minutes: float = 360.0
    start: datetime = DEFAULT_START
    accounts: int = 400
    bursts: int | None = None  # None: one per 750 posts, 2 to 10
    ja_share: float = 0.45
    reply_share: float = 0.12
    quote_share: float = 0.05
    edit_share: float = 0.01
    duplicate_share: float = 0.005
    burst_share: float = 0.2  # of all posts, shared evenly by the bursts

    def __post_init__(self):
        if self.posts < 1:
            raise HeptaError(f"--posts {self.posts} is too small; write at least 1")
        if self.minutes <= 0:
            raise HeptaError(f"minutes {self.minutes} must be positive")
        if self.start.tzinfo is None:
            raise HeptaError("start must be a timezone-aware time (UTC)")
        if self.bursts is not None and not 0 <= self.bursts <= len(BURST_EVENTS):
            raise HeptaError(f"bursts {self.bursts} is outside 0..{len(BURST_EVENTS)}")

    @property
    def num_bursts(self) -> int:
        return self.bursts if self.bursts is not None else max(2, min(len(BURST_EVENTS), self.posts // 750))


@dataclass
class Account:
    id: str
    username: str
    name: str
    lang: str
    followers: int
    influential: bool

    def to_x(self) -> dict:
        return {"id": self.id, "name": self.name, "username": self.username}


@dataclass
class SynthResult:
    lines: list[dict]
    truth: dict
    accounts: list[Account] = field(repr=False)


def synthesize_stream(config: SynthConfig) -> SynthResult:
    """The stream's lines and its ground truth, in memory (`write_stream` puts them in files)."""
    return _Generator(config).run()


def write_stream(out: str | Path, config: SynthConfig) -> tuple[Path, dict]:
    """Writes the stream to `out` and the ground truth beside it; returns (truth path, truth)."""
    out = Path(out)
    if out.is_dir():
        raise HeptaError(f"--out {out} is a folder; give a file name such as {out / 'stream.jsonl'}")
    out.parent.mkdir(parents=True, exist_ok=True)
    result = synthesize_stream(config)
    with out.open("w", encoding="utf-8") as f:
        for line in result.lines:
            f.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")))
            f.write("\n")
    truth_path = truth_path_for(out)
    truth_path.write_text(json.dumps(result.truth, ensure_ascii=False, indent=1), encoding="utf-8")
    return truth_path, result.truth


def truth_path_for(stream: str | Path) -> Path:
    stream = Path(stream)
    return stream.with_name(stream.name + ".truth.json")


class _Generator:
    def __init__(self, config: SynthConfig):
        self.c = config
        self.rng = random.Random(config.seed)
        self.lines: list[dict] = []
        self.last_ms = 0
        self.seq = 0
        self.recent: deque[dict] = deque(maxlen=300)  # posts a reply or quote may refer to
        self.edits: list[tuple[float, int, dict]] = []  # heap of (time, order, original data)
        self.edit_order = itertools.count()
        self.edit_pairs: list[list[str]] = []
        self.duplicates: list[str] = []
        self.sentiment_counts: dict[str, dict[str, int]] = {}
        self.accounts = self._accounts()
        self.by_username = {a.username: a for a in self.accounts}
        self.by_id = {a.id: a for a in self.accounts}
        self.by_lang = {lang: [a for a in self.accounts if a.lang == lang] for lang in LANGS}
        self.influential = {lang: [a for a in self.by_lang[lang] if a.influential] or self.by_lang[lang][:1]
                            for lang in LANGS}
        # activity varies a lot between accounts: a few post often, most rarely
        self.activity = {lang: [self.rng.lognormvariate(0, 1) for _ in self.by_lang[lang]] for lang in LANGS}
        self.topics = {lang: [t for t in TOPICS if t.lang == lang] for lang in LANGS}
        self.topic_weights = {lang: [self.rng.uniform(0.5, 2.0) for _ in self.topics[lang]] for lang in LANGS}
        # each topic leans its own way, so opinion summaries differ between topics
        self.topic_mood = {t.name: self._mood() for t in TOPICS}

    def _mood(self) -> tuple[float, float]:
        positive = self.rng.uniform(0.15, 0.6)
        negative = self.rng.uniform(0.1, 0.9 - positive)
        return positive, negative

    def _accounts(self) -> list[Account]:
        accounts, seen = [], set()
        for i in range(self.c.accounts):
            lang = "ja" if self.rng.random() < self.c.ja_share else "en"
            first, second = NAME_PARTS[lang]
            while True:
                username = self.rng.choice(first) + self.rng.choice(second) + str(self.rng.randint(1, 999))
                if username not in seen:
                    seen.add(username)
                    break
            influential = self.rng.random() < 0.05
            followers = int(10 ** self.rng.uniform(5.0, 6.7) if influential else 10 ** self.rng.uniform(1.0, 3.8))
            name = username.replace("_", " ").rstrip(string.digits).title()
            accounts.append(Account(str(10_000_000 + i * 7919), username, name, lang, followers, influential))
        for lang in LANGS:  # both languages must have speakers, whatever the seed
            if not any(a.lang == lang for a in accounts):
                accounts[0 if lang == "en" else -1].lang = lang
        return accounts

    # --- schedule -----------------------------------------------------------------------------

    def run(self) -> SynthResult:
        c = self.c
        span_s = c.minutes * 60.0
        t0 = c.start.timestamp()
        bursts, events = self._plan_bursts(t0, span_s)
        num_background = max(0, c.posts - sum(b["posts"] for b in bursts))
        events += [(t0 + self.rng.random() * span_s, None) for _ in range(num_background)]
        events.sort(key=lambda e: e[0])
        for when, burst in events:
            while self.edits and self.edits[0][0] <= when:
                self._emit_edit(*heapq.heappop(self.edits))
            if burst is not None:
                self._burst_post(when, burst)
            else:
                self._background_post(when)
        while self.edits:
            self._emit_edit(*heapq.heappop(self.edits))
        for b in bursts:
            b.pop("event")
        truth = {
            "seed": c.seed, "start": format_created_at(c.start),
            "end": format_created_at(c.start + timedelta(seconds=span_s)),
            "lines": len(self.lines), "distinct_ids": len({line["data"]["id"] for line in self.lines}),
            "languages": {lang: sum(line["data"]["lang"] == lang for line in self.lines) for lang in LANGS},
            "bursts": bursts, "edits": self.edit_pairs, "duplicates": self.duplicates,
            "topic_sentiment": self.sentiment_counts,
            "accounts": [{"username": a.username, "id": a.id, "lang": a.lang, "followers": a.followers,
                          "influential": a.influential} for a in self.accounts],
        }
        return SynthResult(self.lines, truth, self.accounts)

    def _plan_bursts(self, t0: float, span_s: float) -> tuple[list[dict], list]:
        c = self.c
        pool = {lang: [e for e in BURST_EVENTS if e.lang == lang] for lang in LANGS}
        for lang in LANGS:
            self.rng.shuffle(pool[lang])
        bursts, events = [], []
        for i in range(c.num_bursts):
            lang = LANGS[i % 2]
            event = pool[lang].pop() if pool[lang] else pool[LANGS[1 - i % 2]].pop()
            duration = min(self.rng.uniform(15, 30) * 60, span_s / 8)
            start = t0 + self.rng.uniform(0.1, 0.9) * span_s - duration / 2
            planned = max(10, round(c.posts * c.burst_share / c.num_bursts))
            burst = {"term": event.term, "hashtag": "#" + event.hashtag, "lang": event.lang,
                     "start": format_created_at(datetime.fromtimestamp(start, timezone.utc)),
                     "end": format_created_at(datetime.fromtimestamp(start + duration, timezone.utc)),
                     "posts": planned, "event": event}
            bursts.append(burst)
            events += [(start + self.rng.random() * duration, burst) for _ in range(planned)]
        return bursts, events

    # --- posts --------------------------------------------------------------------------------

    def _author(self, lang: str) -> Account:
        return self.rng.choices(self.by_lang[lang], weights=self.activity[lang])[0]

    def _background_post(self, when: float) -> None:
        roll = self.rng.random()
        if self.recent and roll < self.c.reply_share:
            self._reply(when)
        elif self.recent and roll < self.c.reply_share + self.c.quote_share:
            self._quote(when)
        else:
            lang = "ja" if self.rng.random() < self.c.ja_share else "en"
            topic = self.rng.choices(self.topics[lang], weights=self.topic_weights[lang])[0]
            self._original(when, self._author(lang), topic)

    def _opinion(self, topic: str) -> str:
        positive, negative = self.topic_mood.get(topic, (0.34, 0.33))
        roll = self.rng.random()
        mood = "positive" if roll < positive else "negative" if roll < positive + negative else "neutral"
        counts = self.sentiment_counts.setdefault(topic, {"positive": 0, "negative": 0, "neutral": 0})
        counts[mood] += 1
        return mood

    def _sentence(self, lang: str, subject: str, mood: str) -> str:
        opener = self.rng.choice(OPENERS[lang])
        opinion = self.rng.choice(OPINIONS[lang][mood])
        if lang == "en":
            text = f"{opener}{subject} {opinion}."
            return text[0].upper() + text[1:]
        return f"{opener}{subject}{opinion}"

    def _original(self, when: float, author: Account, topic: Topic) -> None:
        text = self._sentence(topic.lang, self.rng.choice(topic.subjects), self._opinion(topic.name))
        hashtags = [self.rng.choice(topic.hashtags)] if self.rng.random() < 0.6 else []
        mentions = [self.rng.choice(self.influential[topic.lang]).username] if self.rng.random() < 0.1 else []
        self._post(when, author, topic.lang, text, hashtags, mentions, with_url=self.rng.random() < 0.05)

    def _burst_post(self, when: float, burst: dict) -> None:
        event: BurstEvent = burst["event"]
        text = self._sentence(event.lang, self.rng.choice(event.subjects), self._opinion(event.term))
        hashtags = [event.hashtag] if self.rng.random() < 0.7 else []
        self._post(when, self._author(event.lang), event.lang, text, hashtags, [], with_url=self.rng.random() < 0.1)

    def _reply(self, when: float) -> None:
        parent = self.rng.choice(self.recent)
        lang = parent["lang"]
        author = self._author(lang)
        text = self.rng.choice(REPLIES[lang])
        self._post(when, author, lang, text, [], [parent["username"]], reply_to=parent)

    def _quote(self, when: float) -> None:
        quoted = self.rng.choice(self.recent)
        lang = quoted["lang"]
        comment = self.rng.choice(QUOTE_COMMENTS[lang])
        self._post(when, self._author(lang), lang, comment, [], [], quoted=quoted)

    def _post(self, when: float, author: Account, lang: str, text: str, hashtags: list[str], mentions: list[str],
              with_url: bool = False, reply_to: dict | None = None, quoted: dict | None = None) -> None:
        post_id = self._snowflake(when)
        entities: dict = {}
        if reply_to is not None:
            text = f"@{reply_to['username']} {text}"
        elif mentions:
            text = f"{text} @{mentions[0]}"
        for tag in hashtags:
            text = f"{text} #{tag}"
        urls = []
        if quoted is not None:
            urls.append(("https://t.co/" + self._short(), f"https://x.com/{quoted['username']}/status/{quoted['id']}"))
        if with_url:
            urls.append(("https://t.co/" + self._short(), f"https://news.example.com/{post_id[-6:]}"))
        for short, _ in urls:
            text = f"{text} {short}"
        if hashtags:
            entities["hashtags"] = [_span(text, "#" + tag, {"tag": tag}) for tag in hashtags]
        if mentions:
            entities["mentions"] = [_span(text, "@" + m, {"username": m, "id": self.by_username[m].id})
                                    for m in mentions]
        if urls:
            entities["urls"] = [_span(text, short, {"url": short, "expanded_url": full,
                                                    "display_url": full.split("://", 1)[1][:26]})
                                for short, full in urls]
        data = {
            "id": post_id, "text": text, "author_id": author.id,
            "created_at": format_created_at(datetime.fromtimestamp(when, timezone.utc)), "lang": lang,
            "conversation_id": reply_to["conversation_id"] if reply_to else post_id,
            "edit_history_tweet_ids": [post_id], "public_metrics": self._metrics(author),
        }
        if entities:
            data["entities"] = entities
        if reply_to is not None:
            data["referenced_tweets"] = [{"type": "replied_to", "id": reply_to["id"]}]
        elif quoted is not None:
            data["referenced_tweets"] = [{"type": "quoted", "id": quoted["id"]}]
        self._emit(data, author)
        self.recent.append({"id": post_id, "username": author.username, "lang": lang,
                            "conversation_id": data["conversation_id"]})
        if self.rng.random() < self.c.edit_share:  # X allows edits within an hour
            heapq.heappush(self.edits, (when + self.rng.uniform(60, 1800), next(self.edit_order), data))

    def _emit(self, data: dict, author: Account) -> None:
        line = {"data": data, "includes": {"users": [author.to_x()]}}
        self.lines.append(line)
        if self.rng.random() < self.c.duplicate_share:  # at-least-once delivery re-sends a post
            self.lines.append(line)
            self.duplicates.append(data["id"])

    def _emit_edit(self, when: float, _tiebreak: int, original: dict) -> None:
        new_id = self._snowflake(when)
        lang = original["lang"]
        fix = " (edited)" if lang == "en" else "（追記）"
        text = original["text"] + fix
        entities = original.get("entities")
        data = {**original, "id": new_id, "text": text,
                "created_at": format_created_at(datetime.fromtimestamp(when, timezone.utc)),
                "edit_history_tweet_ids": [original["id"], new_id]}
        if entities:
            data["entities"] = entities  # the fix is appended, so every span stays where it was
        author = self.by_id[original["author_id"]]
        self.edit_pairs.append([original["id"], new_id])
        self._emit(data, author)

    def _metrics(self, author: Account) -> dict:
        impressions = int(author.followers * self.rng.uniform(0.05, 0.6)) + self.rng.randint(0, 50)
        likes = int(impressions * self.rng.uniform(0.002, 0.03))
        retweets = int(likes * self.rng.uniform(0.05, 0.3))
        return {"retweet_count": retweets, "reply_count": int(likes * self.rng.uniform(0.02, 0.2)),
                "like_count": likes, "quote_count": int(retweets * self.rng.uniform(0, 0.3)),
                "bookmark_count": int(likes * self.rng.uniform(0, 0.15)), "impression_count": impressions}

    def _snowflake(self, when: float) -> str:
        ms = max(int(math.floor(when * 1000)) - X_EPOCH_MS, self.last_ms)
        self.seq = self.seq + 1 if ms == self.last_ms else 0
        self.last_ms = ms
        return str((ms << 22) | (self.seq & 0x3FFFFF))

    def _short(self) -> str:
        return "".join(self.rng.choices(string.ascii_letters + string.digits, k=10))


def _span(text: str, needle: str, fields: dict) -> dict:
    """An entity with X's start/end: code-point offsets of `needle` in `text` (end exclusive)."""
    start = text.rindex(needle)
    return {"start": start, "end": start + len(needle), **fields}
