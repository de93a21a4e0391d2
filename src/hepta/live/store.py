"""The post store: one SQLite file in WAL mode with an FTS5 full-text index.

Rows are keyed by `key = created_at in ms * 1024 + a slot from the id`, so key order is time order:
date filters become key ranges the FTS5 index can seek to, and "newest matches first" walks the
index backwards and stops early (the way real-time search engines scan their newest segments
first) instead of scoring every match of a common word.

Identity is the post's original id (the first of `edit_history_ids`, shared by every edit of a
post): a post seen twice is stored once, and a newer edit (longer history) replaces the stored
version, which then answers to every id in its history. Older versions arriving late are ignored.

Writes go through one connection in one transaction per batch; reads use a connection per
thread. In WAL mode a reader sees the last committed batch and neither side waits for the other.

Full-text: FTS5's `unicode61` tokenizer splits on spaces and punctuation, which suits English but
leaves a Japanese sentence as one long token. Japanese runs (kana and kanji) are rewritten into
overlapping character bigrams plus the run's last character ("東京都で地震" -> "東京 京都 都で で地
地震 震"), the scheme of Lucene's CJK analyzer. A query word becomes the phrase of its bigrams, so
it matches wherever it occurs, a one-character word becomes a prefix query, and the same function
rewrites documents and queries. Measured on a hand-labelled Japanese retrieval set against janome
words and FTS5's trigram tokenizer (tests/live/test_store.py, figures in the README): janome misses
words it splits differently inside a sentence, trigram cannot match words shorter than three
characters (most Japanese words), and bigrams find every labelled post while indexing about 40x
faster than janome (benchmarks/live.py). Japanese queries are cut at particles first ("地震の影響"
asks for 地震 and 影響). English words go through the Porter stemmer ("earthquakes" finds
"earthquake").
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable, Iterator

from hepta.errors import HeptaError
from hepta.live.post import URL_PREFIX, Post, posts_from_response
from hepta.live.terms import CJK_CHAR, EN_STOPWORDS, japanese_query_pieces, normalize

SCHEMA_VERSION = 2
KEY_SLOTS = 1024  # keys per millisecond
FTS_TOKENIZER = "porter unicode61 remove_diacritics 2"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS posts (
    key INTEGER PRIMARY KEY,
    original_id INTEGER NOT NULL UNIQUE,  -- X ids are digit strings; integers index smaller and faster
    id TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    author_id TEXT NOT NULL,
    username TEXT,
    handle TEXT,
    lang TEXT,
    text TEXT NOT NULL,
    like_count INTEGER NOT NULL,
    retweet_count INTEGER NOT NULL,
    reply_count INTEGER NOT NULL,
    quote_count INTEGER NOT NULL,
    impression_count INTEGER NOT NULL,
    bookmark_count INTEGER NOT NULL,
    num_versions INTEGER NOT NULL
);
-- the X JSON apart, so that the rows search reads stay small (several per page)
CREATE TABLE IF NOT EXISTS posts_raw (key INTEGER PRIMARY KEY, raw TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS posts_by_handle ON posts(handle, key);
CREATE TABLE IF NOT EXISTS edit_ids (id INTEGER PRIMARY KEY, key INTEGER NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS posts_fts USING fts5(body, content='', tokenize='{FTS_TOKENIZER}');
"""
COLUMNS = ("key, original_id, id, created_ms, author_id, username, handle, lang, text, like_count, retweet_count, "
           "reply_count, quote_count, impression_count, bookmark_count, num_versions")
SUMMARY_COLUMNS = ("id, text, author_id, username, created_ms, lang, like_count, retweet_count, reply_count, "
                   "quote_count, impression_count, bookmark_count, key")
RANK_COLUMNS = "key, created_ms, like_count, retweet_count, reply_count, quote_count"
MAX_VARS = 500  # ids per IN (...) list, below SQLite's bound-parameter limit

_CJK_RUN = re.compile(f"[{CJK_CHAR}]+")
_HAS_CJK = re.compile(f"[{CJK_CHAR}]")
_QUERY_WORD = re.compile(f"[{CJK_CHAR}]+|[^\\W_{CJK_CHAR}]+")  # a Japanese run, or letters and digits


# --- full-text rewriting (documents and queries alike) ------------------------------------------


def _bigrams(match: re.Match) -> str:
    run = match.group(0)
    if len(run) == 1:
        return f" {run} "
    return " " + " ".join(run[i:i + 2] for i in range(len(run) - 1)) + f" {run[-1]} "


def index_text(text: str) -> str:
    """What FTS5 indexes for a post's text."""
    if text.isascii():  # most posts: NFKC changes nothing and there is no Japanese run to rewrite
        return text.lower()
    return _CJK_RUN.sub(_bigrams, normalize(text))


def query_words(query: str, drop_stopwords: bool = False) -> list[str]:
    """The words of a query, normalised like the documents; stopwords dropped on request.

    Japanese runs are cut at particles ("地震の影響" -> 地震, 影響); without drop_stopwords a run with
    no content word (all particles, say) is kept whole, so that it can still be searched for.
    """
    words: list[str] = []
    for word in _QUERY_WORD.findall(normalize(query)):
        if _HAS_CJK.match(word):
            words.extend(japanese_query_pieces(word, drop_stopwords) or ([] if drop_stopwords else [word]))
        elif not (drop_stopwords and word in EN_STOPWORDS):
            words.append(word)
    return words


def fts_word(word: str) -> str:
    """One query word as an FTS5 expression: a phrase of bigrams, a prefix, or a quoted word."""
    if _HAS_CJK.match(word):
        if len(word) == 1:
            return f'"{word}"*'  # bigrams starting with it, or it as the last character of a run
        return '"' + " ".join(word[i:i + 2] for i in range(len(word) - 1)) + '"'
    return '"' + word.replace('"', '""') + '"'


def fts_query(words: list[str], any_word: bool = False) -> str:
    """An FTS5 MATCH expression requiring every word (any one of them with any_word)."""
    assert words, "a query needs at least one word"
    return (" OR " if any_word else " AND ").join(fts_word(w) for w in words)


# --- rows --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredPost:
    """A stored post as analyses and search return it: plain JSON-ready fields."""

    id: str  # the newest edit's id
    text: str
    author_id: str
    username: str | None
    created_at: str  # ISO 8601 UTC
    lang: str | None
    like_count: int
    retweet_count: int
    reply_count: int
    quote_count: int
    impression_count: int
    bookmark_count: int
    url: str

    @property
    def timestamp(self) -> float:
        return datetime.fromisoformat(self.created_at).timestamp()

    @property
    def engagement(self) -> int:
        return self.like_count + self.retweet_count + self.reply_count + self.quote_count


def summary_from_row(row: tuple) -> StoredPost:
    """A StoredPost from a row selected with SUMMARY_COLUMNS (extra trailing columns ignored)."""
    return StoredPost(id=row[0], text=row[1], author_id=row[2], username=row[3], created_at=iso_ms(row[4]),
                      lang=row[5], like_count=row[6], retweet_count=row[7], reply_count=row[8], quote_count=row[9],
                      impression_count=row[10], bookmark_count=row[11], url=URL_PREFIX + row[0])


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat().replace("+00:00", "Z")


def to_ms(when: datetime) -> int:
    assert when.tzinfo is not None, "times in the store are timezone-aware"
    return int(when.timestamp() * 1000)


def key_floor(ms: int) -> int:
    """The smallest key of a post created at ms (keys of later posts are larger)."""
    return ms * KEY_SLOTS


def _post_key(post: Post) -> int:
    # the slot mixes all the id's bits: X ids made in one ms on different machines share their low bits
    return key_floor(to_ms(post.created_at)) + ((int(post.id) * 0x9E3779B1) >> 16) % KEY_SLOTS


def normalize_handle(handle: str) -> str:
    return handle.strip().lstrip("@").lower()


# --- the store ---------------------------------------------------------------------------------


class Store:
    """Posts in one SQLite file; see the module docstring.

    retention: keep only posts at most this old, measured from the newest stored post (stream
    time, so a replay of an old recording keeps its own window). None keeps everything.
    create=False refuses to open a file that does not exist (readers: CLI, server).
    """

    def __init__(self, path: str | Path, retention: timedelta | float | None = None, create: bool = True):
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise HeptaError(f"no post store at {self.path}; create one with `hepta live ingest --db {self.path} ...`")
        if isinstance(retention, (int, float)):
            retention = timedelta(seconds=retention)
        if retention is not None and retention <= timedelta(0):
            raise HeptaError(f"retention must be positive, got {retention}")
        self.retention = retention
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._writer = self._connect()
        self._use_wal()
        self._writer.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; WAL keeps the file consistent
        # tables first: the version is committed with them, so a store seen being created reads whole
        tables = {r[0] for r in self._writer.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        version = self._writer.execute("PRAGMA user_version").fetchone()[0]
        if version == 0 and tables:
            raise HeptaError(f"{self.path} is an SQLite file but not a hepta post store; give a new --db path")
        if version not in (0, SCHEMA_VERSION):
            raise HeptaError(f"{self.path} is a post store of format {version}; this hepta reads format "
                             f"{SCHEMA_VERSION}, so ingest into a new --db path")
        if version == 0:  # a new file; an existing store is only read here, so opening never waits on a writer
            # One transaction: a process opening the file meanwhile sees no tables or a whole store with its
            # version, never tables without one; and the schema's IF NOT EXISTS lets two creators both pass.
            self._writer.executescript(f"BEGIN IMMEDIATE; {SCHEMA}; PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")

    def _use_wal(self, wait_s: float = 30.0) -> None:
        # Switching a new file to WAL takes an exclusive lock that SQLite's busy timeout does not wait
        # for, so two processes opening the same new store (an ingest and a reader) retry here.
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self._writer.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise HeptaError(f"cannot open the post store {self.path} ({e})") from None
                time.sleep(0.05)

    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            db.execute("PRAGMA cache_size=-65536")  # 64 MiB page cache per connection
        except sqlite3.DatabaseError as e:
            raise HeptaError(f"cannot open the post store {self.path} ({e}); give a hepta post store as --db") from None
        with self._connections_lock:
            self._connections.append(db)
        return db

    @property
    def reader(self) -> sqlite3.Connection:
        """This thread's read connection (a separate connection from the writer's)."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect()
            db.execute("PRAGMA query_only=1")
        return db

    def close(self) -> None:
        with self._connections_lock:
            for db in self._connections:
                db.close()
            self._connections.clear()
        self._local = threading.local()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- writing ---

    def upsert(self, posts: Iterable[Post]) -> int:
        """Stores a batch in one transaction; returns how many it wrote: new posts and newer edits.

        Duplicates and versions older than the stored one are not written and not counted.
        """
        newest: dict[int, Post] = {}  # by original id: the newest version in this batch
        for post in posts:
            original = int(post.original_id)
            seen = newest.get(original)
            if seen is None or _version(post) > _version(seen):
                newest[original] = post
        if not newest:
            return 0
        with self._write_lock:
            db = self._writer
            db.execute("BEGIN IMMEDIATE")
            try:
                cutoff = self._cutoff_key(db, newest.values())
                num_new = self._upsert_locked(db, newest, cutoff)
                if cutoff is not None:
                    self._prune_locked(db, cutoff)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return num_new

    def _upsert_locked(self, db: sqlite3.Connection, newest: dict[int, Post], cutoff: int | None) -> int:
        stored: dict[int, tuple[int, int, str]] = {}  # original id -> (key, num_versions, text)
        originals = list(newest)
        for i in range(0, len(originals), MAX_VARS):
            chunk = originals[i:i + MAX_VARS]
            marks = ",".join("?" * len(chunk))
            for original_id, key, versions, text in db.execute(
                    f"SELECT original_id, key, num_versions, text FROM posts WHERE original_id IN ({marks})", chunk):
                stored[original_id] = (key, versions, text)

        fresh: list[Post] = []
        replaced: list[tuple[int, str]] = []  # (key, text) of versions to drop
        for original_id, post in newest.items():
            old = stored.get(original_id)
            if old is not None and len(post.edit_history_ids) <= old[1]:
                continue  # a duplicate, or an older version arriving after a newer one
            if cutoff is not None and _post_key(post) < cutoff:
                continue
            if old is not None:
                replaced.append((old[0], old[2]))
            fresh.append(post)
        if replaced:
            self._delete_locked(db, replaced)

        keys = self._free_keys(db, fresh)
        db.executemany(f"INSERT INTO posts ({COLUMNS}) VALUES ({','.join('?' * 16)})",
                       [_row(key, post) for key, post in zip(keys, fresh)])
        db.executemany("INSERT INTO posts_raw (key, raw) VALUES (?, ?)", [(key, post.raw) for key, post in zip(keys, fresh)])
        db.executemany("INSERT INTO posts_fts (rowid, body) VALUES (?, ?)",
                       [(key, index_text(post.text)) for key, post in zip(keys, fresh)])
        edits = [(int(edit_id), key) for key, post in zip(keys, fresh) if len(post.edit_history_ids) > 1
                 for edit_id in post.edit_history_ids[1:]]
        if edits:
            db.executemany("INSERT OR REPLACE INTO edit_ids (id, key) VALUES (?, ?)", edits)
        return len(fresh)

    def _free_keys(self, db: sqlite3.Connection, posts: list[Post]) -> list[int]:
        """Each post's key, moved up past keys already taken (two posts in one ms with equal id % 1024)."""
        wanted = [_post_key(post) for post in posts]
        taken: set[int] = set()
        for i in range(0, len(wanted), MAX_VARS):
            chunk = wanted[i:i + MAX_VARS]
            taken.update(r[0] for r in db.execute(
                f"SELECT key FROM posts WHERE key IN ({','.join('?' * len(chunk))})", chunk))
        checked = set(wanted)  # keys whose presence in the table `taken` already tells
        keys = []
        for key in wanted:
            while key in taken or (key not in checked and
                                   db.execute("SELECT 1 FROM posts WHERE key = ?", (key,)).fetchone()):
                key += 1
            taken.add(key)
            keys.append(key)
        return keys

    def _delete_locked(self, db: sqlite3.Connection, rows: list[tuple[int, str]]) -> None:
        # a contentless FTS5 table forgets a row when given the exact text it indexed
        db.executemany("INSERT INTO posts_fts (posts_fts, rowid, body) VALUES ('delete', ?, ?)",
                       [(key, index_text(text)) for key, text in rows])
        db.executemany("DELETE FROM posts WHERE key = ?", [(key,) for key, _ in rows])
        db.executemany("DELETE FROM posts_raw WHERE key = ?", [(key,) for key, _ in rows])

    def _cutoff_key(self, db: sqlite3.Connection, incoming: Iterable[Post]) -> int | None:
        """The smallest key kept: retention back from the newest post, stored or in the batch."""
        if self.retention is None:
            return None
        newest_key = max((_post_key(p) for p in incoming), default=0)
        stored_max = db.execute("SELECT max(key) FROM posts").fetchone()[0] or 0
        newest_ms = max(newest_key, stored_max) // KEY_SLOTS
        return key_floor(newest_ms - int(self.retention.total_seconds() * 1000))

    def _prune_locked(self, db: sqlite3.Connection, cutoff: int) -> None:
        old = db.execute("SELECT key, text FROM posts WHERE key < ?", (cutoff,)).fetchall()
        if old:
            self._delete_locked(db, old)
            db.execute("DELETE FROM edit_ids WHERE key < ?", (cutoff,))

    # --- reading ---

    def get(self, post_id: str) -> Post | None:
        """The stored version of a post, by any id in its edit history."""
        if not post_id.isdigit():
            return None
        db = self.reader
        row = db.execute("SELECT r.raw FROM posts p JOIN posts_raw r ON r.key = p.key WHERE p.original_id = ?",
                         (int(post_id),)).fetchone()
        if row is None:
            row = db.execute("SELECT r.raw FROM edit_ids e JOIN posts_raw r ON r.key = e.key WHERE e.id = ?",
                             (int(post_id),)).fetchone()
        return None if row is None else posts_from_response(json.loads(row[0]))[0]

    def count(self) -> int:
        return self.reader.execute("SELECT count(*) FROM posts").fetchone()[0]

    def time_range(self) -> tuple[datetime, datetime] | None:
        """Creation times of the oldest and the newest stored post; None when empty."""
        # two subqueries: SQLite answers a lone min() or max() from the index end, but not both in one
        lo, hi = self.reader.execute("SELECT (SELECT min(key) FROM posts), (SELECT max(key) FROM posts)").fetchone()
        if lo is None:
            return None
        return (datetime.fromtimestamp(lo // KEY_SLOTS / 1000, timezone.utc),
                datetime.fromtimestamp(hi // KEY_SLOTS / 1000, timezone.utc))

    def latest_time(self) -> datetime | None:
        key = self.reader.execute("SELECT max(key) FROM posts").fetchone()[0]
        return None if key is None else datetime.fromtimestamp(key // KEY_SLOTS / 1000, timezone.utc)

    def posts_between(self, start: datetime, end: datetime, lang: str | None = None,
                      handles: list[str] | None = None) -> Iterator[StoredPost]:
        """Posts created in [start, end), oldest first; optionally of one language or some handles."""
        sql = f"SELECT {SUMMARY_COLUMNS} FROM posts WHERE key >= ? AND key < ?"
        args: list = [key_floor(to_ms(start)), key_floor(to_ms(end))]
        if lang is not None:
            sql += " AND lang = ?"
            args.append(lang)
        if handles is not None:
            sql += f" AND handle IN ({','.join('?' * len(handles))})"
            args.extend(normalize_handle(h) for h in handles)
        for row in self.reader.execute(sql + " ORDER BY key", args):
            yield summary_from_row(row)

    def matches(self, match: str | None, start: datetime | None = None, end: datetime | None = None,
                handles: list[str] | None = None, excluded_handles: list[str] | None = None,
                min_likes: int | None = None, min_views: int | None = None, lang: str | None = None,
                limit: int = 1000) -> list[tuple[StoredPost, float]]:
        """The newest `limit` posts matching an FTS5 expression and the filters, with their BM25 scores.

        Scores are FTS5's bm25(): more negative is more relevant. Times are [start, end). With
        match None every post passing the filters matches, with score 0.
        """
        rows = self._match_rows(SUMMARY_COLUMNS, match, start, end, handles, excluded_handles, min_likes,
                                min_views, lang, limit)
        return [(summary_from_row(row), row[-1]) for row in rows]

    def match_ranks(self, match: str | None, start: datetime | None = None, end: datetime | None = None,
                    handles: list[str] | None = None, excluded_handles: list[str] | None = None,
                    min_likes: int | None = None, min_views: int | None = None, lang: str | None = None,
                    limit: int = 1000) -> list[tuple]:
        """Like `matches`, as bare rows for ranking: (key, created_ms, likes, retweets, replies, quotes, bm25)."""
        return self._match_rows(RANK_COLUMNS, match, start, end, handles, excluded_handles, min_likes, min_views,
                                lang, limit)

    def by_keys(self, keys: list[int]) -> list[StoredPost]:
        """Stored posts by key, in the order given."""
        found = {}
        for i in range(0, len(keys), MAX_VARS):
            chunk = keys[i:i + MAX_VARS]
            for row in self.reader.execute(
                    f"SELECT {SUMMARY_COLUMNS} FROM posts WHERE key IN ({','.join('?' * len(chunk))})", chunk):
                found[row[-1]] = summary_from_row(row)
        return [found[key] for key in keys if key in found]

    def _match_rows(self, columns: str, match: str | None, start: datetime | None, end: datetime | None,
                    handles: list[str] | None, excluded_handles: list[str] | None, min_likes: int | None,
                    min_views: int | None, lang: str | None, limit: int) -> list[tuple]:
        columns = ", ".join("p." + c.strip() for c in columns.split(","))
        if match is None:
            sql, key, args = f"SELECT {columns}, 0.0 FROM posts p WHERE 1", "p.key", []
        else:
            sql = (f"SELECT {columns}, bm25(posts_fts) FROM posts_fts JOIN posts p ON p.key = posts_fts.rowid "
                   "WHERE posts_fts MATCH ?")
            key, args = "posts_fts.rowid", [match]
        if start is not None:
            sql += f" AND {key} >= ?"
            args.append(key_floor(to_ms(start)))
        if end is not None:
            sql += f" AND {key} < ?"
            args.append(key_floor(to_ms(end)))
        if handles:
            sql += f" AND p.handle IN ({','.join('?' * len(handles))})"
            args.extend(normalize_handle(h) for h in handles)
        if excluded_handles:
            sql += f" AND coalesce(p.handle, '') NOT IN ({','.join('?' * len(excluded_handles))})"
            args.extend(normalize_handle(h) for h in excluded_handles)
        if min_likes is not None:
            sql += " AND p.like_count >= ?"
            args.append(min_likes)
        if min_views is not None:
            sql += " AND p.impression_count >= ?"
            args.append(min_views)
        if lang is not None:
            sql += " AND p.lang = ?"
            args.append(lang)
        sql += f" ORDER BY {key} DESC LIMIT ?"
        args.append(limit)
        try:
            return self.reader.execute(sql, args).fetchall()
        except sqlite3.OperationalError as e:
            raise HeptaError(f"the search expression {match!r} is not valid ({e}); use plain words") from None


@contextmanager
def opened(store: "Store | str | Path") -> Iterator[Store]:
    """The store itself, or an existing store file opened for the block and closed after it."""
    if isinstance(store, Store):
        yield store
        return
    opened_store = Store(store, create=False)
    try:
        yield opened_store
    finally:
        opened_store.close()


def _version(post: Post) -> int:
    return len(post.edit_history_ids)


def _row(key: int, post: Post) -> tuple:
    return (key, int(post.original_id), post.id, to_ms(post.created_at), post.author_id, post.username,
            normalize_handle(post.username) if post.username else None, post.lang, post.text,
            post.like_count, post.retweet_count, post.reply_count, post.quote_count, post.impression_count,
            post.bookmark_count, len(post.edit_history_ids))
