"""``/v1/health``: liveness and readiness (no key needed; no data)."""

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from hashwatch.service.deps import API
from hashwatch.service.errors import error_response

router = APIRouter(prefix=f"{API}/health", tags=["health"])


@router.get("/live")
def live() -> dict[str, str]:
    """Liveness: the process answers. No key needed (no data)."""
    return {"status": "ok"}


@router.get("/ready", responses={503: {}})
def ready(request: Request) -> Response:
    """Readiness: 200 once the index is loaded and current. No key needed."""
    svc = getattr(request.app.state, "service", None)
    if svc is None or not svc.ready.is_set():
        return error_response(503, "not_ready",
                              (svc.load_error if svc else None) or "index loading")
    m = svc.matcher
    return JSONResponse({"status": "ready", "index_size": len(m.index),
                         "feed_position": m.position, "last_refresh": svc.last_refresh})
