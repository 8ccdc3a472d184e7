"""``/v1/lists/{name}/webhooks``, ``/v1/webhooks`` and ``/v1/outbox``: signed match
notifications (admin scope). The signing secret is shown once, at creation."""

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from hashwatch.service import webhooks as wh
from hashwatch.service.deps import API, Admin, SmallId, Svc, list_or_404
from hashwatch.service.destinations import DestinationError
from hashwatch.service.errors import ApiError

router = APIRouter(prefix=API, tags=["webhooks"])


class WebhookIn(BaseModel):
    url: str = Field(min_length=8, max_length=2000)


@router.post("/lists/{name}/webhooks", status_code=201)
def webhook_create(p: Admin, svc: Svc, name: str, body: WebhookIn) -> dict[str, Any]:
    """Add a webhook; the signing secret is returned once. The URL must be http(s), carry
    no credentials, and resolve only to addresses the destination rules allow (public,
    or a network listed in ``WEBHOOK_ALLOWED_NETWORKS``); checked again at every delivery."""
    list_or_404(svc, name)
    try:
        return wh.create_webhook(svc.store, name, body.url, actor=p.name,
                                 policy=svc.webhook_policy)
    except DestinationError as exc:
        raise ApiError(exc.status, exc.code, f"webhook URL refused: {exc.message}") from None


@router.get("/lists/{name}/webhooks")
def webhook_index(p: Admin, svc: Svc, name: str) -> dict[str, Any]:
    list_or_404(svc, name)
    return {"webhooks": wh.list_webhooks(svc.store, name)}


@router.delete("/webhooks/{webhook_id}")
def webhook_delete(p: Admin, svc: Svc, webhook_id: SmallId) -> dict[str, Any]:
    if not wh.delete_webhook(svc.store, webhook_id, actor=p.name):
        raise ApiError(404, "unknown_webhook", f"no webhook {webhook_id}")
    return {"deleted": webhook_id}


@router.get("/outbox")
def outbox_index(p: Admin, svc: Svc,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    return {"events": wh.outbox_rows(svc.store, limit)}
