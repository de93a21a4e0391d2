"""Replay of a JSONL file of X v2 post JSON (one stream line, or one search page, per line).

`speed` paces the posts by their `created_at`: 1 replays at the recorded pace, 60 sixty times
faster, 0 as fast as the file reads (posts then come in chunks, for bulk loading). Blank lines
(recorded keep-alives) are ignored; malformed lines are logged and skipped.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from hepta.errors import HeptaError
from hepta.live.post import MalformedPost, Post, posts_from_response
from hepta.live.sources.base import SourceStats
from hepta.live.sources.registry import SourceKind, SourceOption

FAST_CHUNK = 512  # posts per batch when replaying as fast as possible

log = logging.getLogger(__name__)


class JsonlReplay:
    def __init__(self, path: str | Path, speed: float = 0.0, *, sleep: Callable[[float], object] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self.path = Path(path)
        if not self.path.is_file():
            raise HeptaError(f"{self.path} is not a file; pass a JSONL file of X posts (hepta live synth writes one)")
        if speed < 0:
            raise HeptaError(f"--speed {speed} is negative; use 0 for as fast as possible, 1 for the recorded pace")
        self.speed = speed
        self._sleep, self._clock = sleep, clock
        self._stopping = threading.Event()
        self.stats = SourceStats()

    def stop(self) -> None:
        self._stopping.set()

    def __iter__(self) -> Iterator[list[Post]]:
        pending: list[Post] = []
        start_wall = start_post = None
        with self.path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if self._stopping.is_set():
                    break
                if not line.strip():
                    self.stats.keepalives += 1
                    continue
                self.stats.lines += 1
                try:
                    posts = posts_from_response(json.loads(line), on_malformed=self._skip, line=line)
                except ValueError as e:  # JSONDecodeError and MalformedPost alike
                    self.stats.malformed += 1
                    log.warning("%s:%d: skipped a malformed line (%s)", self.path, number, e)
                    continue
                if not posts:
                    continue
                self.stats.posts += len(posts)
                if not self.speed:
                    pending.extend(posts)
                    if len(pending) >= FAST_CHUNK:
                        yield pending
                        pending = []
                    continue
                posted = min(p.created_at for p in posts).timestamp()
                if start_wall is None:
                    start_wall, start_post = self._clock(), posted
                ahead = (posted - start_post) / self.speed - (self._clock() - start_wall)
                if ahead > 0:  # a post out of order (earlier than the pace) goes at once
                    self._sleep(ahead)
                yield posts
        if pending:
            yield pending

    def _skip(self, error: MalformedPost) -> None:
        self.stats.malformed += 1
        log.warning("%s: skipped a malformed post (%s)", self.path, error)


def open_replay(path: str, options: argparse.Namespace) -> JsonlReplay:
    return JsonlReplay(path, speed=options.speed)


SPEED = SourceOption("--speed", "jsonl: 1 = the recorded pace, 60 = sixty times faster, 0 = as fast as possible "
                     "(default)", type=float, default=0.0, metavar="X")
SOURCE = SourceKind("jsonl:PATH", "replay a file", open_replay, (SPEED,))
