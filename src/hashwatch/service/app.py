"""The HTTP service: ``create_app(settings)`` builds the FastAPI app.

One process = one worker: it opens the store, builds or loads the PDQ index in the
background (readiness fails until then), and follows the change feed so entries added by
any process become matchable here (deltas only, never a rebuild). Webhook events go through
the outbox table and a delivery thread. Every request carries an API key; every match lookup
and list change is audited.

The routes live in :mod:`hashwatch.service.routes`, one module per resource; the worker's
state in :mod:`hashwatch.service.state`; authentication and shared dependencies in
:mod:`hashwatch.service.deps`; errors in :mod:`hashwatch.service.errors`.
"""

from contextlib import asynccontextmanager
from importlib import resources

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from hashwatch import __version__
from hashwatch.service.deps import authenticate_request
from hashwatch.service.errors import ERROR_RESPONSES, install_error_handlers
from hashwatch.service.guards import RequestGuard
from hashwatch.service.routes import admin, health, hma, lists, match, review, webhooks
from hashwatch.service.settings import Settings
from hashwatch.service.state import Service
from hashwatch.store.redact import install_log_redaction


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service app for ``settings`` (default: from ``HASHWATCH_*`` variables)."""
    settings = settings or Settings.from_env()
    install_log_redaction()  # no database password in any log line of this worker

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        svc = Service(settings)
        app.state.service = svc
        svc.start()
        try:
            yield
        finally:
            svc.stop()

    app = FastAPI(
        title="hashwatch",
        version=__version__,
        description="Hash uploads, match them against known-image hash lists, notify and "
        "review. Every /v1 endpoint except health needs an API key "
        "(`Authorization: Bearer hw_...`), checked before the request body is read. "
        f"Limits: JSON bodies {settings.max_json_bytes} bytes, uploads "
        f"{settings.max_upload_bytes} bytes (413 beyond); /v1/match/hashes takes at most "
        "1,000 hashes and /v1/lists/{name}/entries 10,000 entries per request, list filters "
        "at most 100 names (422 beyond). Errors are `{\"error\": {\"code\", "
        "\"message\"}}` and never repeat more than a few bytes of the input.",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
        docs_url=None,  # Swagger UI loads from a CDN: not served
        redoc_url=None,
    )
    app.state.service = None
    # size limits, authentication and hostile JSON, before any router reads a body
    app.add_middleware(RequestGuard, max_upload_bytes=settings.max_upload_bytes,
                       max_json_bytes=settings.max_json_bytes,
                       authenticate=authenticate_request)
    install_error_handlers(app)
    for r in (health.router, match.router, lists.router, webhooks.router, admin.router,
              review.router, review.allow_router, review.ui_router, hma.router):
        app.include_router(r)
    if settings.private_dir:
        from hashwatch.service.routes import private

        app.include_router(private.build_router(settings.private_dir))
    static_dir = resources.files("hashwatch.service") / "static"
    app.mount("/static", StaticFiles(directory=str(static_dir)), name="static")
    return app


def app_from_env() -> FastAPI:
    """Uvicorn factory for ``--workers N`` (settings come from HASHWATCH_* variables)."""
    return create_app(Settings.from_env())
