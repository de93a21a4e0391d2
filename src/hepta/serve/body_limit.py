"""Request bodies above a size limit are refused with a 413 before they are read, as a plain ASGI middleware.

A body that announces its length (Content-Length) over the limit is refused from that header: its bytes
are read off the socket and dropped as they come, never kept or parsed, and the 413 goes out once the
client has sent them (answering earlier would close the connection under a client still uploading, which
then sees a broken connection instead of the 413). One sent in chunks without a length is gathered up to
the limit first and treated the same from the first byte past it (clients that send bodies that way are
rare; what they send below the limit reaches the app unchanged). Either way nothing of an oversized body
is parsed,
so a 50 MB prompt costs the server a header check, not seconds of JSON parsing and tokenizing on the
event loop while other clients' streams wait.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_MAX_BODY_MB = 32


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None:
            if length.isdigit() and int(length) > self.max_bytes:
                await self._refuse(receive, send)
                return
            await self.app(scope, receive, send)
            return
        if b"chunked" not in headers.get(b"transfer-encoding", b""):
            await self.app(scope, receive, send)  # no body
            return
        gathered, more = [], True
        size = 0
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left
            gathered.append(message.get("body", b""))
            size += len(gathered[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                await self._refuse(receive, send, more)
                return
        body = b"".join(gathered)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, receive: Receive, send: Send, more: bool = True) -> None:
        while more:  # the rest of the body, dropped as it arrives
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left
            more = message.get("more_body", False)
        mb = self.max_bytes / 2**20
        body = json.dumps({"error": {
            "message": f"the request body is larger than this server's limit of {mb:g} MB; send a shorter prompt or "
                       "smaller media (the limit is hepta serve's --max-body-mb)",
            "type": "invalid_request_error", "param": None, "code": "request_too_large"}}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
