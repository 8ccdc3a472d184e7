"""``/v1/review/items``: the human review queue (review scope), ``/v1/allow-list`` (its
scoped allow-list), and the review UI page (``/review``, static; its data comes from the
API with the reviewer's key). Thumbnails are blurred and greyscale; the clear preview is
served only on an explicit, audited reveal. A review key sees only its own queue's items,
named by random ids (see :mod:`hashwatch.service.review`)."""

from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from hashwatch.service import review as review_mod
from hashwatch.service.auth import Principal
from hashwatch.service.deps import API, MAX_ID32, AfterId, Curate, Review, Svc, require
from hashwatch.service.errors import ApiError
from hashwatch.service.state import Service

router = APIRouter(prefix=f"{API}/review", tags=["review"])
allow_router = APIRouter(prefix=f"{API}/allow-list", tags=["review"])
ReviewOrCurate = Annotated[Principal, Depends(require("review", "curate"))]
ui_router = APIRouter(include_in_schema=False)

_JPEG = {200: {"content": {"image/jpeg": {}}}}


class DecisionIn(BaseModel):
    decision: Literal["confirm", "false_positive", "escalate"]
    allow_list: bool = Field(default=False, description="false positives only: propose "
                             "allow-listing this content for the entries it matched "
                             "perceptually (active at once for curate keys, else after a "
                             "second person approves)")
    note: str = Field(default="", max_length=2000)


# a review item's public id: "ri_" + 22 url-safe characters (128 random bits)
PublicId = Annotated[str, PathParam(pattern=r"^ri_[A-Za-z0-9_-]{22}$",
                                    description="review item id (random, not a counter)")]
AllowId = Annotated[int, PathParam(ge=1, le=MAX_ID32)]


def queue_of(p: Principal) -> str | None:
    """The queue a key may see: its own; every queue for admin keys."""
    return None if "admin" in p.scopes else p.queue


def allow_queue_of(p: Principal) -> str | None:
    """The allow-list rows a key may see and approve: every row for curate (and admin)
    keys, else the rows proposed from its own queue's items."""
    return None if p.has("curate") else p.queue


def _missing(item_id: str) -> ApiError:
    # the same answer for an item of another queue as for no item: nothing to enumerate
    return ApiError(404, "unknown_item", "no such review item in your queue")


def _item_or_404(svc: Service, p: Principal, item_id: str) -> dict[str, Any]:
    try:
        return review_mod.get_item(svc.store, item_id, queue=queue_of(p))
    except review_mod.ItemNotFound:
        raise _missing(item_id) from None


def _image(svc: Service, p: Principal, item_id: str, which: str) -> Response:
    try:
        data = review_mod.item_image(svc.store, item_id, which, queue=queue_of(p))
    except review_mod.ItemNotFound:
        raise _missing(item_id) from None
    if not data:
        raise ApiError(404, "no_image", "no image kept for this item (deleted after the "
                       "decision's retention)")
    return Response(data, media_type="image/jpeg",
                    headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})


@router.get("/items")
def review_index(p: Review, svc: Svc,
                 status: Annotated[Literal["pending", "confirmed", "false_positive",
                                           "escalated", "all"], Query()] = "pending",
                 after: Annotated[str | None, Query(pattern=r"^ri_[A-Za-z0-9_-]{22}$",
                                                    description="the last id of the "
                                                    "previous page")] = None,
                 limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
    """Items of the key's own review queue (admin: every queue), oldest first."""
    try:
        items = review_mod.list_items(svc.store, None if status == "all" else status,
                                      limit, after, queue=queue_of(p))
    except review_mod.ItemNotFound:
        raise _missing(after or "") from None
    return {"items": items, "next_after": items[-1]["id"] if items else None}


@router.get("/items/{item_id}")
def review_show(p: Review, svc: Svc, item_id: PublicId) -> dict[str, Any]:
    return _item_or_404(svc, p, item_id)


@router.get("/items/{item_id}/thumb", response_class=Response, responses=_JPEG)
def review_thumb(p: Review, svc: Svc, item_id: PublicId) -> Response:
    """The blurred greyscale thumbnail (the default view)."""
    return _image(svc, p, item_id, "thumb")


@router.get("/items/{item_id}/preview", response_class=Response, responses=_JPEG)
def review_preview(p: Review, svc: Svc, item_id: PublicId) -> Response:
    """The clear preview: only on an explicit reveal, and audited."""
    resp = _image(svc, p, item_id, "preview")
    svc.store.audit(p.name, "review.reveal", {"item": item_id})
    return resp


@router.post("/items/{item_id}/decision")
def review_decide(p: Review, svc: Svc, item_id: PublicId, body: DecisionIn) -> dict[str, Any]:
    """Decide an item of your queue. Its images are deleted ``review_image_retention``
    seconds later. ``allow_list`` (false positives) proposes scoped allow-list rows."""
    try:
        item = review_mod.decide(svc.store, item_id, body.decision, actor=p.name,
                                 note=body.note, allow=body.allow_list, queue=queue_of(p),
                                 can_curate=p.has("curate"),
                                 retention=svc.settings.review_image_retention)
    except review_mod.ItemNotFound:
        raise _missing(item_id) from None
    except ValueError as exc:
        raise ApiError(422, "invalid_decision", str(exc)) from None
    if body.allow_list:
        svc.allow.refresh()
    return item


# -- allow-list ------------------------------------------------------------------------
@allow_router.get("")
def allow_index(p: ReviewOrCurate, svc: Svc,
                status: Annotated[Literal["pending", "active", "removed", "all"],
                                  Query()] = "all",
                after_id: AfterId = 0,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    """Allow-list rows: each silences perceptual matches of one list entry for one
    content hash (sha256, or pdq within 16 bits); never an exact match. A review key sees
    the rows proposed from its own queue; curate keys see all."""
    rows = review_mod.list_allow(svc.store, None if status == "all" else status, limit,
                                 after_id, queue=allow_queue_of(p))
    return {"entries": rows, "next_after_id": rows[-1]["id"] if rows else None}


@allow_router.post("/{allow_id}/approve")
def allow_approve(p: ReviewOrCurate, svc: Svc, allow_id: AllowId) -> dict[str, Any]:
    """Activate a pending row: a key with curate scope, or a reviewer of the row's queue
    other than the one who proposed it (two-person rule). Audited."""
    try:
        row = review_mod.approve_allow(svc.store, allow_id, actor=p.name,
                                       can_curate=p.has("curate"), queue=allow_queue_of(p))
    except review_mod.AllowListError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None
    svc.allow.refresh()
    return row


@allow_router.delete("/{allow_id}")
def allow_remove(p: Curate, svc: Svc, allow_id: AllowId) -> dict[str, Any]:
    """Remove a row (curate scope): the matches it silenced alert again. Audited."""
    try:
        row = review_mod.remove_allow(svc.store, allow_id, actor=p.name)
    except review_mod.AllowListError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None
    svc.allow.refresh()
    return row


@ui_router.get("/review")
def review_page() -> HTMLResponse:
    template = resources.files("hashwatch.service") / "templates" / "review.html"
    return HTMLResponse(template.read_text(encoding="utf-8"), headers={
        "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; "
        "style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
        "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})
