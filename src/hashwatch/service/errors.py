"""Errors of the HTTP service: every error is a small JSON body with a code and a message.

``ApiError`` is what route code raises; ``install_error_handlers`` maps it (and FastAPI's own
validation and HTTP errors) to JSON; ``BodyLimit`` refuses oversized request bodies before
any route runs.
"""

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("hashwatch.service")

IMPORT_MAX_BYTES = 4 * 1024 * 1024 * 1024  # bulk list imports may be large; streamed to disk


class ApiError(Exception):
    """An error answered as ``{"error": {"code", "message"}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


class BodyTooLarge(Exception):
    """Raised while a chunked body is read, once it passes the limit."""


def error_response(status: int, code: str, message: str,
                   headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"error": {"code": code, "message": message, **extra}}
    return JSONResponse(body, status_code=status, headers=headers)


DECODE_STATUS = {"too_large": (413, "image_too_large"), "not_an_image": (415, "not_an_image"),
                 "unsupported": (415, "unsupported_image"), "truncated": (422, "truncated_image")}


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


_ERRORS = {
    400: "malformed request body",
    401: "missing, invalid or revoked API key",
    403: "the key lacks the scope (or the feature is disabled)",
    404: "unknown list, item, webhook or key",
    409: "already exists",
    413: "body, upload or image too large",
    415: "not an image / unsupported media",
    422: "invalid input (malformed hash, bad parameters)",
    429: "rate limited (see Retry-After)",
    503: "not ready (index loading)",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    k: {"model": ErrorBody, "description": v} for k, v in _ERRORS.items()
}


class BodyLimit:
    """Refuses request bodies over the limit: by Content-Length up front, and by counting
    for chunked uploads (the endpoint's read then fails with 413)."""

    def __init__(self, app: ASGIApp, limit: int, big_paths: tuple[str, ...] = (),
                 big_limit: int = IMPORT_MAX_BYTES) -> None:
        self.app, self.limit, self.big_paths, self.big_limit = app, limit, big_paths, big_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        limit = self.big_limit if path.endswith(self.big_paths) else self.limit
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    too_big = int(v) > limit
                except ValueError:
                    too_big = False
                if too_big:
                    resp = error_response(413, "too_large", f"request body over {limit} bytes")
                    await resp(scope, receive, send)
                    return
        seen = 0

        async def counting() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge()
            return msg

        await self.app(scope, counting, send)


def install_error_handlers(app: FastAPI) -> None:
    """Every error is JSON; bad input is a 4xx; anything unexpected a logged 500."""

    @app.exception_handler(ApiError)
    async def _api_error(_r: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(_r: Request, _exc: BodyTooLarge) -> JSONResponse:
        return error_response(413, "too_large", "request body too large")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_r: Request, exc: RequestValidationError) -> JSONResponse:
        try:
            details = jsonable_encoder(exc.errors(), custom_encoder={bytes: lambda b: repr(b)[:80]})
            json.dumps(details)
        except Exception:
            details = [str(exc)[:2000]]
        return error_response(422, "invalid_request", "the request does not match the API schema",
                              details=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_r: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_r: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, "internal", "internal error (logged)")
