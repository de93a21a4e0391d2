"""Starting the engine core, and starting a new one when it dies.

The core loads in a background thread after the server starts listening, so `/health` answers
503 while it loads (load balancers and orchestrators wait on that) instead of the port being
closed. If the engine process dies, its open requests have already ended with an error (the
client sees to that); the server says so in its log and in `/health` (503, "restarting", with
the reason, the attempt and its last error) and starts a new engine on the same folder, again
and again with a growing wait while new engines fail, until one serves.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Callable

from hepta.infer.client import EngineClient
from hepta.serve.state import ServerState

log = logging.getLogger("hepta.serve")

# Waits between restarts while they keep failing: the first at once (a one-off death, say an
# out-of-memory kill, should cost seconds), then 1 s doubling to 30 s. A folder that cannot load
# (a bad disk, a missing driver) or an engine that dies as soon as it serves would otherwise spin
# a CPU and flood the log reloading; 30 s bounds how long a fixed cause keeps the server down.
FIRST_RETRY_S = 1.0
MAX_RETRY_S = 30.0
# an engine that served this long before it died ends the series of failures: the next restart is at once
STABLE_AFTER_S = 60.0


def retry_wait(failures: int) -> float:
    """Seconds to wait before the next start after `failures` failed ones in a row."""
    return 0.0 if failures == 0 else min(FIRST_RETRY_S * 2 ** (failures - 1), MAX_RETRY_S)


class EngineSupervisor:
    def __init__(self, state: ServerState, config, loader: Callable | None, loop: asyncio.AbstractEventLoop):
        """`config` is the app's ServeConfig; `loader` (returning model, tokenizer) serves a model in
        memory from a thread of this process instead of a process on the folder."""
        self.state, self.config, self.loader, self.loop = state, config, loader, loop
        self.model = None  # the loader's model, kept for restarts
        self._stopping = False
        self._stopped = threading.Event()  # wakes a restart waiting out its backoff
        self._lock = threading.Lock()  # start and stop never overlap
        self._failures = 0  # failed starts and early deaths in a row, for the backoff
        self._installed_at = 0.0  # time.monotonic() when the live engine was installed

    def start(self) -> None:
        threading.Thread(target=self._run, args=(None,), name="hepta-load", daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._stopped.set()
            engine, self.state.engine = self.state.engine, None
        if engine is not None:
            engine.stop()

    def _run(self, died: str | None) -> None:
        """Starts engines until one is installed or the server stops (load thread). `died` is why the
        last engine died (None at the first start: a folder that fails then is reported, not retried)."""
        state, attempt = self.state, 0
        while not self._stopped.wait(retry_wait(self._failures) if died else 0):
            attempt += 1
            try:
                engine = self._open_engine()
            except Exception as e:  # reported by /health and every request instead of a dead thread
                if self._stopping:  # the server stopped while the engine loaded, and took it down
                    return
                if died is None:
                    state.load_error = str(e)
                    log.error("model %s failed to load: %s", state.model_name, e)
                    return
                error = str(e)
            else:
                if self._install(engine):
                    return
                error = engine.dead  # it died before it was installed; its _died call was ignored
                died = died or error  # a first start whose engine died is a restart from here on
            self._failures += 1
            with self._lock:
                if self._stopping:
                    return
                state.restarting, state.restart_attempt, state.restart_error = died, attempt + 1, error
            log.error("starting a new engine failed (attempt %d): %s; next attempt in %.0f s", attempt, error,
                      retry_wait(self._failures))

    def _open_engine(self) -> EngineClient:
        """A new engine client, its core loaded (load thread); raises when it fails to load."""
        if self.state.tokenizer is None:
            self._load_tokenizer()
        kwargs = dict(loop=self.loop, observer=self.state.metrics, on_death=self._died)
        if self.model is not None:
            images = self.state.codec.vocab if self.state.codec is not None else None
            audio = self.state.audio.vocab if self.state.audio is not None else None
            return EngineClient.in_thread(self.model, self.state.tokenizer, self.config.engine, images=images,
                                          audio=audio, **kwargs)
        return EngineClient.spawn(self.config.model, self.config.engine, allow_pickle=self.config.allow_pickle,
                                  device=self.config.device, dtype=self.config.dtype, **kwargs)

    def _install(self, engine: EngineClient) -> bool:
        """Makes `engine` the live one and clears every trace of a failure; False when it is dead already."""
        state = self.state
        with self._lock:
            if self._stopping:  # the server stopped while the engine loaded
                engine.stop()
                return True
            if engine.dead is not None:  # it died between loading and here (its _died call found no match)
                return False
            state.metrics.watch(engine)
            state.engine, state.load_error = engine, None
            state.restarting, state.restart_attempt, state.restart_error = None, 0, None
            self._installed_at = time.monotonic()
        where = f"engine process {engine.pid}" if engine.pid else "engine thread"
        log.info("model %s ready (%s): %d slots of %d tokens", state.model_name, where, engine.num_slots,
                 engine.max_len)
        return True

    def _load_tokenizer(self) -> None:
        from hepta.infer.constrain import llg_tokenizer

        if self.loader is not None:
            self.model, tokenizer = self.loader()
        else:
            from hepta.loading import load_tokenizer

            tokenizer = load_tokenizer(self.config.model)
        llg_tokenizer(tokenizer)  # grammars are checked here, in the API process: pay for the view at load
        self.state.codec, self.state.audio = self._load_codecs(tokenizer)
        if self.state.codec is not None:
            from hepta.modality.video_reading import VideoReading

            self.state.video_reading = VideoReading.load(self.config.model)
        if self.loader is None:
            from hepta.loading import load_vision_preprocessor

            self.state.vision = load_vision_preprocessor(self.config.model)
        self.state.tokenizer = tokenizer

    def _load_codecs(self, tokenizer):
        """The folder's image and audio tokenizers (None where the model has none): the API process
        turns images and speech in requests into codes and codes in answers into PNGs and speech;
        the engine process loads its own copy of their span layouts."""
        from pathlib import Path

        from hepta.loading import load_audio_codec, load_image_codec

        if not Path(self.config.model).is_dir():  # a loader without a folder serves text only
            return None, None
        return load_image_codec(self.config.model, tokenizer), load_audio_codec(self.config.model, tokenizer)

    def _died(self, engine: EngineClient, reason: str) -> None:
        """The engine client's death callback (event loop): fail fast, then start a new engine.

        Only the live engine's death starts one: an engine that died before it was installed is
        seen dead by the load thread that started it, which tries again itself."""
        with self._lock:
            if self._stopping or engine is not self.state.engine:
                return
            self.state.engine, self.state.restarting, self.state.restart_attempt = None, reason, 1
            self.state.metrics.unwatch()  # the gauges would read the dead engine's last values
            # an engine that dies soon after it started is one more failure in a row: the backoff goes on
            early = time.monotonic() - self._installed_at < STABLE_AFTER_S
            self._failures = self._failures + 1 if early else 0
        wait_s = retry_wait(self._failures)
        log.error("%s; starting a new engine%s", reason, f" in {wait_s:.0f} s" if wait_s else "")
        threading.Thread(target=self._run, args=(reason,), name="hepta-load", daemon=True).start()
