"""`hepta live`: ingest and synth (cli_sources.py), and trends, opinion, accounts, search over a post store.

Every analysis command reads an existing store (--db), prints a rich table, or one JSON object
with --json. Handlers import their modules when they run, so `hepta live` never loads torch.
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import datetime, timedelta, timezone

from hepta.errors import HeptaError
from hepta.live.cli_sources import add_source_commands
from hepta.live.durations import parse_duration

SEARCH_FLAGS = {"from_date": "--from", "to_date": "--to", "max_search_results": "--max",
                "included_x_handles": "--handles", "excluded_x_handles": "--exclude-handles",
                "post_favorite_count": "--min-likes", "post_view_count": "--min-views"}


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Adds this layer's subcommands to the `hepta` parser."""
    live = subparsers.add_parser("live", help="posts: ingest, trends, opinion, accounts, search")
    sub = live.add_subparsers(dest="live_command", required=True, metavar="COMMAND")
    add_source_commands(sub)

    p = _analysis(sub, "trends", "terms trending in the latest window", cmd_trends)
    p.add_argument("--window", default="15m", help="window length, e.g. 15m, 1h (default 15m)")
    p.add_argument("--lang", help="only posts of this language code, e.g. ja, en")
    p.add_argument("--at", metavar="TIME", help="end the window here (ISO time; default: the newest stored post)")
    p.add_argument("--limit", type=int, default=20, help="at most this many trends (default 20)")

    p = _analysis(sub, "opinion", "what posts about a topic feel: shares positive/negative/neutral", cmd_opinion)
    p.add_argument("topic", help="words or a hashtag to search for")
    p.add_argument("--window", help="only the latest window, e.g. 1h, 7d (default: every stored post)")
    p.add_argument("--lang", help="only posts of this language code")
    p.add_argument("--at", metavar="TIME", help="end the window here (ISO time; default: the newest stored post)")

    p = _analysis(sub, "accounts", "timeline, posting rate, engagement and topics of handles", cmd_accounts)
    p.add_argument("handles", nargs="+", metavar="HANDLE", help="X handles, with or without @")
    p.add_argument("--window", help="only the latest window, e.g. 24h (default: every stored post)")
    p.add_argument("--timeline", type=int, default=5, metavar="N", help="newest posts to show (default 5)")

    p = _analysis(sub, "search", "posts for a query, ranked, with citation URLs", cmd_search)
    p.add_argument("query", help="words to search for (Japanese works too)")
    p.add_argument("--handles", help="only these handles, comma-separated (at most 10)")
    p.add_argument("--exclude-handles", help="not these handles, comma-separated (at most 10)")
    p.add_argument("--from", dest="from_date", metavar="DATE", help="first day, YYYY-MM-DD (UTC)")
    p.add_argument("--to", dest="to_date", metavar="DATE", help="last day, YYYY-MM-DD (UTC), included")
    p.add_argument("--max", type=int, default=15, metavar="N", help="results, 1 to 50 (default 15)")
    p.add_argument("--min-likes", type=int, metavar="N", help="only posts with at least N likes")
    p.add_argument("--min-views", type=int, metavar="N", help="only posts with at least N views")


def _analysis(sub: argparse._SubParsersAction, name: str, help: str, func) -> argparse.ArgumentParser:
    """A command that reads a store (--db) and can print JSON (--json)."""
    p = sub.add_parser(name, help=help)
    p.add_argument("--db", required=True, metavar="PATH", help="post store written by `hepta live ingest`")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=func)
    return p


def _window(text: str | None) -> timedelta | None:
    if text is None:
        return None
    window = parse_duration(text, "--window")
    if window <= timedelta(0):
        raise HeptaError(f"--window {text!r} must be longer than zero")
    return window


def _time(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise HeptaError(f"--at {text!r} is not an ISO time; write for example 2026-01-15T12:00:00Z") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _print_json(obj) -> None:
    print(json.dumps(obj, ensure_ascii=False))


def _analyse(args: argparse.Namespace, compute, to_json=None):
    """compute(store) on the --db store; with --json prints it and returns None, else returns it for a table."""
    from dataclasses import asdict

    from hepta.live.store import Store

    with Store(args.db, create=False) as store:
        report = compute(store)
    if args.json:
        _print_json(to_json(report) if to_json else asdict(report))
        return None
    return report


def _console():
    from rich.console import Console

    console = Console()
    # piped output gets 80 columns by default, too narrow for a post and its URL side by side
    return console if console.is_terminal else Console(width=150)


def _short(text: str, width: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"


def _when(iso: str | None) -> str:
    return "-" if iso is None else iso.replace("T", " ")[:16]


# --- trends ------------------------------------------------------------------------------------


def cmd_trends(args: argparse.Namespace) -> None:
    from rich.table import Table

    from hepta.live.post import URL_PREFIX
    from hepta.live.trends import trends

    window, now = _window(args.window), _time(args.at)
    report = _analyse(args, lambda store: trends(store, window, lang=args.lang, now=now, limit=args.limit))
    if report is None:
        return
    console = _console()
    scope = f" ({args.lang})" if args.lang else ""
    console.print(f"trends{scope} in {_when(report.start)} - {_when(report.end)} UTC: {report.num_posts:,} posts, "
                  f"baseline over {report.baseline_s / 3600:.2f} h before")
    if not report.trends:
        why = "not enough history yet to know what is usual" if not report.baseline_s else "nothing stands out"
        console.print(f"no trends: {why}")
        return
    table = Table()
    for name in ("term", "posts", "expected", "score", "authors"):
        table.add_column(name, justify="left" if name == "term" else "right")
    table.add_column("top post", overflow="fold")
    for t in report.trends:
        top = URL_PREFIX + t.example_ids[0] if t.example_ids else ""
        table.add_row(t.term, str(t.count), f"{t.expected:.1f}", f"{t.score:.1f}", str(t.num_authors), top)
    console.print(table)


# --- opinion -----------------------------------------------------------------------------------


def cmd_opinion(args: argparse.Namespace) -> None:
    from rich.table import Table

    from hepta.live.opinion import LABELS, opinion

    window, now = _window(args.window), _time(args.at)
    report = _analyse(args, lambda store: opinion(store, args.topic, window=window, now=now, lang=args.lang))
    if report is None:
        return
    console = _console()
    since = f"{_when(report.start)} - " if report.start else "up to "
    console.print(f"opinion on {args.topic!r}: {report.num_posts:,} posts, {since}{_when(report.end)} UTC, "
                  f"mean score {report.mean_score:+.2f}")
    if not report.num_posts:
        return
    table = Table()
    for name in ("sentiment", "posts", "share", "example (most engaging)"):
        table.add_column(name, justify="right" if name in ("posts", "share") else "left")
    for label in LABELS:
        example = report.examples[label][0] if report.examples[label] else None
        text = f"@{example.post.username}: {_short(example.post.text, 100)}" if example else ""
        table.add_row(label, str(report.counts[label]), f"{report.shares[label]:.0%}", text)
    console.print(table)


# --- accounts ----------------------------------------------------------------------------------


def cmd_accounts(args: argparse.Namespace) -> None:
    from dataclasses import asdict

    from rich.table import Table

    from hepta.live.accounts import accounts
    from hepta.live.store import normalize_handle

    window = _window(args.window)
    if args.timeline < 0:
        raise HeptaError(f"--timeline {args.timeline} must be 0 or more")
    handles = [h for h in args.handles if normalize_handle(h)]
    if not handles:
        raise HeptaError("give at least one handle, such as nasa or @nasa")
    reports = _analyse(args, lambda store: accounts(store, handles, window=window, timeline=args.timeline),
                       to_json=lambda reports: {"accounts": [asdict(r) for r in reports]})
    if reports is None:
        return
    console = _console()
    summary = Table()
    for name in ("handle", "posts", "per day", "last 24 h", "likes/post", "engagement rate", "top topics"):
        summary.add_column(name, justify="left" if name in ("handle", "top topics") else "right")
    for r in reports:
        likes = r.engagement.likes / r.num_posts if r.num_posts else 0.0
        topics = ", ".join(term for term, _ in r.top_topics[:5])
        summary.add_row(f"@{r.username or r.handle}", str(r.num_posts), f"{r.posts_per_day:.1f}",
                        str(r.posts_last_24h), f"{likes:.1f}", f"{r.engagement.rate:.2%}", topics)
    console.print(summary)
    for r in reports:
        if not r.num_posts:
            console.print(f"@{r.handle}: no posts in the store")
            continue
        if not r.timeline:
            continue
        timeline = Table(title=f"@{r.username} newest posts", title_justify="left")
        timeline.add_column("time (UTC)", no_wrap=True)
        timeline.add_column("likes", justify="right")
        timeline.add_column("text")
        timeline.add_column("url", overflow="fold")
        for post in r.timeline:
            timeline.add_row(_when(post.created_at), str(post.like_count), _short(post.text, 100), post.url)
        console.print(timeline)


# --- search ------------------------------------------------------------------------------------


def _handle_list(text: str | None) -> list[str] | None:
    return None if text is None else [h.strip() for h in text.split(",") if h.strip()]


def cmd_search(args: argparse.Namespace) -> None:
    from rich.table import Table

    from hepta.live.search import SearchParameterError, result_dict, search

    source: dict = {"type": "x"}
    for key, value in (("included_x_handles", _handle_list(args.handles)),
                       ("excluded_x_handles", _handle_list(args.exclude_handles)),
                       ("post_favorite_count", args.min_likes), ("post_view_count", args.min_views)):
        if value is not None:
            source[key] = value
    params = {"mode": "on", "sources": [source], "max_search_results": args.max}
    if args.from_date:
        params["from_date"] = args.from_date
    if args.to_date:
        params["to_date"] = args.to_date
    try:
        result = _analyse(args, lambda store: search(store, args.query, params), to_json=result_dict)
    except SearchParameterError as e:  # name the flag, not the API field
        message = re.sub(r"(search_parameters\.|sources\[\]\.)(\w+)",
                         lambda m: SEARCH_FLAGS.get(m.group(2), m.group(0)), str(e))
        raise HeptaError(message) from None
    if result is None:
        return
    console = _console()
    console.print(f"{len(result.posts)} posts for {args.query!r}")
    if not result.posts:
        return
    table = Table()
    for name in ("#", "time (UTC)", "handle", "likes", "views", "text"):
        table.add_column(name, justify="right" if name in ("#", "likes", "views") else "left",
                         no_wrap=name != "text")
    table.add_column("url", overflow="fold")
    for i, post in enumerate(result.posts, 1):
        table.add_row(str(i), _when(post.created_at), f"@{post.username}", str(post.like_count),
                      str(post.impression_count), _short(post.text, 100), post.url)
    console.print(table)
