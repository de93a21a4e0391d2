"""The API process's handle on an engine core (hepta.infer.core): submit, check, cancel, embed.

`EngineClient.spawn` starts the core in a process of its own on a model folder;
`EngineClient.in_thread` serves a model already in memory from a thread of this process over
the same pipe (the demo, and tests that control loading). Either way the API side is the same.

How no event is lost between the engine and a stream:
  - one reader thread reads the connection and hands each batch, in order, to the event loop
    with one `call_soon_threadsafe`; the loop routes each event by request id to its request's
    `sink` (the route's buffer), so events of one request keep the engine's order;
  - a request is registered (by id) before its submit message is written, so no event can
    arrive for a request the client does not know; a sink buffers events nobody awaits yet;
  - a request is dropped from the registry only when the final event of its last choice has
    been delivered (the core guarantees one per choice: finished, cancelled, failed or stopped);
  - if the core dies, every open choice gets a final error event at once, and every waiting
    submit or embedding fails with `EngineDead`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import signal
import threading
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any, Callable

from hepta.errors import HeptaError
from hepta.infer.core import EngineCore, run_core_process, wire_request
from hepta.infer.engine import EngineConfig, EngineLimits, Observer, QueueFull
from hepta.infer.request import Event, Request
from hepta.modality.audio_span import AudioVocab
from hepta.modality.image_span import ImageVocab

log = logging.getLogger("hepta.engine")
STOP_TIMEOUT_S = 30


class EngineDead(HeptaError):
    """The engine core is gone (it died, or the server is stopping)."""


@dataclass
class _Open:
    request: Request
    finished: set[int] = field(default_factory=set)  # choices whose final event was delivered
    accepted: bool = False  # the engine queued it
    started: bool = False  # an event arrived: the request holds slots


class _ProcessHandle:
    def __init__(self, process: multiprocessing.Process):
        self.process = process

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def is_alive(self) -> bool:
        return self.process.is_alive()

    def join(self, timeout: float) -> None:
        self.process.join(timeout)

    def kill(self) -> None:
        self.process.kill()

    def exit_description(self) -> str:
        code = self.process.exitcode
        if code is None:
            return "it closed its connection"
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit status {code}"


class _ThreadHandle:
    pid = None

    def __init__(self, thread: threading.Thread):
        self.thread = thread

    def is_alive(self) -> bool:
        return self.thread.is_alive()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)

    def kill(self) -> None:  # a thread cannot be killed; it ends when its connection closes
        pass

    def exit_description(self) -> str:
        return "its thread ended"


class EngineClient:
    """Talks to one engine core. Methods other than `spawn`, `in_thread` and `stop` run on `loop`,
    and so do the requests' sinks; `on_death(client, reason)` runs there too, when the core dies unasked."""

    def __init__(self, conn, handle, limits: EngineLimits, loop: asyncio.AbstractEventLoop,
                 observer: Observer | None = None, on_death: Callable[[EngineClient, str], None] | None = None):
        self.conn, self.handle, self.limits, self.loop = conn, handle, limits, loop
        self.observer = observer or Observer()
        self.on_death = on_death
        self.kv_usage = 0.0
        self.dead: str | None = None  # why the core is gone
        self._open: dict[int, _Open] = {}
        self._acks: dict[int, asyncio.Future] = {}
        self._jobs: dict[int, asyncio.Future] = {}
        self._job_ids = itertools.count()
        self._send_lock = threading.Lock()
        self._stopping = False
        self._reader = threading.Thread(target=self._read_loop, name="hepta-engine-reader", daemon=True)
        self._reader.start()

    # --- starting --------------------------------------------------------------------------

    @classmethod
    def spawn(cls, model_path: str, config: EngineConfig, loop: asyncio.AbstractEventLoop, allow_pickle: bool = False,
              device: str = "cpu", dtype: str | None = None, **kwargs) -> "EngineClient":
        """Starts an engine process on the folder `model_path` and blocks until its model is loaded, on `device`
        ("cpu", "cuda:0") in `dtype` ("bfloat16"; None keeps the folder's)."""
        # spawn, not fork: a forked child would inherit this process's threads' locks and torch's pools
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        process = context.Process(target=run_core_process, args=(theirs, model_path, config, allow_pickle, device, dtype),
                                  name="hepta-engine", daemon=True)
        process.start()
        theirs.close()  # only the child holds its end now, so its death reads as end-of-file here
        handle = _ProcessHandle(process)
        wait([ours, process.sentinel])
        try:
            message = ours.recv()
        except (EOFError, OSError):
            ours.close()
            process.join(5)
            raise HeptaError(f"the engine process ended while loading the model ({handle.exit_description()})") \
                from None
        if message[0] == "failed":
            ours.close()
            process.join(5)
            raise HeptaError(message[1])
        return cls(ours, handle, message[1], loop, **kwargs)

    @classmethod
    def in_thread(cls, model, tokenizer, config: EngineConfig, loop: asyncio.AbstractEventLoop,
                  images: ImageVocab | None = None, audio: AudioVocab | None = None, vision=None,
                  **kwargs) -> "EngineClient":
        """Serves a model already in memory from a thread of this process, over the same protocol;
        `images`, `audio` are the model's image and audio blocks when it writes them, `vision` its vision
        encoder when it reads images through one."""
        ours, theirs = multiprocessing.Pipe()
        core = EngineCore(theirs, model, tokenizer, config, images=images, audio=audio, vision=vision)
        thread = threading.Thread(target=core.run, name="hepta-engine-core", daemon=True)
        thread.start()
        message = ours.recv()
        return cls(ours, _ThreadHandle(thread), message[1], loop, **kwargs)

    # --- what the routes use ----------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The engine process's id (None when the core runs in a thread)."""
        return self.handle.pid

    @property
    def max_len(self) -> int:
        return self.limits.max_len

    @property
    def num_slots(self) -> int:
        return self.limits.num_slots

    @property
    def vocab_size(self) -> int:
        return self.limits.vocab_size

    @property
    def end_ids(self) -> frozenset[int]:
        return self.limits.end_ids

    @property
    def num_requests_running(self) -> int:
        return sum(1 for entry in list(self._open.values()) if entry.started)

    @property
    def num_waiting(self) -> int:
        """Requests in the engine's queue (accepted, no token yet); one still on its way there is not counted."""
        return sum(1 for entry in list(self._open.values()) if entry.accepted and not entry.started)

    def check(self, prompt_tokens: int, max_tokens: int, n: int = 1) -> None:
        self.limits.check(prompt_tokens, max_tokens, n)

    async def submit(self, request: Request) -> Request:
        """Queues `request` in the engine; its events then reach `request.sink` on this loop.
        Raises the engine's errors: QueueFull, the checks' errors, EngineDead."""
        self.limits.check_request(request)
        if self.dead is not None:
            raise EngineDead(self.dead)
        rid = request.id
        self._open[rid] = _Open(request)  # before the message: its first event may come right after
        ack = self._acks[rid] = self.loop.create_future()
        try:
            self._send(("submit", rid, wire_request(request)))
        except EngineDead:
            self._open.pop(rid, None)
            self._acks.pop(rid, None)
            raise
        try:
            await ack
        except asyncio.CancelledError:  # the caller went away while the engine took the request
            self.cancel(request)
            raise
        return request

    def cancel(self, request: Request) -> None:
        """Stop generating `request`; the engine frees its slots at the next token boundary."""
        request.cancel()
        if request.id in self._open and self.dead is None:
            try:
                self._send(("cancel", request.id))
            except EngineDead:
                pass  # the reader fails the request

    async def embed(self, inputs: list[list[int]], dimensions: int | None):
        """[B, D] float32 array of pooled embeddings, computed between two decoding steps."""
        if self.dead is not None:
            raise EngineDead(self.dead)
        job = next(self._job_ids)
        future = self._jobs[job] = self.loop.create_future()
        try:
            self._send(("embed", job, inputs, dimensions))
        except EngineDead:
            self._jobs.pop(job, None)
            raise
        return await future

    def stop(self) -> None:
        """Stops the core (open requests end "cancelled") and waits for it; kills a process that hangs."""
        self._stopping = True
        try:
            self._send(("stop",))
        except EngineDead:
            pass
        # the reader ends when the core closes its end, after joining the process: the only thread
        # that waits on it (two waiters race for the exit status, and one sees a live process)
        self._reader.join(STOP_TIMEOUT_S)
        if self._reader.is_alive():
            log.error("the engine did not stop within %d s; killing it", STOP_TIMEOUT_S)
            self.handle.kill()
            self._reader.join(10)

    # --- the connection ---------------------------------------------------------------------

    def _send(self, message: tuple) -> None:
        try:
            with self._send_lock:
                self.conn.send(message)
        except (BrokenPipeError, EOFError, OSError) as e:
            raise EngineDead(self.dead or "the engine is gone") from e

    def _read_loop(self) -> None:
        """The only reader of the connection (reader thread)."""
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                break
            _, events, replies, kv_usage, ttfts, itls, tokens = message
            self.kv_usage = kv_usage
            for seconds in ttfts:
                self.observer.first_token(seconds)
            for seconds in itls:
                self.observer.inter_token(seconds)
            if tokens:
                self.observer.tokens_generated(tokens)
            if events or replies:
                self._on_loop(self._deliver, events, replies)
        self.conn.close()
        self.handle.join(5)  # the exit status, for the reason
        reason = "the engine stopped" if self._stopping else \
            f"the engine process died ({self.handle.exit_description()})"
        self._on_loop(self._lost, reason)

    def _on_loop(self, fn, *args) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: the server has stopped
            pass

    def _deliver(self, events: list[tuple[int, Event]], replies: list[tuple]) -> None:
        for reply in replies:  # before the events: a request's acceptance precedes its first event anyway
            kind, key = reply[0], reply[1]
            if kind == "accepted":  # its first events (even its last) may have come in an earlier batch
                if key in self._open:
                    self._open[key].accepted = True
                self._resolve(self._acks.pop(key), None)
            elif kind == "rejected":
                self._open.pop(key, None)
                error = QueueFull(reply[3]) if reply[2] else HeptaError(reply[3])
                self._resolve(self._acks.pop(key), error=error)
            elif kind == "result":
                error, value = reply[2], reply[3]
                self._resolve(self._jobs.pop(key), value, HeptaError(f"embedding failed: {error}") if error else None)
        for rid, event in events:
            entry = self._open.get(rid)  # registered before submitting, dropped after its last final event
            if entry is None:
                log.error("an event came for request %s, which is not open; dropped", rid)
                continue
            entry.started = True
            if event.finish_reason:
                entry.finished.add(event.index)
                if len(entry.finished) == entry.request.n:
                    del self._open[rid]
            try:
                entry.request.sink(event)
            except Exception:  # one route's failure must not cost the other requests of this batch their events
                log.exception("delivering an event of request %s failed", rid)

    @staticmethod
    def _resolve(future: asyncio.Future, value: Any = None, error: Exception | None = None) -> None:
        if future.done():  # its awaiting caller was cancelled
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    def _lost(self, reason: str) -> None:
        """The core is gone: every open choice ends with an error, every pending call fails."""
        self.dead = reason
        opened, self._open = self._open, {}
        for entry in opened.values():
            for index in range(entry.request.n):
                if index not in entry.finished:
                    entry.request.sink(Event(index, "", [], finish_reason="error", error=reason))
        pending = list(self._acks.values()) + list(self._jobs.values())
        self._acks.clear()
        self._jobs.clear()
        for future in pending:
            self._resolve(future, error=EngineDead(reason))
        if not self._stopping:
            log.error("%s; %d open requests failed", reason, len(opened))
            if self.on_death is not None:
                self.on_death(self, reason)
