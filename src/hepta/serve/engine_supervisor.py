"""Starting the engine core, and starting a new one when it dies.

The core loads in a background thread after the server starts listening, so `/health` answers
503 while it loads (load balancers and orchestrators wait on that) instead of the port being
closed. If the engine process dies, its open requests have already ended with an error (the
client sees to that); the server says so in its log and in `/health` (503, "restarting", with
the reason) and starts a new engine on the same folder.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Callable

from hepta.infer.client import EngineClient
from hepta.serve.state import ServerState

log = logging.getLogger("hepta.serve")


class EngineSupervisor:
    def __init__(self, state: ServerState, config, loader: Callable | None, loop: asyncio.AbstractEventLoop):
        """`config` is the app's ServeConfig; `loader` (returning model, tokenizer) serves a model in
        memory from a thread of this process instead of a process on the folder."""
        self.state, self.config, self.loader, self.loop = state, config, loader, loop
        self.model = None  # the loader's model, kept for restarts
        self._stopping = False
        self._lock = threading.Lock()  # start and stop never overlap

    def start(self) -> None:
        threading.Thread(target=self._start, name="hepta-load", daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            engine, self.state.engine = self.state.engine, None
        if engine is not None:
            engine.stop()

    def _start(self) -> None:
        state, config = self.state, self.config
        try:
            if state.tokenizer is None:
                self._load_tokenizer()
            kwargs = dict(loop=self.loop, observer=state.metrics, on_death=self._died)
            if self.model is not None:
                engine = EngineClient.in_thread(self.model, state.tokenizer, config.engine, **kwargs)
            else:
                engine = EngineClient.spawn(config.model, config.engine, allow_pickle=config.allow_pickle, **kwargs)
        except Exception as e:  # reported by /health and every request instead of a dead thread
            if self._stopping:  # the server stopped while the engine loaded, and took it down
                return
            state.load_error = str(e)
            log.error("model %s failed to load: %s", state.model_name, e)
            return
        with self._lock:
            if self._stopping:  # the server stopped while the engine loaded
                engine.stop()
                return
            state.metrics.watch(engine)
            state.engine, state.restarting = engine, None
        where = f"engine process {engine.pid}" if engine.pid else "engine thread"
        log.info("model %s ready (%s): %d slots of %d tokens", state.model_name, where, engine.num_slots,
                 engine.max_len)

    def _load_tokenizer(self) -> None:
        from hepta.infer.constrain import llg_tokenizer

        if self.loader is not None:
            self.model, tokenizer = self.loader()
        else:
            from hepta.loading import load_tokenizer

            tokenizer = load_tokenizer(self.config.model)
        llg_tokenizer(tokenizer)  # grammars are checked here, in the API process: pay for the view at load
        self.state.tokenizer = tokenizer

    def _died(self, reason: str) -> None:
        """The engine client's death callback (event loop): fail fast, then start a new engine."""
        with self._lock:
            if self._stopping:
                return
            self.state.engine, self.state.restarting = None, reason
        log.error("%s; starting a new engine", reason)
        self.start()
