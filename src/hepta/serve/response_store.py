"""Stored responses of `/v1/responses` (`store: true`): kept in SQLite, continued by `previous_response_id`,
read and deleted by id, each visible only to the API key that made it.

A row holds the response object as returned and the conversation that led to it (the input items of
every turn so far, then this turn's output items), so a continuation needs one read. The database is a
file given with `--responses-db`, or in memory for the server's lifetime.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time


class ResponseStore:
    def __init__(self, path: str = ":memory:"):
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()  # one connection for every request thread
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("""CREATE TABLE IF NOT EXISTS responses (
                id TEXT PRIMARY KEY, owner TEXT NOT NULL, created REAL NOT NULL,
                response TEXT NOT NULL, conversation TEXT NOT NULL)""")

    def put(self, owner: str, response: dict, conversation: list[dict]) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?)",
                             (response["id"], owner, time.time(), json.dumps(response), json.dumps(conversation)))

    def get(self, owner: str, response_id: str) -> tuple[dict, list[dict]] | None:
        """(response, conversation) of `owner`'s response, or None (another key's responses are not there)."""
        with self._lock:
            row = self._db.execute("SELECT response, conversation FROM responses WHERE id = ? AND owner = ?",
                                   (response_id, owner)).fetchone()
        return None if row is None else (json.loads(row[0]), json.loads(row[1]))

    def delete(self, owner: str, response_id: str) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM responses WHERE id = ? AND owner = ?",
                                    (response_id, owner)).rowcount > 0

    def close(self) -> None:
        with self._lock:
            self._db.close()
