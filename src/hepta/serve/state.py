"""What one server holds: the engine once loaded, keys and limits, metrics; and the per-request gates."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from hepta.infer.client import EngineClient
from hepta.live.store import Store
from hepta.modality.audio_codec import AudioCodec
from hepta.modality.codec import ImageCodec
from hepta.modality.video_reading import VideoReading
from hepta.serve.errors import APIError
from hepta.serve.image_fetch import ImageAccess
from hepta.serve.keys import KeyRecord, KeyStore, bearer_token
from hepta.serve.metrics import ServerMetrics
from hepta.serve.ratelimit import RateLimiter
from hepta.tokenizer import TextTokenizer


@dataclass
class ServerState:
    model_name: str
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    keys: KeyStore | None = None
    limiter: RateLimiter = field(default_factory=RateLimiter)
    live: Store | None = None  # the hepta.live Store behind search_parameters and the /v1 live endpoints
    engine: EngineClient | None = None
    tokenizer: TextTokenizer | None = None
    codec: ImageCodec | None = None  # the image tokenizer of a model that reads and writes images
    audio: AudioCodec | None = None  # the audio tokenizer of a model that hears and speaks
    vision: Any = None  # the image and video preprocessor of a model with a vision encoder (Qwen3-VL)
    video_reading: VideoReading = VideoReading()  # how the model was trained to read video (captions, question first)
    responses: Any = None  # the ResponseStore of /v1/responses
    image_access: ImageAccess = field(default_factory=ImageAccess)  # where image URLs may be read from
    load_error: str | None = None
    restarting: str | None = None  # why the engine died, while new ones are being started
    restart_attempt: int = 0  # the start under way or next since it died (1 is the first)
    restart_error: str | None = None  # why the last start since it died failed

    def restart_status(self) -> str:
        """Where the restart stands, as a clause, for the 503s."""
        reason = self.restarting or self.engine.dead  # a dead engine not yet replaced is about to be restarted
        attempt = f", attempt {self.restart_attempt}" if self.restart_attempt else ""
        failed = f" (attempt {self.restart_attempt - 1} failed: {self.restart_error})" if self.restart_error else ""
        return f"the engine is restarting ({reason}){attempt}{failed}"

    def engine_status(self) -> str:
        """"ok", "restarting", "failed" (the first load failed) or "loading": what /health reports and
        what every model request is gated on."""
        if self.engine is not None and self.engine.dead is None:
            return "ok"
        if self.engine is not None or self.restarting is not None:  # a dead engine not yet replaced is restarting
            return "restarting"
        return "failed" if self.load_error else "loading"

    def ready(self) -> EngineClient:
        status = self.engine_status()
        if status == "ok":
            return self.engine
        if status == "restarting":
            raise APIError(503, f"{self.restart_status()}; retry in a few seconds", code="engine_restarting",
                           headers={"retry-after": "5"})
        reason = f"the model failed to load: {self.load_error}" if status == "failed" else \
            "the model is still loading; retry in a few seconds"
        raise APIError(503, reason, code="model_load_failed" if status == "failed" else "model_loading",
                       headers={"retry-after": "5"})

    def check_model(self, name: str) -> None:
        if name != self.model_name:
            raise APIError(404, f"The model '{name}' does not exist; this server serves '{self.model_name}' "
                           "(see GET /v1/models)", param="model", code="model_not_found")

    def gate(self, request: Request, model: str) -> tuple[KeyRecord | None, EngineClient]:
        """The checks every model request passes first, in OpenAI's order: key, model name, readiness."""
        key = self.authorize(request)
        self.check_model(model)
        return key, self.ready()

    def authorize(self, request: Request) -> KeyRecord | None:
        """The caller's key record (None when the server is open); 401 for a missing or wrong key."""
        if self.keys is None:
            return None
        raw = bearer_token(request.headers.get("authorization"))
        if raw is None:
            raise APIError(401, "You didn't provide an API key; send it as 'Authorization: Bearer <key>' "
                           "(create one with `hepta keys add NAME`)", code="invalid_api_key")
        record = self.keys.authenticate(raw)
        if record is None:
            shown = raw[:6] + "..." if len(raw) > 8 else "..."
            raise APIError(401, f"Incorrect API key provided: {shown}; check the key or create one with "
                           "`hepta keys add NAME`", code="invalid_api_key")
        return record

    def admit(self, key: KeyRecord | None, estimated_tokens: int) -> dict[str, str]:
        """Rate-limit headers for an admitted request; 429 with retry-after when the key is over its limits."""
        if key is None:
            return {}
        decision = self.limiter.check(key, estimated_tokens)
        if not decision.allowed:
            raise APIError(429, decision.message, code="rate_limit_exceeded", headers=decision.headers,
                           type="requests" if decision.reason == "requests" else "tokens")
        return decision.headers

    async def account(self, key: KeyRecord | None, endpoint: str, estimated: int, prompt_tokens: int,
                      completion_tokens: int, cached_tokens: int = 0) -> None:
        self.metrics.prompt_tokens.inc(prompt_tokens)
        self.metrics.prefix_cache_hit_tokens.inc(cached_tokens)
        if key is None:
            return
        self.limiter.settle(key, estimated, prompt_tokens + completion_tokens)
        await asyncio.to_thread(self.keys.record_usage, key.id, self.model_name, prompt_tokens, completion_tokens,
                                endpoint)
