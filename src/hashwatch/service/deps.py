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
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from hashwatch.service.audit import AuditUnavailable
from hashwatch.service.auth import Principal
from hashwatch.service.errors import ApiError
from hashwatch.service.state import Service
from hashwatch.store import ListNotFound

log = logging.getLogger("hashwatch.service")

API = "/v1"
MAX_ID = 2**62  # ids are BIGINT; larger numbers are a 422, not a database overflow
ItemId = Annotated[int, PathParam(ge=1, le=MAX_ID)]
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


def audit(svc: Service, p: Principal, action: str, detail: dict[str, Any]) -> None:
    """Audit a lookup before answering it (group-committed); no audit, no answer."""
    try:
        svc.auditor.write(p.name, action, detail)
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
        raise ApiError(404, "unknown_list", f"no hash list named {name[:200]!r}") from None


def check_lists(svc: Service, lists: Sequence[str] | None) -> list[str] | None:
    """The list names a match is restricted to (None = all); 404 for an unknown one."""
    if not lists:
        return None
    for name in lists:
        list_or_404(svc, name)
    return list(lists)
