"""API keys and per-key usage totals in one SQLite file.

A key is `hk-` + 43 url-safe characters from `secrets` (256 random bits). The file keeps only
its SHA-256 digest and a short display prefix, never the key. A fast hash is the right tool
here, as for GitHub and Stripe tokens: slow password hashes (bcrypt, argon2) exist to stretch
low-entropy human passwords, while guessing one 256-bit random key stays out of reach at any
hash speed; and a plain digest can be looked up through an index on every request. The lookup
by digest reveals at most timing about the digest, which says nothing about a key; the match is
still confirmed with `hmac.compare_digest`.

Reads happen per request, so `hepta keys revoke` or a limit change in another process takes
effect on the next request a running server sees. WAL lets that process write while the
server reads; one connection behind a lock serves the server's threads.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from hepta.errors import HeptaError

KEY_PREFIX = "hk-"
KEY_RANDOM_CHARS = 43  # secrets.token_urlsafe(32)
DISPLAY_CHARS = len(KEY_PREFIX) + 8  # "hk-" and 48 of the 256 random bits: enough to tell keys apart
APPLICATION_ID = 0x48455054  # "HEPT": marks the file as a hepta key file
SCHEMA_VERSION = 1
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")

# A name belongs to one active key; revoked keys keep their name and their usage history.
SCHEMA = (
    """CREATE TABLE api_keys (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        prefix TEXT NOT NULL,
        key_hash BLOB NOT NULL UNIQUE,
        created_at REAL NOT NULL,
        revoked_at REAL,
        rpm INTEGER,
        tpm INTEGER)""",
    "CREATE UNIQUE INDEX api_keys_active_name ON api_keys(name) WHERE revoked_at IS NULL",
    """CREATE TABLE usage (
        key_id INTEGER NOT NULL REFERENCES api_keys(id),
        day TEXT NOT NULL,
        model TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        requests INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        PRIMARY KEY (key_id, day, model, endpoint))""",
    # the limits `hepta keys add` gives a key when none are named (NULL = unlimited)
    "CREATE TABLE default_limits (id INTEGER PRIMARY KEY CHECK (id = 1), rpm INTEGER, tpm INTEGER)",
    "INSERT INTO default_limits (id, rpm, tpm) VALUES (1, NULL, NULL)",
)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One stored key, without the key itself. `rpm`/`tpm` None means unlimited."""

    id: int
    name: str
    prefix: str
    created_at: float
    revoked: bool
    rpm: int | None
    tpm: int | None

    @property
    def display(self) -> str:
        return f"{self.prefix}..."


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """What one key has used since it was created."""

    key_id: int
    name: str
    prefix: str
    revoked: bool
    requests: int
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class UsageRow:
    """What one key used on one UTC day, with one model, on one endpoint."""

    name: str
    prefix: str
    day: str
    model: str
    endpoint: str
    requests: int
    prompt_tokens: int
    completion_tokens: int


def hash_key(raw_key: str) -> bytes:
    return hashlib.sha256(raw_key.encode("utf-8")).digest()


def new_raw_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def looks_like_key(raw_key: object) -> bool:
    return isinstance(raw_key, str) and len(raw_key) == len(KEY_PREFIX) + KEY_RANDOM_CHARS \
        and raw_key.startswith(KEY_PREFIX) and raw_key.isascii()


def bearer_token(authorization: str | None) -> str | None:
    """The key in an `Authorization: Bearer <key>` header (what the openai client sends), or None."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def check_limit(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise HeptaError(f"{name} must be a whole number of at least 1, or None for no limit (got {value!r})")


class KeyStore:
    """API keys, their limits and their usage in the SQLite file at `path`.

    `create=False` (what a server wants) refuses a missing file, so a mistyped path does not
    start a server that rejects every key.
    """

    def __init__(self, path: str | os.PathLike, *, create: bool = False):
        self.path = Path(path)
        self._lock = threading.Lock()
        if self.path.is_dir():
            raise HeptaError(f"key file {self.path} is a folder; pass the path of a key file")
        created = not self.path.exists()
        if created:
            if not create:
                raise HeptaError(f"no key file at {self.path}; create it with `hepta keys add NAME --file {self.path}`")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))  # hashes and usage are private
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10.0)
            self._open(create)
        except (sqlite3.DatabaseError, HeptaError) as e:  # not SQLite, unreadable, locked...
            self._db_close_quietly()
            if created:
                for leftover in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
                    leftover.unlink(missing_ok=True)
            if isinstance(e, HeptaError):
                raise
            raise HeptaError(f"{self.path} is not a readable hepta key file ({e}); pass the file "
                             "`hepta keys add` created") from e

    def _open(self, create: bool) -> None:
        db = self._db
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        has_tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0
        if app_id != APPLICATION_ID and has_tables:
            raise HeptaError(f"{self.path} is an SQLite file of something else, not a hepta key file; "
                             "pass the file `hepta keys add` created")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise HeptaError(f"{self.path} was written by a newer hepta (key file version {version}); upgrade hepta")
        if not has_tables and not create:
            raise HeptaError(f"{self.path} is empty, not a hepta key file; create one with "
                             f"`hepta keys add NAME --file {self.path}`")
        if not has_tables:
            # journal_mode needs a write; a read-only file that is already initialised keeps its mode
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("BEGIN IMMEDIATE")
            if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:  # another process may have won
                for statement in SCHEMA:
                    db.execute(statement)
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: a crash may drop the last commits, never corrupts
        db.execute("PRAGMA foreign_keys = ON")

    def _db_close_quietly(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> KeyStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as e:
                raise HeptaError(f"could not read key file {self.path} ({e}); check the file and its permissions") from e

    def _write(self, sql: str, params: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            try:
                return self._db.execute(sql, params)  # autocommit: one statement, one transaction
            except sqlite3.IntegrityError:
                raise
            except sqlite3.DatabaseError as e:
                raise HeptaError(f"could not write key file {self.path} ({e}); check the file and its permissions") from e

    # --- keys ----------------------------------------------------------------------------

    def add(self, name: str, rpm: int | None = None, tpm: int | None = None) -> str:
        """Stores a new key under `name` and returns it; only its hash is kept, so this is the one chance to see it."""
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            raise HeptaError(f"key name {name!r} is not allowed; use 1-64 letters, digits, '.', '_', '@' or '-', "
                             "starting with a letter or digit")
        check_limit("rpm", rpm)
        check_limit("tpm", tpm)
        raw = new_raw_key()
        try:
            self._write("INSERT INTO api_keys (name, prefix, key_hash, created_at, rpm, tpm) VALUES (?, ?, ?, ?, ?, ?)",
                        (name, raw[:DISPLAY_CHARS], hash_key(raw), time.time(), rpm, tpm))
        except sqlite3.IntegrityError as e:
            raise HeptaError(f"a key named {name!r} already exists in {self.path}; choose another name "
                             f"or revoke it first with `hepta keys revoke {name}`") from e
        return raw

    def authenticate(self, raw_key: str) -> KeyRecord | None:
        """The active key matching `raw_key`, or None (unknown, malformed or revoked)."""
        if not looks_like_key(raw_key):
            return None
        digest = hash_key(raw_key)
        rows = self._query(f"SELECT {_KEY_COLUMNS}, key_hash FROM api_keys WHERE key_hash = ?", (digest,))
        if not rows or not hmac.compare_digest(rows[0][-1], digest):
            return None
        record = _record(rows[0][:-1])
        return None if record.revoked else record

    def get(self, name: str) -> KeyRecord:
        """The active key named `name`."""
        rows = self._query(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE name = ? AND revoked_at IS NULL", (name,))
        if not rows:
            raise HeptaError(f"no active key named {name!r} in {self.path}; `hepta keys list` shows the names")
        return _record(rows[0])

    def revoke(self, name: str) -> KeyRecord:
        """Revokes the active key named `name`; its usage history stays."""
        cursor = self._write("UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                             (time.time(), name))
        if cursor.rowcount == 0:
            raise HeptaError(f"no active key named {name!r} in {self.path}; `hepta keys list` shows the names")
        rows = self._query(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE name = ? ORDER BY revoked_at DESC LIMIT 1",
                           (name,))
        return _record(rows[0])

    def set_limits(self, name: str, rpm: int | None, tpm: int | None) -> KeyRecord:
        """Replaces both limits of the active key `name` (None = unlimited); a running server applies them at once."""
        check_limit("rpm", rpm)
        check_limit("tpm", tpm)
        cursor = self._write("UPDATE api_keys SET rpm = ?, tpm = ? WHERE name = ? AND revoked_at IS NULL",
                             (rpm, tpm, name))
        if cursor.rowcount == 0:
            raise HeptaError(f"no active key named {name!r} in {self.path}; `hepta keys list` shows the names")
        return self.get(name)

    def default_limits(self) -> tuple[int | None, int | None]:
        """(rpm, tpm) that `hepta keys add` gives a new key without --rpm/--tpm; None = unlimited."""
        return self._query("SELECT rpm, tpm FROM default_limits")[0]

    def set_default_limits(self, rpm: int | None, tpm: int | None) -> None:
        """Changes the defaults for keys added from now on; existing keys keep their limits."""
        check_limit("rpm", rpm)
        check_limit("tpm", tpm)
        self._write("UPDATE default_limits SET rpm = ?, tpm = ?", (rpm, tpm))

    def list(self) -> list[KeyRecord]:
        """Every key, revoked ones included."""
        return [_record(row) for row in self._query(f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY id")]

    # --- usage ---------------------------------------------------------------------------

    def record_usage(self, key_id: int, model: str, prompt_tokens: int, completion_tokens: int,
                     endpoint: str) -> None:
        """Adds one request to the key's totals (kept per UTC day, model and endpoint)."""
        assert prompt_tokens >= 0 and completion_tokens >= 0, (prompt_tokens, completion_tokens)
        day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        self._write(
            "INSERT INTO usage (key_id, day, model, endpoint, requests, prompt_tokens, completion_tokens) "
            "VALUES (?, ?, ?, ?, 1, ?, ?) ON CONFLICT (key_id, day, model, endpoint) DO UPDATE SET "
            "requests = requests + 1, prompt_tokens = prompt_tokens + excluded.prompt_tokens, "
            "completion_tokens = completion_tokens + excluded.completion_tokens",
            (key_id, day, model, endpoint, prompt_tokens, completion_tokens))

    def usage(self, name: str | None = None) -> list[UsageTotals]:
        """Totals per key (revoked keys included, keys without requests as zeros), optionally of one name."""
        where, params = ("WHERE k.name = ?", (name,)) if name is not None else ("", ())
        rows = self._query(
            "SELECT k.id, k.name, k.prefix, k.revoked_at IS NOT NULL, coalesce(sum(u.requests), 0), "
            "coalesce(sum(u.prompt_tokens), 0), coalesce(sum(u.completion_tokens), 0) "
            f"FROM api_keys k LEFT JOIN usage u ON u.key_id = k.id {where} GROUP BY k.id ORDER BY k.id", params)
        if name is not None and not rows:
            raise HeptaError(f"no key named {name!r} in {self.path}; `hepta keys list` shows the names")
        return [UsageTotals(key_id=r[0], name=r[1], prefix=r[2], revoked=bool(r[3]), requests=r[4],
                            prompt_tokens=r[5], completion_tokens=r[6]) for r in rows]

    def usage_detail(self, name: str | None = None) -> list[UsageRow]:
        """The totals split by key, UTC day, model and endpoint (for accounting), oldest day first."""
        if name is not None:
            self.usage(name)  # names an unknown key
        where, params = ("WHERE k.name = ?", (name,)) if name is not None else ("", ())
        rows = self._query(
            "SELECT k.name, k.prefix, u.day, u.model, u.endpoint, u.requests, u.prompt_tokens, u.completion_tokens "
            f"FROM usage u JOIN api_keys k ON k.id = u.key_id {where} ORDER BY u.day, k.id, u.model, u.endpoint",
            params)
        return [UsageRow(*row) for row in rows]


_KEY_COLUMNS = "id, name, prefix, created_at, revoked_at IS NOT NULL, rpm, tpm"


def _record(row: tuple) -> KeyRecord:
    return KeyRecord(id=row[0], name=row[1], prefix=row[2], created_at=row[3], revoked=bool(row[4]),
                     rpm=row[5], tpm=row[6])
