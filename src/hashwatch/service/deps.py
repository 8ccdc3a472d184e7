"""What every router shares: the worker's ``Service``, API-key authentication with scopes
and rate limits, readiness, the audit of lookups, and common path/query types.

Routes declare what they need as parameters, e.g. ``p: MatchP, svc: Svc``: the key is
checked (401/403/429) before the route runs.
"""

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
from starlette.types import Scope

from hashwatch.service.audit import AuditUnavailable
from hashwatch.service.auth import Principal
from hashwatch.service.errors import ApiError, error_response
from hashwatch.service.guards import snippet
from hashwatch.service.state import Service
from hashwatch.store import ListNotFound

log = logging.getLogger("hashwatch.service")

API = "/v1"
MAX_ID = 2**62  # ids are BIGINT; larger numbers are a 422, not a database overflow
MAX_LISTS = 100  # list names a match may be restricted to
MAX_ID32 = 2**31 - 1  # ids of INTEGER columns (webhooks, allow-list rows)
ItemId = Annotated[int, PathParam(ge=1, le=MAX_ID)]
SmallId = Annotated[int, PathParam(ge=1, le=MAX_ID32)]
AfterId = Annotated[int, Query(ge=0, le=MAX_ID)]


def get_service(request: Request) -> Service:
    """The worker's Service (503 while the app is starting)."""
    svc = getattr(request.app.state, "service", None)
    if svc is None:
        raise ApiError(503, "not_ready", "service is starting")
    return svc


Svc = Annotated[Service, Depends(get_service)]

_bearer = HTTPBearer(auto_error=False, description="API key: `Bearer hw_<id>_<secret>`")
_xkey = APIKeyHeader(name="X-API-Key", auto_error=False)


def require(*scopes: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that authenticates the request's key and demands one of ``scopes``."""

    async def dep(
        request: Request,
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        header_key: Annotated[str | None, Depends(_xkey)],
    ) -> Principal:
        svc = get_service(request)
        # the request guard (hashwatch.service.guards) authenticated the key before the
        # body was read; routes mounted without it fall back to checking here
        p = getattr(request.state, "principal", None)
        if p is None:
            presented = creds.credentials if creds else header_key
            if not presented:
                raise ApiError(401, "unauthenticated", "an API key is required",
                               {"WWW-Authenticate": "Bearer"})
            p = svc.verifier.verify(presented)
            if p is None:
                raise ApiError(401, "unauthenticated", "invalid or revoked API key",
                               {"WWW-Authenticate": "Bearer"})
        if not any(p.has(s) for s in scopes):
            raise ApiError(403, "forbidden", f"this key lacks the scope: {' or '.join(scopes)}")
        rate = p.rate_limit / svc.workers if p.rate_limit is not None else None
        wait = svc.limiter.check(p.key_id, rate)
        if wait:
            raise ApiError(429, "rate_limited", "too many requests for this key",
                           {"Retry-After": str(max(1, int(wait + 0.999)))})
        return p

    return dep


Hash = Annotated[Principal, Depends(require("hash", "match"))]
MatchP = Annotated[Principal, Depends(require("match"))]
Curate = Annotated[Principal, Depends(require("curate"))]
Read = Annotated[Principal, Depends(require("curate", "match"))]
Review = Annotated[Principal, Depends(require("review"))]
Admin = Annotated[Principal, Depends(require("admin"))]


def need_ready(svc: Service) -> None:
    """503 until the worker's index is loaded."""
    if not svc.ready.is_set():
        raise ApiError(503, "not_ready", "the index is still loading", {"Retry-After": "5"})


def audit(svc: Service, p: Principal, action: str, detail: dict[str, Any],
          list_id: int | None = None) -> None:
    """Audit a lookup before answering it (group-committed); no audit, no answer."""
    try:
        svc.auditor.write(p.name, action, detail, list_id)
    except AuditUnavailable as exc:
        log.error("%s", exc)
        raise ApiError(503, "audit_unavailable", "the audit log cannot be written; "
                       "lookups are refused until it can", {"Retry-After": "5"}) from None


async def audit_async(svc: Service, p: Principal, action: str, detail: dict[str, Any]) -> None:
    try:
        await svc.auditor.write_async(p.name, action, detail)
    except AuditUnavailable as exc:
        log.error("%s", exc)
        raise ApiError(503, "audit_unavailable", "the audit log cannot be written; "
                       "lookups are refused until it can", {"Retry-After": "5"}) from None


def list_or_404(svc: Service, name: str) -> Any:
    """The named list's ``ListInfo`` (404 ``unknown_list`` if there is none)."""
    try:
        return svc.store.get_list(name)
    except ListNotFound:
        raise ApiError(404, "unknown_list", f"no hash list named {snippet(name)!r}") from None


def check_lists(svc: Service, lists: Sequence[str] | None) -> list[str] | None:
    """The list names a match is restricted to (None = all); 404 for an unknown one."""
    if not lists:
        return None
    if len(lists) > MAX_LISTS:  # one lookup per name: bounded like every batch
        raise ApiError(422, "too_many_lists", f"at most {MAX_LISTS} list names per request")
    for name in lists:
        list_or_404(svc, name)
    return list(lists)


def _presented_key(headers: Headers) -> str | None:
    auth = headers.get("authorization", "")
    scheme, _, cred = auth.partition(" ")
    if scheme.lower() == "bearer" and cred.strip():
        return cred.strip()
    return headers.get("x-api-key") or None


def _unauthenticated(message: str) -> JSONResponse:
    return error_response(401, "unauthenticated", message, {"WWW-Authenticate": "Bearer"})


def authenticate_request(scope: Scope, headers: Headers) -> JSONResponse | None:
    """The request guard's key check, before any body is read: None (go on, principal in
    ``scope["state"]``) or the 401/429/503 to send. Failed attempts are recorded."""
    app = scope.get("app")
    svc = getattr(getattr(app, "state", None), "service", None)
    if svc is None:
        return error_response(503, "not_ready", "service is starting", {"Retry-After": "5"})
    client = scope.get("client") or ("unknown", 0)
    source = str(client[0])
    wait = svc.auth_failures.throttled(source)
    presented = _presented_key(headers)
    if wait and not (presented and svc.verifier.is_known_key(presented)):
        # a source that keeps failing gets no more lookups of unknown keys (database
        # reads) until it slows down; keys that exist are still checked, so real clients
        # sharing the address (a proxy, a NAT) are not locked out by someone else's flood
        svc.auth_failures.refused(source)
        return error_response(429, "too_many_failures", "too many failed authentication "
                              "attempts from this address",
                              {"Retry-After": str(max(1, int(wait + 0.999)))})
    if presented is None:
        svc.auth_failures.record(source, None, "missing")
        return _unauthenticated("an API key is required")
    p = svc.verifier.verify(presented)
    if p is None:
        key_id = presented.split("_")[1][:12] if presented.startswith("hw_") else None
        svc.auth_failures.record(source, key_id, "invalid_or_revoked")
        return _unauthenticated("invalid or revoked API key")
    scope.setdefault("state", {})["principal"] = p
    return None
