"""Filtered-stream rules (`/2/tweets/search/stream/rules`): list, add, delete, each with dry_run.

A rule is an X query (`#AI lang:ja`, `from:nasa`) with an optional tag; posts in the stream
carry the tags (or ids) of the rules they matched.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from hepta.errors import HeptaError
from hepta.live.sources.x_api import client_error

RULES_PATH = "/2/tweets/search/stream/rules"


@dataclass(frozen=True)
class Rule:
    value: str
    tag: str | None = None
    id: str | None = None  # given by X once the rule exists

    def to_x(self) -> dict:
        return {"value": self.value, **({"tag": self.tag} if self.tag else {})}


class StreamRules:
    def __init__(self, client: httpx.Client):
        self.client = client

    def list(self) -> list[Rule]:
        body = self._send("GET", None, False, "listing stream rules")
        return [Rule(r["value"], r.get("tag"), r["id"]) for r in body.get("data") or ()]

    def add(self, rules: list[Rule], dry_run: bool = False) -> list[Rule]:
        """The rules X created (or would create, with dry_run); an existing identical rule is not an error."""
        body = self._send("POST", {"add": [r.to_x() for r in rules]}, dry_run, "adding stream rules")
        problems = [e for e in body.get("errors") or () if e.get("title") != "DuplicateRule"]
        if problems:
            first = problems[0]
            detail = first.get("details") or first.get("detail") or first.get("title")
            raise HeptaError(f"X did not accept the stream rule {first.get('value', '')!r} ({detail}); "
                             "fix the rule (see X's filtered-stream rule syntax)")
        return [Rule(r["value"], r.get("tag"), r["id"]) for r in body.get("data") or ()]

    def delete(self, ids: list[str], dry_run: bool = False) -> int:
        """How many rules X deleted (or would delete, with dry_run)."""
        if not ids:
            return 0
        body = self._send("POST", {"delete": {"ids": list(ids)}}, dry_run, "deleting stream rules")
        return int(((body.get("meta") or {}).get("summary") or {}).get("deleted", 0))

    def ensure(self, values: list[str]) -> list[Rule]:
        """Adds the rules among `values` that do not exist yet, leaving the others alone; returns all rules."""
        present = {r.value for r in self.list()}
        missing = [Rule(v, tag=v) for v in dict.fromkeys(values) if v not in present]
        if missing:
            self.add(missing)
        return self.list()

    def _send(self, method: str, payload: dict | None, dry_run: bool, what: str) -> dict:
        params = {"dry_run": "true"} if dry_run else None
        try:
            response = self.client.request(method, RULES_PATH, json=payload, params=params)
        except httpx.TransportError as e:
            raise HeptaError(f"X did not answer while {what} ({type(e).__name__}: {e}); check the network "
                             "or --base-url and retry") from e
        if response.status_code == 429:
            raise HeptaError(f"X rate-limited {what} (HTTP 429); retry after "
                             f"{response.headers.get('x-rate-limit-reset', 'the window resets')}")
        if response.status_code >= 400:
            raise client_error(response, what)
        return response.json()
