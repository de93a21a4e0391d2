"""The chat page at `/`: static files shipped in the package (nothing is built at install time), served
with a Content-Security-Policy that lets only the page's own scripts and styles run and only this server be
called; images and clips the user attaches or the model draws come as data URLs."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from hepta.serve.errors import APIError

router = APIRouter()

STATIC = Path(__file__).parent / "static"
FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
         "markdown.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "media-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _file(name: str) -> FileResponse:
    return FileResponse(STATIC / name, media_type=FILES[name], headers=HEADERS)


@router.get("/", include_in_schema=False)
async def page():
    return _file("index.html")


@router.get("/static/{name}", include_in_schema=False)
async def static_file(name: str):
    if name not in FILES:
        raise APIError(404, f"there is no page file {name!r}", code="not_found")
    return _file(name)
