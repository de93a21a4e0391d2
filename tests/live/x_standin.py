"""A local stand-in of the X API v2 on 127.0.0.1, speaking its documented wire format.

- `GET /2/tweets/search/stream`: chunked HTTP, one post JSON per line ending in \\r\\n, a bare
  \\r\\n as keep-alive; posts matching at least one rule, each with its `matching_rules`;
  `backfill_minutes` re-sends what was published while the client was away.
- `GET|POST /2/tweets/search/stream/rules`: list, add, delete, `dry_run`.
- `GET /2/tweets/search/recent`: query, since_id, max_results, next_token pages, newest first,
  `x-rate-limit-limit|remaining|reset` headers and 429 when the window is spent.

Faults, drawn from a seeded generator (`StreamFaults`) or scripted per connection attempt
(`plan_connects`): connections dropped mid-line, keep-alive-only periods, malformed and
truncated lines, duplicated and out-of-order posts, 429 with reset headers, 503, refused
connections and stalls. The posts themselves (edits included) come from the caller.

The query language of rules and search is the part of X's that the tests need: terms (all
must appear, case-insensitive), `-term`, `lang:xx`, `from:username`.
"""

from __future__ import annotations

import bisect
import json
from collections import Counter
import random
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

LINES_PER_CHUNK = 32


@dataclass
class StreamFaults:
    """Per-line probabilities of each fault on the stream (0 turns it off)."""

    seed: int = 0
    drop: float = 0.0  # close the connection in the middle of a line
    lost_on_drop: int = 5  # posts published while the client reconnects (only backfill brings them back)
    keepalive_period: float = 0.0  # a run of keep-alives with no posts
    keepalive_run: int = 4
    keepalive_gap_s: float = 0.005
    malformed: float = 0.0  # a line that is not JSON
    truncated: float = 0.0  # a post line cut short, then the line ends
    duplicate: float = 0.0  # the same post line twice
    out_of_order: float = 0.0  # a post sent after the one that follows it


class _Post:
    __slots__ = ("id", "created", "lang", "username", "text", "line")

    def __init__(self, line: dict):
        data = line["data"]
        self.id = data["id"]
        self.created = datetime.fromisoformat(data["created_at"]).timestamp()
        self.lang = data.get("lang")
        users = {u["id"]: u.get("username") for u in (line.get("includes") or {}).get("users", ())}
        self.username = (users.get(data.get("author_id")) or "").lower()
        self.text = data["text"].lower()
        self.line = line


def matches(query: str, post: _Post) -> bool:
    for term in query.split():
        negate = term.startswith("-") and len(term) > 1
        term = term[1:] if negate else term
        low = term.lower()
        if low.startswith("lang:"):
            hit = post.lang == low[5:]
        elif low.startswith("from:"):
            hit = post.username == low[5:].lstrip("@")
        else:
            hit = low.strip('"') in post.text
        if hit == negate:
            return False
    return True


def valid_rule(value: str) -> str | None:
    """Why X would refuse the rule, or None."""
    if not value.strip():
        return "Rules must contain a non-empty value"
    if value.count("(") != value.count(")") or value.count('"') % 2:
        return "Unbalanced parentheses or quotes in the rule"
    if len(value) > 512:
        return "Rules are limited to 512 characters"
    return None


class XStandin:
    def __init__(self, lines: list[dict], *, token: str = "test-token", faults: StreamFaults | None = None,
                 clock=time.time, search_limit: int = 450, search_window_s: float = 900.0,
                 rate_limit_reset_s: float = 90.0):
        self.posts = sorted((_Post(line) for line in lines), key=lambda p: p.created)
        self._created = [p.created for p in self.posts]
        self.token = token
        self.faults = faults or StreamFaults()
        self.clock = clock
        self.rules: dict[str, dict] = {}
        self._next_rule_id = 1_000_000_000_000_000_000
        self._connect_plan: list[object] = []
        self._search_plan: list[int] = []
        self.search_limit, self.search_window_s = search_limit, search_window_s
        self._search_remaining, self._search_reset = search_limit, None
        self.rate_limit_reset_s = rate_limit_reset_s
        self.cursor = 0  # index of the next post the stream publishes
        self.delivered: set[str] = set()  # post ids written in full at least once
        self.injected: Counter = Counter()  # faults injected into the stream, by kind
        self.connections: list[dict] = []  # what each stream connection attempt was answered with
        self.search_requests: list[dict] = []
        self.exhausted = threading.Event()  # every post has been published
        self._rng = random.Random(self.faults.seed)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "XStandin":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()

    # --- ground truth and scripting -----------------------------------------------------------

    def matching_ids(self) -> set[str]:
        """Ids of the posts the stream must deliver: those matching at least one rule."""
        return {p.id for p in self.posts if self._rules_of(p)}

    def add_posts(self, lines: list[dict]) -> None:
        """Posts published from now on (recent search finds them; the stream sends them next)."""
        with self._lock:
            self.posts = sorted(self.posts + [_Post(line) for line in lines], key=lambda p: p.created)
            self._created = [p.created for p in self.posts]
            self.exhausted.clear()

    def plan_connects(self, *answers: object) -> None:
        """Answers for the next stream connection attempts: an HTTP status (503, 429...),
        "refuse" (close before any response), "stall" (200, then silence) or "keepalive-only"
        (200, a few keep-alives, then a clean close)."""
        self._connect_plan.extend(answers)

    def plan_search(self, *statuses: int) -> None:
        self._search_plan.extend(statuses)

    def _rules_of(self, post: _Post) -> list[dict]:
        return [{"id": r["id"], "tag": r["tag"]} if r.get("tag") else {"id": r["id"]}
                for r in self.rules.values() if matches(r["value"], post)]

    # --- stream -------------------------------------------------------------------------------

    def serve_stream(self, handler: "BaseHTTPRequestHandler", params: dict) -> None:
        answer = self._connect_plan.pop(0) if self._connect_plan else None
        self.connections.append({"answer": answer or 200, "params": params})
        if answer == "refuse":
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
            return
        if isinstance(answer, int):
            headers = {}
            if answer == 429:
                headers = {"x-rate-limit-limit": "50", "x-rate-limit-remaining": "0",
                           "x-rate-limit-reset": str(int(self.clock() + self.rate_limit_reset_s))}
                body = {"title": "ConnectionException", "detail": "This stream is currently at the maximum allowed "
                        "connection limit.", "connection_issue": "TooManyConnections", "type": "https://api.twitter"
                        ".com/2/problems/streaming-connection"}
            else:
                body = {"title": "Service Unavailable", "detail": "Service Unavailable", "status": answer,
                        "type": "about:blank"}
            handler.send_json(answer, body, headers)
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json; charset=utf-8")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        try:
            if answer == "stall":
                self._closing.wait(60)
            elif answer == "keepalive-only":
                for _ in range(self.faults.keepalive_run):
                    _chunk(handler, b"\r\n")
                    time.sleep(self.faults.keepalive_gap_s)
                _end(handler)
            else:
                self._publish(handler, params)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # the client went away
        handler.close_connection = True

    def _publish(self, handler, params: dict) -> None:
        f = self.faults
        with self._lock:
            start = self.cursor
            minutes = int(params.get("backfill_minutes", 0) or 0)
            if minutes and start > 0:
                since = self._created[min(start, len(self._created) - 1)] - 60 * minutes
                start = bisect.bisect_left(self._created, since)
        buffer: list[bytes] = []
        sent_ids: list[str] = []
        i = start
        while i < len(self.posts) and not self._closing.is_set():
            post = self.posts[i]
            rules = self._rules_of(post)
            line = _encode(post.line, rules) if rules else None
            roll = self._rng.random
            if line is not None and f.drop and roll() < f.drop and i > start:
                self.injected["drop"] += 1
                # half a line in a chunk that promises all of it, then the socket closes
                _flush(handler, buffer, sent_ids, self.delivered)
                handler.wfile.write(f"{len(line):x}\r\n".encode() + line[: len(line) // 2])
                handler.wfile.flush()
                with self._lock:
                    self.cursor = min(i + f.lost_on_drop, len(self.posts))
                handler.connection.shutdown(socket.SHUT_RDWR)
                return
            if f.keepalive_period and roll() < f.keepalive_period:
                _flush(handler, buffer, sent_ids, self.delivered)
                self.injected["keepalive_period"] += 1
                for _ in range(f.keepalive_run):
                    _chunk(handler, b"\r\n")
                    time.sleep(f.keepalive_gap_s)
            if f.malformed and roll() < f.malformed:
                self.injected["malformed"] += 1
                buffer.append(b'{"data": {"id": "oops", "text": \r\n' if roll() < 0.5 else b"<html>busy</html>\r\n")
            if line is not None:
                if f.truncated and roll() < f.truncated:
                    self.injected["truncated"] += 1
                    buffer.append(line[: len(line) // 3] + b"\r\n")
                if f.out_of_order and i + 1 < len(self.posts) and roll() < f.out_of_order:
                    nxt = self.posts[i + 1]
                    nxt_rules = self._rules_of(nxt)
                    if nxt_rules:
                        self.injected["out_of_order"] += 1
                        buffer.append(_encode(nxt.line, nxt_rules))
                        sent_ids.append(nxt.id)
                buffer.append(line)
                sent_ids.append(post.id)
                if f.duplicate and roll() < f.duplicate:
                    self.injected["duplicate"] += 1
                    buffer.append(line)
            i += 1
            with self._lock:
                self.cursor = max(self.cursor, i)
            if len(buffer) >= LINES_PER_CHUNK:
                _flush(handler, buffer, sent_ids, self.delivered)
        _flush(handler, buffer, sent_ids, self.delivered)
        self.exhausted.set()
        while not self._closing.is_set():  # nothing new: keep-alives until the client leaves
            _chunk(handler, b"\r\n")
            time.sleep(0.02)

    # --- rules --------------------------------------------------------------------------------

    def serve_rules(self, handler, method: str, params: dict, body: dict | None) -> None:
        sent = _now_iso()
        if method == "GET":
            data = list(self.rules.values())
            meta = {"sent": sent, "result_count": len(data)}
            handler.send_json(200, {"data": data, "meta": meta} if data else {"meta": meta})
            return
        dry_run = params.get("dry_run") == "true"
        if not isinstance(body, dict) or ("add" in body) == ("delete" in body):
            handler.send_json(400, {"title": "Invalid Request", "detail": "One or more parameters to your request "
                                    "was invalid.", "type": "https://api.twitter.com/2/problems/invalid-request",
                                    "errors": [{"message": "Request must contain exactly one of add or delete"}]})
            return
        if "add" in body:
            created, errors = [], []
            by_value = {r["value"]: r for r in self.rules.values()}
            for rule in body["add"]:
                value = rule.get("value", "")
                problem = valid_rule(value)
                if problem:
                    errors.append({"value": value, "details": [problem], "title": "UnprocessableEntity",
                                   "type": "https://api.twitter.com/2/problems/invalid-rules"})
                elif value in by_value:
                    errors.append({"value": value, "id": by_value[value]["id"], "title": "DuplicateRule",
                                   "type": "https://api.twitter.com/2/problems/duplicate-rules"})
                else:
                    self._next_rule_id += 1
                    new = {"id": str(self._next_rule_id), "value": value, **({"tag": rule["tag"]} if rule.get("tag")
                                                                           else {})}
                    created.append(new)
                    by_value[value] = new
            if not dry_run:
                self.rules.update((r["id"], r) for r in created)
            summary = {"created": len(created), "not_created": len(errors), "valid": len(created),
                       "invalid": sum(e["title"] != "DuplicateRule" for e in errors)}
            out = {"meta": {"sent": sent, "summary": summary}}
            if created:
                out["data"] = created
            if errors:
                out["errors"] = errors
            handler.send_json(201 if created else 200, out)
            return
        ids = (body["delete"] or {}).get("ids") or []
        found = [i for i in ids if i in self.rules]
        if not dry_run:
            for i in found:
                del self.rules[i]
        handler.send_json(200, {"meta": {"sent": sent, "summary": {"deleted": len(found),
                                                                    "not_deleted": len(ids) - len(found)}}})

    # --- recent search ------------------------------------------------------------------------

    def serve_search(self, handler, params: dict) -> None:
        self.search_requests.append(params)
        if self._search_plan:
            status = self._search_plan.pop(0)
            headers = {}
            if status == 429:
                headers = {**self._rate_headers(), "x-rate-limit-remaining": "0",
                           "x-rate-limit-reset": str(int(self.clock() + self.rate_limit_reset_s))}
            handler.send_json(status, {"title": "Too Many Requests" if status == 429 else "Service Unavailable",
                                       "status": status, "type": "about:blank"}, headers)
            return
        now = self.clock()
        if self._search_reset is None or now >= self._search_reset:
            self._search_reset, self._search_remaining = now + self.search_window_s, self.search_limit
        if self._search_remaining == 0:
            handler.send_json(429, {"title": "Too Many Requests", "detail": "Too Many Requests", "status": 429,
                                    "type": "about:blank"}, self._rate_headers())
            return
        self._search_remaining -= 1
        query = params.get("query", "")
        try:
            max_results = int(params.get("max_results", "10"))
        except ValueError:
            max_results = 0
        if not query or not 10 <= max_results <= 100:
            handler.send_json(400, {"title": "Invalid Request", "type": "https://api.twitter.com/2/problems/"
                                    "invalid-request", "errors": [{"message": "query is required and max_results "
                                                                   "must be between 10 and 100"}]})
            return
        since = int(params["since_id"]) if params.get("since_id") else -1
        unique = {p.id: p for p in self.posts if int(p.id) > since and matches(query, p)}  # a re-sent post once
        hits = sorted(unique.values(), key=lambda p: int(p.id), reverse=True)
        offset = int(params["next_token"].removeprefix("page-")) if params.get("next_token") else 0
        page = hits[offset: offset + max_results]
        meta = {"result_count": len(page)}
        if page:
            meta.update(newest_id=page[0].id, oldest_id=page[-1].id)
        if offset + max_results < len(hits):
            meta["next_token"] = f"page-{offset + max_results}"
        body: dict = {"meta": meta}
        if page:
            users = {u["id"]: u for p in page for u in (p.line.get("includes") or {}).get("users", ())}
            body["data"] = [p.line["data"] for p in page]
            body["includes"] = {"users": list(users.values())}
        handler.send_json(200, body, self._rate_headers())

    def _rate_headers(self) -> dict:
        reset = self._search_reset if self._search_reset is not None else self.clock() + self.search_window_s
        return {"x-rate-limit-limit": str(self.search_limit), "x-rate-limit-remaining": str(self._search_remaining),
                "x-rate-limit-reset": str(int(reset))}


def _encode(line: dict, rules: list[dict]) -> bytes:
    return json.dumps({**line, "matching_rules": rules}, ensure_ascii=False, separators=(",", ":")).encode() + b"\r\n"


def _chunk(handler, data: bytes) -> None:
    handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    handler.wfile.flush()


def _end(handler) -> None:
    handler.wfile.write(b"0\r\n\r\n")
    handler.wfile.flush()


def _flush(handler, buffer: list[bytes], sent_ids: list[str], delivered: set[str]) -> None:
    if buffer:
        _chunk(handler, b"".join(buffer))
        buffer.clear()
    delivered.update(sent_ids)
    sent_ids.clear()


def _now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="milliseconds")


def _handler_for(standin: XStandin):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet: tests read the recorded requests instead
            pass

        def send_json(self, status: int, body: dict, headers: dict | None = None) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)

        def _route(self, method: str) -> None:
            url = urlsplit(self.path)
            params = {k: v[-1] for k, v in parse_qs(url.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if self.headers.get("Authorization") != f"Bearer {standin.token}":
                self.send_json(401, {"title": "Unauthorized", "type": "about:blank", "status": 401,
                                     "detail": "Unauthorized"})
                return
            if url.path == "/2/tweets/search/stream" and method == "GET":
                standin.serve_stream(self, params)
            elif url.path == "/2/tweets/search/stream/rules":
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                standin.serve_rules(self, method, params, body)
            elif url.path == "/2/tweets/search/recent" and method == "GET":
                standin.serve_search(self, params)
            else:
                self.send_json(404, {"title": "Not Found Error", "type": "about:blank", "status": 404})

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

    return Handler
