"""What ingest reads posts from: the `PostSource` protocol every source fits, and its `SourceStats`."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from hepta.live.post import Post


@dataclass
class SourceStats:
    """What a source has read so far; ingest shows it live."""

    lines: int = 0  # stream lines / file lines / search pages carrying data
    posts: int = 0
    keepalives: int = 0
    malformed: int = 0  # lines or posts skipped because they were not valid post JSON
    connections: int = 0
    reconnects: int = 0


@runtime_checkable
class PostSource(Protocol):
    """An iterator of post batches (one stream line, one search page, one chunk of a file).

    `stats` counts what it read and skipped. `stop()` comes from another thread (Ctrl-C, a server
    shutting down); the source then ends after handing over what is already on the wire.
    """

    stats: SourceStats

    def __iter__(self) -> Iterator[list[Post]]: ...

    def stop(self) -> None: ...


class IterableSource:
    """Any iterable of post batches as a `PostSource`: stop() ends it after the batch being handed over."""

    def __init__(self, batches: Iterable[list[Post]]):
        self.batches = batches
        self.stats = SourceStats()
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def __iter__(self) -> Iterator[list[Post]]:
        for batch in self.batches:
            self.stats.posts += len(batch)
            yield batch
            if self._stopping.is_set():
                return
