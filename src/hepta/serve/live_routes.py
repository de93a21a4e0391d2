"""GET /v1/trends, /v1/posts/search, /v1/opinion, /v1/accounts: the live analyses over HTTP.

Each reads the post store the server was started with (`--live-db`), on a worker thread, so
a slow query never holds up token streaming; SQLite's WAL lets them read while `hepta live
ingest` writes.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from datetime import timedelta

from fastapi import APIRouter, Query, Request

from hepta.errors import HeptaError
from hepta.live.accounts import accounts
from hepta.live.durations import parse_duration
from hepta.live.opinion import opinion
from hepta.live.search import SearchParameterError, result_dict, search
from hepta.live.store import normalize_handle
from hepta.live.trends import trends
from hepta.serve.errors import APIError

router = APIRouter()


def _window(text: str | None, param: str = "window") -> timedelta | None:
    if text is None:
        return None
    try:
        window = parse_duration(text, param)
    except HeptaError as e:
        raise APIError(400, str(e), param=param) from e
    if window <= timedelta(0):
        raise APIError(400, f"{param} {text!r} must be longer than zero", param=param)
    return window


def _handles(text: str | None) -> list[str]:
    return [normalize_handle(h) for h in (text or "").split(",") if h.strip()]


async def _run(request: Request, fn, *args, **kwargs):
    state = request.app.state.hepta
    state.authorize(request)
    try:
        return await asyncio.to_thread(fn, state.live, *args, **kwargs)
    except SearchParameterError as e:
        raise APIError(400, str(e), param="search_parameters") from e
    except HeptaError as e:
        raise APIError(400, str(e)) from e


@router.get("/v1/trends")
async def get_trends(request: Request, window: str = "15m", lang: str | None = None,
                     limit: int = Query(20, ge=1, le=200)):
    report = await _run(request, trends, window=_window(window), lang=lang, limit=limit)
    return asdict(report)


@router.get("/v1/posts/search")
async def search_posts(request: Request, query: str = Query(min_length=1), handles: str | None = None,
                       exclude_handles: str | None = None, from_date: str | None = None, to_date: str | None = None,
                       max_search_results: int = Query(15, ge=1, le=50), min_likes: int | None = Query(None, ge=0),
                       min_views: int | None = Query(None, ge=0)):
    source: dict = {"type": "x"}
    for key, value in (("included_x_handles", _handles(handles)), ("excluded_x_handles", _handles(exclude_handles)),
                       ("post_favorite_count", min_likes), ("post_view_count", min_views)):
        if value:
            source[key] = value
    params = {"mode": "on", "sources": [source], "max_search_results": max_search_results}
    params.update({k: v for k, v in (("from_date", from_date), ("to_date", to_date)) if v})
    return result_dict(await _run(request, search, query, params))


@router.get("/v1/opinion")
async def get_opinion(request: Request, topic: str = Query(min_length=1), window: str | None = None,
                      lang: str | None = None):
    return asdict(await _run(request, opinion, topic, window=_window(window), lang=lang))


@router.get("/v1/accounts")
async def get_accounts(request: Request, handles: str = Query(min_length=1), window: str | None = None):
    names = _handles(handles)
    if not names:
        raise APIError(400, "handles is empty; pass a comma-separated list such as handles=alice,bob", param="handles")
    reports = await _run(request, accounts, names, window=_window(window))
    return {"object": "list", "data": [asdict(r) for r in reports]}
