"""GET /health (readiness, for load balancers and orchestrators) and /metrics (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hepta.serve.state import ServerState

router = APIRouter()


@router.get("/health")
async def health(request: Request):
    state: ServerState = request.app.state.hepta
    status = state.engine_status()
    if status == "ok":
        return {"status": "ok", "model": state.model_name}
    if status == "restarting":
        return JSONResponse({"status": "restarting", "error": state.restarting or state.engine.dead,
                             "attempt": state.restart_attempt, "last_error": state.restart_error}, status_code=503)
    return JSONResponse({"status": status, "error": state.load_error}, status_code=503)


@router.get("/metrics")
async def metrics(request: Request):
    state: ServerState = request.app.state.hepta
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
