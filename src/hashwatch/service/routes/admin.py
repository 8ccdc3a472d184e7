"""``/v1/keys`` and ``/v1/audit``: API keys (shown once, stored as salted hashes) and the
append-only audit log (admin scope)."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from hashwatch.service.auth import KeyError_, create_key, list_keys, revoke_key
from hashwatch.service.deps import API, Admin, AfterId, Svc
from hashwatch.service.errors import ApiError

router = APIRouter(prefix=API, tags=["admin"])


class KeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    scopes: list[Literal["hash", "match", "curate", "review", "admin"]] = Field(
        min_length=1, max_length=5)
    rate_limit: float | None = Field(default=None, ge=0, lt=1e9)
    queue: str | None = Field(default=None, min_length=1, max_length=200,
                              description="review queue: where this key's matches go "
                              "(match keys) or what it reviews (review keys)")


@router.post("/keys", status_code=201)
def key_create(p: Admin, svc: Svc, body: KeyIn) -> dict[str, Any]:
    """Create an API key; the key is returned once and stored only as a salted hash."""
    try:
        key = create_key(svc.store, body.name, body.scopes, actor=p.name,
                         rate_limit=body.rate_limit, queue=body.queue)
    except KeyError_ as exc:
        raise ApiError(422 if "invalid" in str(exc) else 409, "invalid_key", str(exc)) from None
    return {"name": body.name, "key": key}


@router.get("/keys")
def key_index(p: Admin, svc: Svc) -> dict[str, Any]:
    return {"keys": list_keys(svc.store)}


@router.delete("/keys/{name}")
def key_revoke(p: Admin, svc: Svc, name: str) -> dict[str, Any]:
    try:
        revoke_key(svc.store, name, actor=p.name)
    except KeyError_ as exc:
        raise ApiError(404, "unknown_key", str(exc)) from None
    svc.verifier.forget()
    return {"revoked": name}


@router.get("/audit")
def audit_index(p: Admin, svc: Svc, after_id: AfterId = 0,
                limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> dict[str, Any]:
    return {"events": list(svc.store.iter_audit(after_id, limit))}


@router.post("/index/reconcile", tags=["admin"])
def index_reconcile(p: Admin, svc: Svc,
                          repair: Annotated[bool, Query()] = True) -> dict[str, Any]:
    """Check this worker's PDQ index against the store now (per list: count and digest of
    live entries) and repair any difference; on PostgreSQL every other worker is asked to
    do the same. The last report of each worker is in its /v1/health/ready."""
    if svc.matcher is None:
        raise ApiError(503, "not_ready", "the index is still loading", {"Retry-After": "5"})
    rep = svc.reconcile_now(repair=repair)
    if svc.store.dialect == "postgresql":
        from hashwatch.store.listen import RECONCILE_CHANNEL, notify

        notify(svc.store.engine, RECONCILE_CHANNEL, svc.worker_id)  # the others, not us
    svc.store.audit(p.name, "index.reconcile", {"differences": rep.differences,
                                                "repaired": rep.repaired})
    return rep.as_dict()
