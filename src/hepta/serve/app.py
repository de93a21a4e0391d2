"""The FastAPI app: assembles the routers, the error handlers, the request log and the engine's lifetime.

Routes live in routers (generation, embeddings, models, health and metrics, live); the engine
core runs in a process of its own, started and restarted by `EngineSupervisor`.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fastapi import FastAPI

from hepta.infer.engine import EngineConfig
from hepta.serve import (embedding_routes, generation, health_routes, image_routes, model_routes, page_routes,
                         realtime_ws, responses_api, speech_routes)
from hepta.serve.body_limit import DEFAULT_MAX_BODY_MB, BodyLimit
from hepta.serve.engine_supervisor import EngineSupervisor
from hepta.serve.errors import install_error_handlers
from hepta.serve.image_fetch import ImageAccess
from hepta.serve.keys import KeyStore
from hepta.serve.request_log import RequestLog
from hepta.serve.response_store import ResponseStore
from hepta.serve.state import ServerState


@dataclass(frozen=True)
class ServeConfig:
    model: str  # model folder
    model_name: str | None = None  # the id clients pass as `model`; default: the folder's name
    engine: EngineConfig = EngineConfig()
    api_keys: str | None = None  # key file; None serves openly
    live_db: str | None = None  # post store for search_parameters and the live endpoints
    allow_pickle: bool = False
    allow_image_dirs: tuple[str, ...] = ()  # folders whose image files requests may name; none by default
    allow_remote_images: bool = False  # fetch http(s) image URLs
    responses_db: str = ":memory:"  # SQLite file of stored /v1/responses; in memory for the server's lifetime
    max_body_mb: float = DEFAULT_MAX_BODY_MB  # larger request bodies get a 413 before they are read
    device: str = "cpu"  # where the engine runs the model ("cuda:0"); hepta.devices resolves the user's choice
    dtype: str | None = None  # the weights' dtype ("bfloat16"); None keeps the folder's


def create_app(config: ServeConfig, loader: Callable | None = None) -> FastAPI:
    """The API over the model folder in `config`, its engine in a process of its own; `loader`
    (returning model, tokenizer) replaces reading the folder, and the engine then runs on a thread
    of this process (the model is already in its memory)."""
    state = ServerState(model_name=config.model_name or Path(config.model).name)
    state.image_access = ImageAccess(tuple(Path(d) for d in config.allow_image_dirs), config.allow_remote_images)
    if config.api_keys:
        state.keys = KeyStore(config.api_keys)
    state.responses = ResponseStore(config.responses_db)
    if config.live_db:
        from hepta.live.store import Store

        state.live = Store(config.live_db, create=False)  # one store for all requests: a reader per thread

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        supervisor = EngineSupervisor(state, config, loader, asyncio.get_running_loop())
        supervisor.start()
        yield
        await asyncio.to_thread(supervisor.stop)
        if state.live is not None:
            state.live.close()
        state.responses.close()

    app = FastAPI(title="hepta", version="0.1.0", lifespan=lifespan,
                  description="OpenAI/xAI-compatible API over a hepta model")
    app.state.hepta = state
    install_error_handlers(app)
    for routes in (health_routes, model_routes, generation, responses_api, embedding_routes, image_routes,
                   speech_routes, realtime_ws, page_routes):
        app.include_router(routes.router)
    if state.live is not None:
        from hepta.serve.live_routes import router as live_router

        app.include_router(live_router)

    app.add_middleware(BodyLimit, max_bytes=int(config.max_body_mb * 2**20))
    app.add_middleware(RequestLog, metrics=state.metrics)  # added last: outermost, so it logs the 413s too

    return app
