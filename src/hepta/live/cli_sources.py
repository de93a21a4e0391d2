"""`hepta live ingest` and `hepta live synth`: posts in from a source, or a synthetic stream out."""

from __future__ import annotations

import argparse
import logging
import signal

from hepta.errors import HeptaError
from hepta.live.durations import parse_duration
from hepta.live.sources.registry import add_source_arguments, open_source


def add_source_commands(live_subparsers: argparse._SubParsersAction) -> None:
    """Adds `ingest` and `synth` to the `hepta live` parser group."""
    p = live_subparsers.add_parser("ingest", help="read posts from a file or X into a post store")
    add_source_arguments(p)
    p.add_argument("--db", required=True, metavar="PATH", help="post store file (created when missing)")
    p.add_argument("--retention", default=None, metavar="DURATION",
                   help="keep only posts younger than this, e.g. 90m, 24h, 7d (default: keep all)")
    p.add_argument("--quiet", action="store_true", help="no live display; only the summary line")
    p.set_defaults(func=cmd_ingest)

    p = live_subparsers.add_parser("synth", help="write a synthetic multi-topic post stream (English and Japanese)")
    p.add_argument("--out", required=True, metavar="PATH", help="JSONL file to write; ground truth goes to PATH.truth.json")
    p.add_argument("--posts", type=int, default=3000, metavar="N", help="posts before edits and duplicates (default 3000)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    p.add_argument("--minutes", type=float, default=360.0, help="time span of the stream (default 360)")
    p.add_argument("--bursts", type=int, default=None, help="burst events (default: one per 750 posts, 2 to 10)")
    p.set_defaults(func=cmd_synth)


# --- ingest ------------------------------------------------------------------------------------


def cmd_ingest(args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.live import Live
    from rich.logging import RichHandler

    from hepta.live.ingest import Ingest
    from hepta.live.store import Store

    retention = parse_duration(args.retention, "--retention") if args.retention else None
    source = open_source(args.source, args)
    console = Console(stderr=True)
    logging.basicConfig(level=logging.ERROR if args.quiet else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=console, show_time=False, show_path=False)], force=True)
    store = Store(args.db, retention=retention)
    try:
        if args.quiet:
            ingest = Ingest(store, source)
            stats = _run(ingest)
        else:
            with Live(console=console, refresh_per_second=4, transient=False) as live:
                ingest = Ingest(store, source, on_progress=lambda s: live.update(_status_line(args.source, s)))
                stats = _run(ingest)
    finally:
        store.close()
    print(_summary(stats, args.db))


def _run(ingest):
    """Run the ingest; Ctrl-C stops it gracefully (what arrived is written, then the summary), a second one at once.

    The first Ctrl-C only sets the stop flag: a KeyboardInterrupt raised at an arbitrary point could
    land inside the hand-over queue's lock and leave it held.
    """
    def interrupt(signum, frame):
        if ingest.stopping:
            raise KeyboardInterrupt
        ingest.stop()

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        return ingest.run()
    finally:
        signal.signal(signal.SIGINT, previous)


def _status_line(name: str, stats) -> str:
    reconnects = stats.source.reconnects
    extra = f"  reconnects {reconnects}" if reconnects else ""
    return (f"[bold]ingest[/] {name}  posts {stats.received:,}  {stats.posts_per_s:,.0f}/s  "
            f"written {stats.written:,}  already stored {stats.duplicates:,}  malformed {stats.errors:,}{extra}")


def _summary(stats, db: str) -> str:
    return (f"read {stats.received:,} posts ({stats.duplicates:,} already stored or older edits, "
            f"{stats.errors:,} malformed skipped) and wrote {stats.written:,} into {db} in "
            f"{stats.elapsed_s:.1f} s ({stats.posts_per_s:,.0f} posts/s; longest wait before a write {stats.max_wait_s:.2f} s)")


# --- synth -------------------------------------------------------------------------------------


def cmd_synth(args: argparse.Namespace) -> None:
    from hepta.live.synth import SynthConfig, write_stream

    config = SynthConfig(posts=args.posts, seed=args.seed, minutes=args.minutes, bursts=args.bursts)
    truth_path, truth = write_stream(args.out, config)
    languages = ", ".join(f"{n:,} {lang}" for lang, n in truth["languages"].items())
    bursts = ", ".join(f"{b['term']} ({b['lang']}, {b['posts']} posts)" for b in truth["bursts"])
    num_edits = len(truth["edits"])
    print(f"wrote {truth['lines']:,} lines to {args.out}: {truth['distinct_ids'] - num_edits:,} posts, "
          f"{num_edits} edits, {len(truth['duplicates'])} re-sent duplicates ({languages} lines)")
    print(f"bursts: {bursts}; ground truth in {truth_path}")
