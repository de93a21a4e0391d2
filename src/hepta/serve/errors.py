"""Errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with the right status.

Clients branch on the status and on `code` (the `openai` package raises `BadRequestError`,
`AuthenticationError`, `NotFoundError`, `RateLimitError`... from the status), so every failure
path of the API goes through `APIError` or one of the handlers installed here.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("hepta.serve")

_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
          404: "invalid_request_error", 405: "invalid_request_error", 413: "invalid_request_error",
          429: "rate_limit_exceeded", 500: "server_error", 503: "server_error"}


class APIError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None, type: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}
        self.type = type or _TYPES.get(status, "invalid_request_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def _field_path(loc: tuple) -> str:
    # ("body", "messages", 0, "content") -> "messages[0].content"; union branch names are dropped
    path = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part[:1].islower() and "[" not in part and part not in _UNION_TAGS:
            path += f".{part}" if path else part
    return path


# pydantic names the branch of a union it tried ("str", "list[int]", "function-after[...]"); not a field
_UNION_TAGS = {"str", "int", "float", "bool", "list", "dict", "text", "image_url", "input_audio", "video_url", "x", "web",
               "news", "rss", "literal"}


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "the request body is invalid", None
    first = errors[0]
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON; send a JSON object", None
    if first.get("loc") == ("body",) and first.get("type") in ("model_attributes_type", "dict_type", "model_type"):
        return "the request body must be a JSON object", None
    param = _field_path(tuple(first.get("loc", ())))
    message = first.get("msg", "invalid value").removeprefix("Value error, ")
    if first.get("type") == "missing":
        return f"'{param}' is a required property", param
    return f"invalid value for '{param}': {message}", param or None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return APIError(400, message, param=param).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = {404: "no such endpoint; see GET /v1/models and the API reference",
                   405: "this method is not allowed on this endpoint"}.get(exc.status_code, str(exc.detail))
        return APIError(exc.status_code, message, code={404: "unknown_url"}.get(exc.status_code)).response()

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error while handling a request")
        return APIError(500, f"the server failed on this request ({type(exc).__name__}); it has been logged",
                        type="server_error").response()
