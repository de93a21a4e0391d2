"""The FastAPI app: models, embeddings, health, metrics, and the generation routes.

The model loads in a background thread after the server starts listening, so `/health` can
answer 503 while it loads (load balancers and orchestrators wait on that) instead of the port
being closed.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hepta.infer.constrain import llg_tokenizer
from hepta.infer.embeddings import pooled_embeddings
from hepta.infer.engine import Engine, EngineConfig
from hepta.serve import generation
from hepta.serve.errors import APIError, install_error_handlers
from hepta.serve.keys import KeyStore
from hepta.serve.schemas import EmbeddingRequest
from hepta.serve.state import ServerState

log = logging.getLogger("hepta.serve")
CREATED = int(time.time())


@dataclass(frozen=True)
class ServeConfig:
    model: str  # model folder
    model_name: str | None = None  # the id clients pass as `model`; default: the folder's name
    engine: EngineConfig = EngineConfig()
    api_keys: str | None = None  # key file; None serves openly
    live_db: str | None = None  # post store for search_parameters and the live endpoints
    allow_pickle: bool = False


def _load(state: ServerState, config: ServeConfig, loader: Callable | None) -> None:
    try:
        if loader is not None:
            model, tokenizer = loader()
        else:
            from hepta.loading import load, load_tokenizer

            model, tokenizer = load(config.model, allow_pickle=config.allow_pickle), load_tokenizer(config.model)
        llg_tokenizer(tokenizer)  # the grammar engine's view of the vocabulary: seconds for 128k ids, paid here
        engine = Engine(model, tokenizer, config.engine, observer=state.metrics)
        state.metrics.watch(engine)
        state.tokenizer = tokenizer
        state.engine = engine.start()
        log.info("model %s ready: %d slots of %d tokens", state.model_name, engine.num_slots, engine.max_len)
    except Exception as e:  # reported by /health and every request instead of a dead thread
        state.load_error = str(e)
        log.error("model %s failed to load: %s", state.model_name, e)


def create_app(config: ServeConfig, loader: Callable | None = None) -> FastAPI:
    """The API over the model folder in `config`; `loader` (returning model, tokenizer) replaces reading it."""
    state = ServerState(model_name=config.model_name or Path(config.model).name)
    if config.api_keys:
        state.keys = KeyStore(config.api_keys)
    if config.live_db:
        from hepta.live.store import Store

        state.live = Store(config.live_db, create=False)  # one store for all requests: a reader per thread

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        loading = threading.Thread(target=_load, args=(state, config, loader), name="hepta-load", daemon=True)
        loading.start()
        yield
        if state.engine is not None:
            await asyncio.to_thread(state.engine.stop)
        if state.live is not None:
            state.live.close()

    app = FastAPI(title="hepta", version="0.1.0", lifespan=lifespan,
                  description="OpenAI/xAI-compatible API over a hepta model")
    app.state.hepta = state
    install_error_handlers(app)
    app.include_router(generation.router)
    if state.live is not None:
        from hepta.serve.live_routes import router as live_router

        app.include_router(live_router)

    @app.middleware("http")
    async def log_and_count(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        state.metrics.requests.labels(request.url.path, str(response.status_code)).inc()
        log.info('%s "%s %s" %d %.1f ms', request.client.host if request.client else "-", request.method,
                 request.url.path, response.status_code, (time.perf_counter() - start) * 1000)
        return response

    @app.get("/health")
    async def health():
        if state.engine is None:
            status = "failed" if state.load_error else "loading"
            return JSONResponse({"status": status, "error": state.load_error}, status_code=503)
        return {"status": "ok", "model": state.model_name}

    @app.get("/metrics")
    async def metrics():
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(request: Request):
        state.authorize(request)
        return {"object": "list", "data": [_model_card(state)]}

    @app.get("/v1/models/{name:path}")
    async def model(name: str, request: Request):
        state.authorize(request)
        state.check_model(name)
        return _model_card(state)

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest, request: Request):
        key, engine = state.gate(request, body.model)
        inputs = _embedding_inputs(body, state.tokenizer, engine.max_len)
        total = sum(len(ids) for ids in inputs)
        headers = state.admit(key, total)
        if body.dimensions is not None and body.dimensions > engine.model.config.dim:
            raise APIError(400, f"dimensions can be at most {engine.model.config.dim} for this model",
                           param="dimensions")
        vectors = await asyncio.wrap_future(engine.run_exclusive(
            lambda: pooled_embeddings(engine.model, inputs, body.dimensions)))
        await state.account(key, "embeddings", total, total, 0)
        data = [{"object": "embedding", "index": i,
                 "embedding": _encode_vector(v, body.encoding_format)} for i, v in enumerate(vectors)]
        return JSONResponse({"object": "list", "data": data, "model": state.model_name,
                             "usage": {"prompt_tokens": total, "total_tokens": total}}, headers=headers)

    return app


def _model_card(state: ServerState) -> dict:
    return {"id": state.model_name, "object": "model", "created": CREATED, "owned_by": "hepta"}


def _embedding_inputs(body: EmbeddingRequest, tokenizer, max_len: int) -> list[list[int]]:
    raw = body.input
    if isinstance(raw, str):
        inputs = [tokenizer.encode(raw)]
    elif raw and all(isinstance(x, str) for x in raw):
        inputs = [tokenizer.encode(x) for x in raw]
    elif raw and all(isinstance(x, int) for x in raw):
        inputs = [list(raw)]
    else:
        inputs = [list(x) for x in raw]
    if not inputs or any(not ids for ids in inputs):
        raise APIError(400, "input must not be empty; send a string, strings, or token ids", param="input")
    for ids in inputs:
        if len(ids) > max_len:
            raise APIError(400, f"an input is {len(ids)} tokens but this model reads at most {max_len}; "
                           "split it", param="input", code="context_length_exceeded")
        if any(not 0 <= t < tokenizer.vocab_size for t in ids):
            raise APIError(400, f"token ids must be in 0..{tokenizer.vocab_size - 1}", param="input")
    return inputs


def _encode_vector(vector: torch.Tensor, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":  # little-endian float32, as OpenAI sends it
        return base64.b64encode(vector.float().numpy().astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()
