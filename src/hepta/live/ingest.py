"""Posts from any source into the store, in batches, so each is searchable within a second.

The source runs in a thread of its own and hands its batches over a bounded queue (X's
advice for stream clients: read fast, store elsewhere, never make the connection wait on the
disk). The writer upserts when `batch_size` posts are waiting or the oldest has waited
`max_delay_s`, whichever comes first: one transaction per batch, never one per post.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from hepta.live.post import Post
from hepta.live.sources.base import PostSource, SourceStats

_END = object()


STOP_GRACE_S = 2.0  # after stop(), how long the source may take to hand over what is on the wire


@dataclass
class IngestStats:
    received: int = 0  # posts the source delivered, duplicates included
    written: int = 0  # posts the store wrote: new ones and newer edits of stored ones
    batches: int = 0
    elapsed_s: float = 0.0
    max_wait_s: float = 0.0  # longest a post waited between arriving and being written
    source: SourceStats = field(default_factory=SourceStats)  # the source's counts (malformed, reconnects...)
    _recent: deque = field(default_factory=lambda: deque(maxlen=64), repr=False)

    @property
    def duplicates(self) -> int:
        """Posts the store already had (re-sent, backfilled) or had a newer edit of."""
        return self.received - self.written

    @property
    def errors(self) -> int:
        return self.source.malformed

    @property
    def posts_per_s(self) -> float:
        """Over the last few seconds when running, over the whole run when done."""
        if len(self._recent) >= 2 and self._recent[-1][0] > self._recent[0][0]:
            (t0, n0), (t1, n1) = self._recent[0], self._recent[-1]
            return (n1 - n0) / (t1 - t0)
        return self.received / self.elapsed_s if self.elapsed_s > 0 else 0.0


class Ingest:
    def __init__(self, store, source: PostSource, *, batch_size: int = 500, max_delay_s: float = 0.2,
                 on_progress: Callable[[IngestStats], None] | None = None, progress_every_s: float = 0.25,
                 clock: Callable[[], float] = time.monotonic):
        assert batch_size >= 1 and max_delay_s > 0
        self.store, self.source = store, source
        self.batch_size, self.max_delay_s = batch_size, max_delay_s
        self.on_progress, self.progress_every_s = on_progress, progress_every_s
        self.clock = clock
        self.stats = IngestStats(source=source.stats)
        self._queue: queue.Queue = queue.Queue(maxsize=256)
        self._stop = threading.Event()
        self._stop_time = 0.0

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Finish: write what has arrived, and ask the source to stop. Safe to call from a signal handler."""
        if not self._stop.is_set():
            self._stop_time = self.clock()
        self._stop.set()
        self.source.stop()

    def run(self) -> IngestStats:
        reader = threading.Thread(target=self._read, name="hepta-live-source", daemon=True)
        started = self.clock()
        reader.start()
        pending: list[Post] = []
        first_arrival = 0.0
        next_progress = started
        try:
            while True:
                now = self.clock()
                deadline = first_arrival + self.max_delay_s if pending else now + self.progress_every_s
                try:
                    item = self._queue.get(timeout=max(0.0, min(deadline, next_progress) - now))
                except queue.Empty:
                    item = None
                now = self.clock()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                if item:
                    if not pending:
                        first_arrival = now
                    pending.extend(item)
                    self.stats.received += len(item)
                if pending and (len(pending) >= self.batch_size or now - first_arrival >= self.max_delay_s):
                    self._write(pending, first_arrival)
                    pending = []
                if now >= next_progress:
                    self._progress(now, started)
                    next_progress = now + self.progress_every_s
                if self._stop.is_set() and self._queue.empty():
                    # the source finishes what is on the wire; a stream that stays silent is not waited for
                    if not reader.is_alive() or now - self._stop_time >= STOP_GRACE_S:
                        break
        except KeyboardInterrupt:  # Ctrl-C: keep what has already arrived, then let the caller report
            self.stop()
            pending.extend(self._drain())
            raise
        finally:
            if pending:
                self._write(pending, first_arrival)
            self.stats._recent.clear()  # the run is over: posts_per_s is now the whole run's rate
            self.stats.elapsed_s = self.clock() - started
            if self.on_progress is not None:
                self.on_progress(self.stats)
        return self.stats

    def _drain(self) -> list[Post]:
        posts: list[Post] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return posts
            if isinstance(item, list):
                posts.extend(item)
                self.stats.received += len(item)

    def _read(self) -> None:
        # the source finishes what is on the wire itself once stop() has reached it
        try:
            for batch in self.source:
                self._queue.put(batch)
        except BaseException as e:  # handed to the writer, which raises it in the caller's thread
            self._queue.put(e)
            return
        self._queue.put(_END)

    def _write(self, posts: list[Post], first_arrival: float) -> None:
        self.stats.written += self.store.upsert(posts)
        self.stats.batches += 1
        self.stats.max_wait_s = max(self.stats.max_wait_s, self.clock() - first_arrival)

    def _progress(self, now: float, started: float) -> None:
        self.stats.elapsed_s = now - started
        self.stats._recent.append((now, self.stats.received))
        while len(self.stats._recent) > 2 and now - self.stats._recent[0][0] > 5.0:
            self.stats._recent.popleft()
        if self.on_progress is not None:
            self.on_progress(self.stats)
