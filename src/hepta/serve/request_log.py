"""The request log and the per-endpoint request counter, as a plain ASGI middleware.

Not Starlette's `@app.middleware("http")` (BaseHTTPMiddleware): that one runs the app in a
task of its own and passes every body chunk through a memory stream, two task switches per
streamed token, which cost the API process about as much CPU as writing the chunk. This one
only looks at the response's start message as it goes by.
"""

from __future__ import annotations

import logging
import time

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hepta.serve.metrics import ServerMetrics

log = logging.getLogger("hepta.serve")


class RequestLog:
    """Counts each HTTP request by path and status, and logs one line with the time to its response's start."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                request, status = Request(scope), message["status"]
                self.metrics.requests.labels(request.url.path, str(status)).inc()
                log.info('%s "%s %s" %d %.1f ms', request.client.host if request.client else "-", request.method,
                         request.url.path, status, (time.perf_counter() - start) * 1000)
            await send(message)

        await self.app(scope, receive, send_counted)
