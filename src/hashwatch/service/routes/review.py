"""``/v1/review/items``: the human review queue (review scope), and the review UI page
(``/review``, static; its data comes from the API with the reviewer's key). Thumbnails are
blurred and greyscale; the clear preview is served only on an explicit, audited reveal."""

from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from hashwatch.service import review as review_mod
from hashwatch.service.deps import API, AfterId, ItemId, Review, Svc
from hashwatch.service.errors import ApiError
from hashwatch.service.state import Service

router = APIRouter(prefix=f"{API}/review", tags=["review"])
ui_router = APIRouter(include_in_schema=False)

_JPEG = {200: {"content": {"image/jpeg": {}}}}


class DecisionIn(BaseModel):
    decision: Literal["confirm", "false_positive", "escalate"]
    allow_list: bool = False
    note: str = Field(default="", max_length=2000)


def _item_or_404(svc: Service, item_id: int) -> dict[str, Any]:
    try:
        return review_mod.get_item(svc.store, item_id)
    except review_mod.ItemNotFound:
        raise ApiError(404, "unknown_item", f"no review item {item_id}") from None


def _image(svc: Service, item_id: int, which: str) -> Response:
    try:
        data = review_mod.item_image(svc.store, item_id, which)
    except review_mod.ItemNotFound:
        raise ApiError(404, "unknown_item", f"no review item {item_id}") from None
    if not data:
        raise ApiError(404, "no_image", "no image kept for this item")
    return Response(data, media_type="image/jpeg",
                    headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})


@router.get("/items")
def review_index(p: Review, svc: Svc,
                 status: Annotated[Literal["pending", "confirmed", "false_positive",
                                           "escalated", "all"], Query()] = "pending",
                 after_id: AfterId = 0,
                 limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
    items = review_mod.list_items(svc.store, None if status == "all" else status,
                                  limit, after_id)
    return {"items": items}


@router.get("/items/{item_id}")
def review_show(p: Review, svc: Svc, item_id: ItemId) -> dict[str, Any]:
    return _item_or_404(svc, item_id)


@router.get("/items/{item_id}/thumb", response_class=Response, responses=_JPEG)
def review_thumb(p: Review, svc: Svc, item_id: ItemId) -> Response:
    """The blurred greyscale thumbnail (the default view)."""
    return _image(svc, item_id, "thumb")


@router.get("/items/{item_id}/preview", response_class=Response, responses=_JPEG)
def review_preview(p: Review, svc: Svc, item_id: ItemId) -> Response:
    """The clear preview: only on an explicit reveal, and audited."""
    resp = _image(svc, item_id, "preview")
    svc.store.audit(p.name, "review.reveal", {"item": item_id})
    return resp


@router.post("/items/{item_id}/decision")
def review_decide(p: Review, svc: Svc, item_id: ItemId, body: DecisionIn) -> dict[str, Any]:
    _item_or_404(svc, item_id)
    try:
        item = review_mod.decide(svc.store, item_id, body.decision, actor=p.name,
                                 note=body.note, allow=body.allow_list)
    except ValueError as exc:
        raise ApiError(422, "invalid_decision", str(exc)) from None
    if body.allow_list:
        svc.allow.refresh()
    return item


@ui_router.get("/review")
def review_page() -> HTMLResponse:
    template = resources.files("hashwatch.service") / "templates" / "review.html"
    return HTMLResponse(template.read_text(encoding="utf-8"), headers={
        "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; "
        "style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
        "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})
