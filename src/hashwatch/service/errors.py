"""Errors of the HTTP service: every error is a small JSON body with a code and a message.

``ApiError`` is what route code raises; ``install_error_handlers`` maps it (and FastAPI's own
validation and HTTP errors, refused text, names and destinations) to JSON that names the
field and the problem and never repeats more than a few bytes of the input. Size limits,
authentication and hostile JSON are handled before any route runs, by
:class:`hashwatch.service.guards.RequestGuard`.
"""

import logging
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from hashwatch.service.destinations import DestinationError
from hashwatch.service.guards import BodyTooLarge, safe_text, snippet
from hashwatch.store import InvalidName, InvalidText

log = logging.getLogger("hashwatch.service")



class ApiError(Exception):
    """An error answered as ``{"error": {"code", "message"}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers



def error_response(status: int, code: str, message: str,
                   headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    # safe_text: a message repeating input must always encode (a lone surrogate did not)
    body: dict[str, Any] = {"error": {"code": code, "message": safe_text(message), **extra}}
    return JSONResponse(body, status_code=status, headers=headers)



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


MAX_DETAILS = 20


def validation_details(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Pydantic errors as ``{"field", "type", "problem"}`` without the input, at most
    ``MAX_DETAILS`` of them, every string cut short and safe to encode."""
    out = []
    for e in list(errors)[:MAX_DETAILS]:
        loc = [snippet(x, 40) if isinstance(x, str) else x for x in e.get("loc", ())]
        out.append({"field": loc, "type": snippet(e.get("type", ""), 60),
                    "problem": snippet(e.get("msg", ""), 200)})
    if len(errors) > MAX_DETAILS:
        out.append({"field": [], "type": "more", "problem": f"{len(errors) - MAX_DETAILS} "
                    "more errors not shown"})
    return out


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
        # field and problem only: the input itself is never echoed (a 50 MB body must
        # not come back as a 50 MB error, nor a lone surrogate break the encoder)
        return error_response(422, "invalid_request", "the request does not match the API schema",
                              details=validation_details(exc.errors()))

    @app.exception_handler(InvalidText)
    async def _invalid_text(_r: Request, exc: InvalidText) -> JSONResponse:
        return error_response(422, "invalid_text", f"text refused: {exc.problem}",
                              field=exc.field, problem=exc.problem)

    @app.exception_handler(InvalidName)
    async def _invalid_name(_r: Request, exc: InvalidName) -> JSONResponse:
        return error_response(422, "invalid_name", str(exc))

    @app.exception_handler(sa.exc.DataError)
    async def _data_error(_r: Request, exc: sa.exc.DataError) -> JSONResponse:
        # the database refused a value (out of range for its column, too long): the
        # request's fault, whatever route let it through. Logged without the values.
        log.warning("database refused a value: %s", type(exc.orig).__name__)
        return error_response(422, "invalid_value", "a value is out of range or too long "
                              "for where it is stored")

    @app.exception_handler(DestinationError)
    async def _destination(_r: Request, exc: DestinationError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_r: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(sa_exc.OperationalError)
    async def _store_down(_r: Request, exc: sa_exc.OperationalError) -> JSONResponse:
        # the database is out of space or unreachable (restarting): nothing was written for
        # this request; say so clearly and when to retry, instead of a bare 500
        text = str(exc.orig).lower()
        log.error("store operation failed: %s", type(exc.orig).__name__)
        if "full" in text or "no space" in text:
            return error_response(507, "storage_full", "the database has no space left; "
                                  "nothing was written", {"Retry-After": "30"})
        return error_response(503, "store_unavailable", "the database is unavailable; "
                              "nothing was written", {"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _unexpected(_r: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, "internal", "internal error (logged)")
