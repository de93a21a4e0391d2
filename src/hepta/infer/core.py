"""The engine core: an `Engine` served over a connection, normally in a process of its own.

Why a process: the server's event loop (parsing JSON, writing SSE chunks for many streams) and
the decoding loop then never take Python's interpreter lock from each other; a step of 16
sequences costs the same through HTTP as in a bare `Engine`. This is vLLM's split
(EngineCoreProc and its MPClient), made small:

  - the core process loads the model folder itself (the API process passes the path and the
    EngineConfig, never a model), runs an `Engine`, and serves it with three threads: the
    engine's loop, an input thread that reads requests from the connection, and an output
    thread that sends a decode step's events together in one message (final events and replies
    at once), so pickling and pipe writes overlap with the next forward;
  - the API process holds an `EngineClient` (hepta.infer.client) with the engine's submit /
    check / cancel surface.

Transport: a `multiprocessing` Pipe, not ZeroMQ. pyzmq is not a dependency; a pipe between
exactly two processes is all this needs; and end-of-file on it tells each side at once that
the other is gone: the client sees the core die (SIGKILL, out of memory) and fails the open
requests, and the core stops when the server dies without saying goodbye.

Messages are pickled tuples. API -> core:
    ("submit", rid, fields)          fields: what `wire_request` makes of a Request
    ("cancel", rid)
    ("embed", job, inputs, dims)     pooled embeddings, run between two decoding steps
    ("stop",)
core -> API:
    ("ready", EngineLimits) | ("failed", message)                      once, at start
    ("out", events, replies, kv_usage, ttfts, itls, tokens)            batches, in order
where events are (rid, Event) in the order the engine emitted them and replies are
("accepted", rid) | ("rejected", rid, queue_full, message) | ("result", job, error, value).
Every accepted request gets exactly one final event per choice (the Engine's promise), so the
client can drop a request once its last final event is delivered, and not before.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from hepta.infer.constrain import ConstraintSpec, llg_tokenizer
from hepta.infer.embeddings import pooled_embeddings
from hepta.infer.engine import Engine, EngineConfig, Observer, QueueFull
from hepta.infer.request import Event, Request
from hepta.modality.audio_span import AudioVocab
from hepta.modality.image_span import ImageVocab

log = logging.getLogger("hepta.engine")
IDLE_STATS_S = 0.05  # how often an idle output thread looks whether the KV usage changed


def wire_request(request: Request) -> dict[str, Any]:
    """The picklable fields of `request` (its grammar as text: a compiled matcher stays in its process)."""
    constraint = request.constraint
    return dict(prompt_ids=request.prompt_ids, max_tokens=request.max_tokens, sampling=request.sampling, n=request.n,
                stop=request.stop, logprobs=request.logprobs, logit_bias=request.logit_bias, media=request.media,
                grammar=constraint.grammar if constraint is not None else None, arrival=request.arrival)


@dataclass
class _Outbox:
    """What the output thread sends next; every producer appends under `lock`, in order."""

    lock: threading.Condition = field(default_factory=threading.Condition)
    events: list = field(default_factory=list)
    replies: list = field(default_factory=list)
    ttfts: list = field(default_factory=list)
    itls: list = field(default_factory=list)
    tokens: int = 0
    due: bool = False  # something waits that should go now (a step's events, a final event, a reply)
    closed: bool = False

    def take(self) -> tuple[list, list, list, list, int]:
        taken = self.events, self.replies, self.ttfts, self.itls, self.tokens
        self.events, self.replies, self.ttfts, self.itls, self.tokens = [], [], [], [], 0
        self.due = False
        return taken

    def send_now(self) -> None:
        """Wakes the output thread (call with `lock` held)."""
        self.due = True
        self.lock.notify()

    def reply(self, message: tuple) -> None:
        with self.lock:
            self.replies.append(message)
            self.send_now()


class _ForwardingObserver(Observer):
    """The engine's metric hooks, carried to the API process's Prometheus collector with the events."""

    def __init__(self, outbox: _Outbox):
        self.outbox = outbox

    def first_token(self, seconds: float) -> None:
        with self.outbox.lock:
            self.outbox.ttfts.append(seconds)

    def inter_token(self, seconds: float) -> None:
        with self.outbox.lock:
            self.outbox.itls.append(seconds)

    def tokens_generated(self, count: int) -> None:
        with self.outbox.lock:
            self.outbox.tokens += count

    def step_done(self) -> None:
        with self.outbox.lock:  # one message per step, not one per event
            self.outbox.send_now()


class EngineCore:
    """An Engine behind one end of a connection; `run()` serves until told to stop or the other end goes."""

    def __init__(self, conn, model, tokenizer, config: EngineConfig, images: ImageVocab | None = None,
                 audio: AudioVocab | None = None, vision=None, threads: Callable[[float], int] | None = None):
        """`images`, `audio`: the image and audio blocks of a model that writes them (None otherwise);
        `vision`: the vision encoder of a model that reads images through one (Qwen3-VL); `threads`: intra-op
        threads for a forward of so many FLOPs of matmuls (None: torch's count throughout)."""
        self.conn, self.tokenizer = conn, tokenizer
        self.outbox = _Outbox()
        self.engine = Engine(model, tokenizer, config, observer=_ForwardingObserver(self.outbox), images=images,
                             audio=audio, vision=vision, threads=threads)
        self.requests: dict[int, Request] = {}  # accepted and not yet finished, for cancel
        self.unfinished: dict[int, int] = {}  # rid -> choices without their final event

    def run(self) -> None:
        sender = threading.Thread(target=self._send_loop, name="hepta-core-out", daemon=True)
        self.engine.start()
        try:
            self.conn.send(("ready", self.engine.limits))  # before the sender starts: one writer at a time
        except (BrokenPipeError, OSError):  # the server stopped while the model was loading
            self.engine.stop()
            self.conn.close()
            return
        sender.start()
        try:
            self._receive_loop()
        finally:
            self.engine.stop()  # every open request gets its final event, which the sender still sends
            with self.outbox.lock:
                self.outbox.closed = True
                self.outbox.send_now()
            sender.join(timeout=30)
            self.conn.close()

    # --- input ---------------------------------------------------------------------------

    def _receive_loop(self) -> None:
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):  # the API process is gone
                return
            kind = message[0]
            if kind == "submit":
                self._submit(message[1], message[2])
            elif kind == "cancel":
                request = self.requests.get(message[1])
                if request is not None:
                    request.cancel()
            elif kind == "embed":
                self._embed(*message[1:])
            elif kind == "stop":
                return

    def _submit(self, rid: int, fields: dict[str, Any]) -> None:
        try:
            grammar, arrival = fields.pop("grammar"), fields.pop("arrival")
            constraint = ConstraintSpec.from_grammar(self.tokenizer, grammar) if grammar is not None else None
            request = Request(**fields, constraint=constraint, arrival=arrival,
                              sink=lambda event: self._emit(rid, event))
            with self.outbox.lock:  # registered before the engine can emit anything for it
                self.requests[rid], self.unfinished[rid] = request, request.n
            self.engine.submit(request)
        except Exception as e:  # refused (a full queue, or a check the client could not make)
            with self.outbox.lock:
                self.requests.pop(rid, None)
                self.unfinished.pop(rid, None)
            self.outbox.reply(("rejected", rid, isinstance(e, QueueFull), str(e)))
            return
        self.outbox.reply(("accepted", rid))

    def _emit(self, rid: int, event: Event) -> None:
        """The engine's sink for request `rid` (engine thread)."""
        with self.outbox.lock:
            self.outbox.events.append((rid, event))
            if event.finish_reason:  # at once: a cancelled or failed request has no step to wait for
                self.unfinished[rid] -= 1
                if not self.unfinished[rid]:
                    del self.unfinished[rid], self.requests[rid]
                self.outbox.send_now()

    def _embed(self, job: int, inputs: list[list[int]], dimensions: int | None) -> None:
        model = self.engine.model
        future = self.engine.run_exclusive(lambda: pooled_embeddings(model, inputs, dimensions).numpy())

        def done(f) -> None:
            error = f.exception()
            self.outbox.reply(("result", job, f"{type(error).__name__}: {error}" if error else None,
                               None if error else f.result()))

        future.add_done_callback(done)

    # --- output --------------------------------------------------------------------------

    def _send_loop(self) -> None:
        try:
            self._send_batches()
        except BaseException:
            # Whatever stops the sender (an event that cannot be pickled, a bug) must not leave the
            # server's streams waiting on a pipe that stays open: closing it reads as the core's
            # death on the other side, which ends every open request with an error.
            log.exception("the engine's output thread failed; closing the connection")
            self.conn.close()
            raise

    def _send_batches(self) -> None:
        sent_kv = None
        while True:
            with self.outbox.lock:  # woken by a finished step, a final event, a reply, or the idle timeout
                if not (self.outbox.due or self.outbox.closed):
                    self.outbox.lock.wait(IDLE_STATS_S)
                events, replies, ttfts, itls, tokens = self.outbox.take()
                closed = self.outbox.closed
            kv = self.engine.kv_usage
            if events or replies or ttfts or kv != sent_kv:
                try:
                    self.conn.send(("out", events, replies, kv, ttfts, itls, tokens))
                except (BrokenPipeError, OSError):  # the API process is gone; the input side sees it too
                    return
                sent_kv = kv
            if closed:
                with self.outbox.lock:
                    if not (self.outbox.events or self.outbox.replies):
                        return


# a forward of at least this many FLOPs of matmuls takes every core (engine_threads)
ALL_CORES_FLOPS = 5e8


def engine_threads(forward_flops: float, cores: int) -> int:
    """Intra-op threads of the engine process for a forward of `forward_flops` FLOPs of matmuls: one per core for a
    large forward (a batch of a model of some size decoding, a prompt), one fewer for a small one.

    The API process needs a core for HTTP, JSON and SSE at every step. A small forward is short and made of many
    parallel regions: when all of torch's threads compete with the API process, one of them waits for the core and
    the whole region with it, so a core left to the API process makes it faster. A large one gains more from the
    core than it loses to the API's turns. On 2 cores, through HTTP (benchmarks/serve.py):
      - `tiny`, 16 streams (0.1 GFLOP a step): 13 ms a step with 2 threads, 7-10 ms with 1;
      - the 200M OLMoE shape, 1 stream (0.08 GFLOP): 16.5 ms a token with 2 threads, 10.7 ms with 1;
      - the same, 16 streams (1.2 GFLOP): 54.6 ms a step with 2 threads, 66.7 ms with 1.
    OMP_NUM_THREADS, when set, is the user's choice, and the engine keeps it throughout.
    """
    return cores if forward_flops >= ALL_CORES_FLOPS else max(1, cores - 1)


def run_core_process(conn, model_path: str, config: EngineConfig, allow_pickle: bool, device: str = "cpu",
                     dtype: str | None = None) -> None:
    """The engine process's entry point: load the folder onto `device` (in `dtype`), then serve until stopped."""
    # Ctrl-C and a stop of the whole process group (systemd, `kill -TERM -PGID`) reach this process
    # too: the server stops its engine itself, in order, after its open streams; should the server
    # die instead, this process reads end-of-file on its pipe and exits
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threads = None
    if "OMP_NUM_THREADS" not in os.environ:
        cores = torch.get_num_threads()
        torch.set_num_threads(engine_threads(0, cores))  # before any thread starts: they take this count
        threads = functools.partial(engine_threads, cores=cores)
    try:
        from hepta.devices import resolve_dtype
        from hepta.loading import load, load_audio_codec, load_image_codec, load_tokenizer, load_vision

        model = load(model_path, device=device, allow_pickle=allow_pickle, dtype=resolve_dtype(dtype))
        tokenizer = load_tokenizer(model_path)
        llg_tokenizer(tokenizer)  # the grammar engine's view of the vocabulary: seconds for 128k ids, paid here
        codec = load_image_codec(model_path, tokenizer)  # its span layout keeps written images well formed
        audio = load_audio_codec(model_path, tokenizer)  # and written speech
        core = EngineCore(conn, model, tokenizer, config, images=codec.vocab if codec is not None else None,
                          audio=audio.vocab if audio is not None else None,
                          vision=load_vision(model_path, model.embed.weight.dtype, device), threads=threads)
    except Exception as e:
        conn.send(("failed", str(e)))
        conn.close()
        return
    core.run()
    # every final event is sent and the connection closed: nothing is left to clean up, so leave
    # without the interpreter's teardown of torch and the grammar engine, and the server's stop is prompt
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
