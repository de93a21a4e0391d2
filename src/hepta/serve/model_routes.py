"""GET /v1/models and /v1/models/{name}: the one model this server serves."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request

from hepta.serve.state import ServerState

router = APIRouter()
CREATED = int(time.time())


def _model_card(state: ServerState) -> dict:
    return {"id": state.model_name, "object": "model", "created": CREATED, "owned_by": "hepta"}


@router.get("/v1/models")
async def models(request: Request):
    state: ServerState = request.app.state.hepta
    state.authorize(request)
    return {"object": "list", "data": [_model_card(state)]}


@router.get("/v1/models/{name:path}")
async def model(name: str, request: Request):
    state: ServerState = request.app.state.hepta
    state.authorize(request)
    state.check_model(name)
    return _model_card(state)
