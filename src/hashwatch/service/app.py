"""The HTTP service: ``create_app(settings)`` builds the FastAPI app.

One process = one worker: it opens the store, builds or loads the PDQ index in the
background (readiness fails until then), and polls the change feed every
``refresh_interval`` seconds so entries added by any process become matchable here
(deltas only, never a rebuild). Webhook events go through the outbox table and a delivery
thread. Every request carries an API key; every match lookup and list change is audited.
"""


import dataclasses
import hashlib
import io
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hashwatch import __version__
from hashwatch.service import review as review_mod
from hashwatch.service import webhooks as wh
from hashwatch.service.audit import AuditUnavailable, AuditWriter
from hashwatch.service.auth import (
    KeyError_,
    KeyVerifier,
    Principal,
    create_key,
    list_keys,
    revoke_key,
)
from hashwatch.service.private_api import add_private_routes
from hashwatch.service.ratelimit import RateLimiter
from hashwatch.service.settings import Settings
from hashwatch.service.uploads import (
    DecodeError,
    VideoUnsupported,
    blurred_thumbnail,
    clear_preview,
    hash_bytes,
    hash_video_bytes,
    looks_like_video,
)
from hashwatch.store import ListExists, ListNotFound, Store, StoreError

log = logging.getLogger("hashwatch.service")

API = "/v1"
MAX_ID = 2**62  # ids are BIGINT; larger numbers are a 422, not a database overflow
ItemId = Annotated[int, PathParam(ge=1, le=MAX_ID)]
AfterId = Annotated[int, Query(ge=0, le=MAX_ID)]
INLINE_QUERIES = 8  # match requests up to this many PDQ hashes search in the event loop
IMPORT_MAX_BYTES = 4 * 1024 * 1024 * 1024  # bulk list imports may be large; streamed to disk


# -- errors ---------------------------------------------------------------------------
class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


class BodyTooLarge(Exception):
    pass


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None,
           **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"error": {"code": code, "message": message, **extra}}
    return JSONResponse(body, status_code=status, headers=headers)


_DECODE_STATUS = {"too_large": (413, "image_too_large"), "not_an_image": (415, "not_an_image"),
                  "unsupported": (415, "unsupported_image"), "truncated": (422, "truncated_image")}


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
                    resp = _error(413, "too_large", f"request body over {limit} bytes")
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


# -- request / response models --------------------------------------------------------
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


class HashQuery(BaseModel):
    signal_type: str = Field(min_length=1, max_length=64, examples=["pdq"])
    value: str = Field(min_length=1, max_length=400)
    quality: int | None = Field(default=None, ge=0, le=100)
    ref: str = Field(default="", max_length=500, description="your id for this content")


class MatchHashesIn(BaseModel):
    hashes: list[HashQuery] = Field(min_length=1, max_length=1000)
    lists: list[str] | None = Field(default=None, max_length=100)
    notify: bool = Field(default=True, description="send webhook events for matches")


class ListIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    source: str = Field(default="", max_length=500)
    jurisdiction: str = Field(default="", max_length=100)
    category_scheme: str = Field(default="", max_length=50)
    description: str = Field(default="", max_length=10_000)


class ListPatch(BaseModel):
    enabled: bool = Field(strict=True)


class EntryBody(BaseModel):
    signal_type: str = Field(min_length=1, max_length=64)
    value: str = Field(min_length=1, max_length=400)
    category: str | None = Field(default=None, max_length=120, examples=["uk:A"])
    labels: list[str] = Field(default_factory=list, max_length=50)
    ref: str = Field(default="", max_length=500)


class EntriesIn(BaseModel):
    entries: list[EntryBody] = Field(min_length=1, max_length=10_000)


class RemoveIn(BaseModel):
    ids: list[Annotated[int, Field(strict=True, ge=1, le=MAX_ID)]] = Field(
        min_length=1, max_length=10_000)


class WebhookIn(BaseModel):
    url: str = Field(min_length=8, max_length=2000)


class KeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    scopes: list[Literal["hash", "match", "curate", "review", "admin"]] = Field(
        min_length=1, max_length=5)
    rate_limit: float | None = Field(default=None, ge=0)


class DecisionIn(BaseModel):
    decision: Literal["confirm", "false_positive", "escalate"]
    allow_list: bool = False
    note: str = Field(default="", max_length=2000)


class UrlIn(BaseModel):
    url: str = Field(min_length=8, max_length=2000)
    lists: list[str] | None = None
    ref: str = Field(default="", max_length=500)


# -- the service state ----------------------------------------------------------------
class Service:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store.open(settings.db)
        self.verifier = KeyVerifier(self.store)
        self.auditor = AuditWriter(self.store)
        workers = max(1, int(os.environ.get("HASHWATCH_WORKERS", "1")))
        self.workers = workers
        self.limiter = RateLimiter(settings.rate_limit / workers, settings.rate_burst_seconds)
        self.allow = review_mod.AllowList(self.store)
        self.matcher: Any = None
        self.ready = threading.Event()
        self.load_error: str | None = None
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self.last_refresh = 0.0
        self.delivery: wh.DeliveryWorker | None = None
        # one feed replay at a time: the poller and a request's refresh_now() must not
        # interleave their reads of the feed position
        self._refresh_lock = threading.Lock()

    def start(self) -> None:
        self._poller = threading.Thread(target=self._poll, name="hashwatch-refresh", daemon=True)
        self._poller.start()
        if self.settings.run_webhook_worker:
            self.delivery = wh.DeliveryWorker(
                self.store, timeout=self.settings.webhook_timeout,
                max_attempts=self.settings.webhook_max_attempts,
                backoff_base=self.settings.webhook_backoff_base,
                backoff_max=self.settings.webhook_backoff_max,
                poll_interval=self.settings.webhook_poll_interval)
            self.delivery.start()

    def stop(self) -> None:
        self._stop.set()
        if self.delivery is not None:
            self.delivery.stop()
        if self._poller is not None:
            self._poller.join(timeout=10)
        self.auditor.close()
        self.store.close()

    def _poll(self) -> None:
        from hashwatch.matcher import Matcher

        try:
            self.matcher = Matcher(self.store, index_path=self.settings.index_file(),
                                   mmap=self.settings.index_mmap)
            self.allow.refresh()
            self.last_refresh = time.time()
            self.ready.set()
        except Exception as exc:  # reported by readiness, not swallowed
            log.exception("index load failed")
            self.load_error = f"{type(exc).__name__}: {exc}"
            return
        while not self._stop.wait(self.settings.refresh_interval):
            try:
                self.refresh_now()
            except Exception:
                log.exception("change-feed refresh failed; retrying")

    def refresh_now(self) -> None:
        """Apply pending changes in this worker at once (after its own writes)."""
        with self._refresh_lock:
            if self.matcher is not None:
                self.matcher.refresh()
            self.allow.refresh()
            self.last_refresh = time.time()


# -- matching helpers -----------------------------------------------------------------
def _validate_hash(signal: str, value: str) -> tuple[Any, str]:
    from hashwatch.signals import InvalidSignalValue, UnknownSignalType, get_signal_type

    try:
        st = get_signal_type(signal.strip().lower())
    except (UnknownSignalType, KeyError):
        raise ApiError(422, "unknown_signal_type", f"unknown signal type {signal[:64]!r}") from None
    try:
        return st, st.validate(value.strip())
    except (InvalidSignalValue, ValueError) as exc:
        raise ApiError(422, "malformed_hash", f"malformed {st.name} value: {exc}") from None


HashQ = tuple[str, str, int | None]  # (signal type, normalised value, quality)


def pdq_hits(svc: Service, queries: Sequence[HashQ]) -> list[list[tuple[int, int]] | None]:
    """Index phase: (entry id, distance) candidates per PDQ query (None for other signals
    and for PDQ below the quality floor). No database access."""
    from hashwatch.matcher import hex_to_codes

    m = svc.matcher
    out: list[list[tuple[int, int]] | None] = [None] * len(queries)
    use = [i for i, (sig, _v, q) in enumerate(queries)
           if sig == "pdq" and (q is None or q >= m.min_quality)]
    if use:
        hits = m.index.search_many(hex_to_codes([queries[i][1] for i in use]), m.pdq_threshold)
        for i, h in zip(use, hits, strict=True):
            out[i] = h
    return out


def resolve_matches(svc: Service, queries: Sequence[HashQ],
                    hits: Sequence[list[tuple[int, int]] | None],
                    lists: Sequence[str] | None) -> list[list[dict[str, Any]]]:
    """Store phase: PDQ candidates -> active entries (list state applied here); exact
    signals looked up, one query per signal type."""
    m = svc.matcher
    out: list[list[dict[str, Any]]] = [[] for _ in queries]
    exact: dict[str, list[int]] = {}
    for i, (sig, _v, _q) in enumerate(queries):
        if sig != "pdq":
            exact.setdefault(sig, []).append(i)
        elif hits[i]:
            # the matcher's own plain-PDQ rule (full views only, one match per known image)
            out[i] = [x.as_dict() for x in m.resolve_pdq_hits(hits[i], lists)]
    for sig, idxs in exact.items():
        found: dict[str, list[Any]] = {}
        for e in m.store.lookup(sig, [queries[i][1] for i in idxs], lists=lists):
            found.setdefault(e.value, []).append(e)
        for i in idxs:
            out[i] = [_entry_match(e, 0, True) for e in found.get(queries[i][1], [])]
    return out


def match_values(svc: Service, queries: Sequence[HashQ],
                 lists: Sequence[str] | None) -> list[list[dict[str, Any]]]:
    """Matches for each query: one index pass, then one store round per signal type."""
    return resolve_matches(svc, queries, pdq_hits(svc, queries), lists)


def _entry_match(e: Any, distance: int, exact: bool) -> dict[str, Any]:
    d = {"list": e.list_name, "entry_id": e.id, "ref": e.source_ref, "signal": e.signal_type,
         "distance": distance, "category": str(e.category) if e.category else None,
         "exact": exact}
    if e.variant:
        d["variant"] = e.variant
    return d


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


def _check_lists(svc: Service, lists: Sequence[str] | None) -> list[str] | None:
    if not lists:
        return None
    for name in lists:
        try:
            svc.store.get_list(name)
        except ListNotFound:
            raise ApiError(404, "unknown_list", f"no hash list named {name[:200]!r}") from None
    return list(lists)


# -- the app --------------------------------------------------------------------------
def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    holder: dict[str, Service] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        svc = Service(settings)
        holder["svc"] = svc
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
        "(`Authorization: Bearer hw_...`).",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
        docs_url=None,  # Swagger UI loads from a CDN: not served
        redoc_url=None,
    )
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes, big_paths=("/import",))

    def svc_of() -> Service:
        svc = holder.get("svc")
        if svc is None:
            raise ApiError(503, "not_ready", "service is starting")
        return svc

    # ---- error handlers: every error is JSON, 4xx for bad input ----
    @app.exception_handler(ApiError)
    async def _api_error(_r: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(_r: Request, _exc: BodyTooLarge) -> JSONResponse:
        return _error(413, "too_large", "request body too large")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_r: Request, exc: RequestValidationError) -> JSONResponse:
        try:
            details = jsonable_encoder(exc.errors(), custom_encoder={bytes: lambda b: repr(b)[:80]})
            json.dumps(details)
        except Exception:
            details = [str(exc)[:2000]]
        return _error(422, "invalid_request", "the request does not match the API schema",
                      details=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_r: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_r: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return _error(500, "internal", "internal error (logged)")

    # ---- authentication ----
    bearer = HTTPBearer(auto_error=False, description="API key: `Bearer hw_<id>_<secret>`")
    xkey = APIKeyHeader(name="X-API-Key", auto_error=False)

    def require(*scopes: str) -> Callable[..., Principal]:
        async def dep(
            creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
            header_key: Annotated[str | None, Depends(xkey)],
        ) -> Principal:
            svc = svc_of()
            presented = creds.credentials if creds else header_key
            if not presented:
                raise ApiError(401, "unauthenticated", "an API key is required",
                               {"WWW-Authenticate": "Bearer"})
            p = svc.verifier.verify(presented)
            if p is None:
                raise ApiError(401, "unauthenticated", "invalid or revoked API key",
                               {"WWW-Authenticate": "Bearer"})
            if not any(p.has(s) for s in scopes):
                raise ApiError(403, "forbidden",
                               f"this key lacks the scope: {' or '.join(scopes)}")
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
        if not svc.ready.is_set():
            raise ApiError(503, "not_ready", "the index is still loading",
                           {"Retry-After": "5"})

    # ---- health ----
    @app.get(f"{API}/health/live", tags=["health"])
    def live() -> dict[str, str]:
        """Liveness: the process answers. No key needed (no data)."""
        return {"status": "ok"}

    @app.get(f"{API}/health/ready", tags=["health"], responses={503: {}})
    def ready() -> Response:
        """Readiness: 200 once the index is loaded and current. No key needed."""
        svc = holder.get("svc")
        if svc is None or not svc.ready.is_set():
            return _error(503, "not_ready", (svc.load_error if svc else None) or "index loading")
        m = svc.matcher
        return JSONResponse({"status": "ready", "index_size": len(m.index), "seq": m.seq,
                             "last_refresh": svc.last_refresh})

    # ---- upload reading ----
    async def read_upload(file: UploadFile) -> bytes:
        try:
            data = await file.read()
        except BodyTooLarge:
            raise ApiError(413, "too_large", "upload too large") from None
        if len(data) > settings.max_upload_bytes:
            raise ApiError(413, "too_large", f"upload over {settings.max_upload_bytes} bytes")
        if not data:
            raise ApiError(422, "empty_upload", "the uploaded file is empty")
        return data

    def hash_upload(data: bytes, name: str) -> Any:
        if looks_like_video(data):
            try:
                return hash_video_bytes(data, name, max_samples=settings.video_max_samples)
            except VideoUnsupported:
                raise ApiError(415, "video_not_supported",
                               "video hashing is not available in this build") from None
            except Exception as exc:  # VideoError: undecodable or audio-only
                reason = getattr(exc, "reason", "truncated")
                status, code = (415, "no_video_stream") if reason == "no_video" else (
                    422, "bad_video")
                raise ApiError(status, code, str(exc)[:300]) from None
        try:
            return hash_bytes(data, name, max_pixels=settings.max_pixels,
                              max_bytes=settings.max_upload_bytes)
        except DecodeError as exc:
            status, code = _DECODE_STATUS.get(exc.reason, (415, "not_an_image"))
            raise ApiError(status, code, str(exc)[:300]) from None

    def _hash_dict(h: Any, up: Any = None) -> dict[str, Any]:
        d = {"md5": h.md5, "sha1": h.sha1, "sha256": h.sha256, "pdq": h.pdq,
             "pdq_quality": h.pdq_quality, "width": h.width, "height": h.height,
             "format": h.format, "size": h.size}
        if up is not None and up.frames is not None:
            d["duration"] = up.duration
            d["frames"] = [{"t": t, "pdq": v, "quality": q} for t, v, q in up.frames]
        return d

    # ---- hash ----
    @app.post(f"{API}/hash", tags=["match"])
    async def hash_endpoint(p: Hash, file: Annotated[UploadFile, File()]) -> dict[str, Any]:
        """Hash an uploaded image: md5, sha1, sha256, PDQ (+ quality), dimensions."""
        data = await read_upload(file)
        up = await run_in_threadpool(hash_upload, data, file.filename or "upload")
        return {"hashes": _hash_dict(up.hashes, up)}

    # ---- match by upload ----
    def do_match_upload(svc: Service, p: Principal, data: bytes, name: str, ref: str,
                        lists: list[str] | None) -> dict[str, Any]:
        need_ready(svc)
        lists = _check_lists(svc, lists)
        up = hash_upload(data, name)
        h = up.hashes
        query_extras = getattr(svc.matcher, "query_extras", None)
        if query_extras is not None and up.pixels is not None and up.pixels.ndim == 3 \
                and hasattr(h, "extras"):
            # the robust tier (flips, crops, borders, rotations, screenshots) needs the
            # query views the matcher asks for, computed from the decoded pixels
            h = dataclasses.replace(h, extras=query_extras()(up.pixels))
        matches = [m.as_dict() for m in svc.matcher.match_hashes(h, lists)]
        if up.frames:  # video: every sampled frame's PDQ, best distance per known entry
            per = match_values(svc, [("pdq", v, q) for _t, v, q in up.frames], lists)
            best: dict[int, dict[str, Any]] = {}
            for (t, v, _q), ms in zip(up.frames, per, strict=True):
                for m in ms:
                    cur = best.get(m["entry_id"])
                    if cur is None or m["distance"] < cur["distance"]:
                        best[m["entry_id"]] = dict(m, frame_time=t, frame_pdq=v)
            matches += sorted(best.values(), key=lambda m: (m["distance"], m["entry_id"]))
        allow_listed = bool(matches) and (
            svc.allow.allowed(h.sha256, h.pdq)
            or any(svc.allow.allowed(None, m["frame_pdq"]) for m in matches
                   if m.get("frame_pdq")))
        if allow_listed:
            matches = []
        if h.pdq is None and matches:  # video: the review item keeps the matched frame
            fp = next((m["frame_pdq"] for m in matches if m.get("frame_pdq")), None)
            h = dataclasses.replace(h, pdq=fp)
        item_id = None
        events: list[str] = []
        if matches:
            if settings.review_queue and up.pixels is not None:
                item_id = review_mod.create_item(
                    svc.store, submitted_by=p.name, filename=ref or name, hashes=h,
                    matches=matches,
                    thumb=blurred_thumbnail(up.pixels, settings.review_thumb_side),
                    preview=clear_preview(up.pixels, settings.review_preview_side))
            content = {"ref": ref, "sha256": h.sha256, "md5": h.md5, "pdq": h.pdq,
                       "pdq_quality": h.pdq_quality, "review_item_id": item_id}
            events = wh.enqueue_match_events(svc.store, matches, content)
            if events and svc.delivery is not None:
                svc.delivery.wake()
        audit(svc, p, "match.upload", {
            "sha256": h.sha256, "ref": ref, "lists": lists,
            "result": [{"list": m["list"], "entry_id": m["entry_id"],
                        "distance": m["distance"]} for m in matches],
            "allow_listed": allow_listed, "review_item": item_id,
        })
        return {"hashes": _hash_dict(up.hashes, up), "matches": matches,
                "allow_listed": allow_listed,
                "review_item_id": item_id, "events": len(events)}

    def _split(text: str | None) -> list[str] | None:
        if not text:
            return None
        return [x.strip() for x in text.split(",") if x.strip()] or None

    @app.post(f"{API}/match/upload", tags=["match"])
    async def match_upload(
        p: MatchP, file: Annotated[UploadFile, File()],
        lists: Annotated[str | None, Form(max_length=5000,
                                          description="comma-separated list names")] = None,
        ref: Annotated[str, Form(max_length=500, description="your id for this content")] = "",
    ) -> dict[str, Any]:
        """Hash an uploaded image and match it (exact, then PDQ). Matches create a review
        item and webhook events (unless the content is allow-listed)."""
        data = await read_upload(file)
        return await run_in_threadpool(do_match_upload, svc_of(), p, data,
                                       file.filename or "upload", ref, _split(lists))

    @app.post(f"{API}/match/url", tags=["match"])
    def match_url(p: MatchP, body: UrlIn) -> dict[str, Any]:
        """Fetch an image from an allow-listed host and match it (disabled by default)."""
        from hashwatch.service.urlfetch import FetchError, fetch

        svc = svc_of()
        if not settings.url_fetch:
            raise ApiError(403, "url_fetch_disabled", "URL fetch is disabled on this service")
        try:
            data = fetch(body.url, allowed_hosts=settings.url_allowed_hosts,
                         allow_private=settings.url_allow_private,
                         max_bytes=min(settings.url_max_bytes, settings.max_upload_bytes),
                         timeout=settings.url_timeout)
        except FetchError as exc:
            svc.store.audit(p.name, "match.url.refused", {"url": body.url[:500],
                                                           "reason": exc.code})
            raise ApiError(exc.status, exc.code, exc.message) from None
        return do_match_upload(svc, p, data, body.url.rsplit("/", 1)[-1][:200] or "url",
                               body.ref or body.url[:500], body.lists)

    # ---- match by hash ----
    @app.post(f"{API}/match/hashes", tags=["match"])
    async def match_hashes(p: MatchP, body: MatchHashesIn) -> dict[str, Any]:
        """Match up to 1,000 hash values (md5, sha1, sha256 exactly; pdq within distance 31)."""
        svc = svc_of()
        need_ready(svc)
        lists = await run_in_threadpool(_check_lists, svc, body.lists) if body.lists else None
        queries: list[HashQ] = []
        for q in body.hashes:
            st, value = _validate_hash(q.signal_type, q.value)
            if not st.exact and st.name != "pdq":
                raise ApiError(422, "unsupported_signal_type",
                               f"signal type {st.name!r} cannot be matched by this service")
            queries.append((st.name, value, q.quality))
        # The common case (a few PDQ hashes, no hit) needs no database but the audit row:
        # search in the event loop (C, sub-millisecond per hash) and skip the thread hop.
        # Big batches and anything needing the store go to the thread pool.
        if len(queries) <= INLINE_QUERIES and all(q[0] == "pdq" for q in queries):
            hits = pdq_hits(svc, queries)
            if any(hits):
                results = await run_in_threadpool(resolve_matches, svc, queries, hits, lists)
            else:
                results = [[] for _ in queries]
        else:
            results = await run_in_threadpool(match_values, svc, queries, lists)
        out = []
        hit_log = []
        notify = []
        for q, (sig, value, _qual), matches in zip(body.hashes, queries, results, strict=True):
            allow_listed = False
            if matches and svc.allow.allowed(value if sig == "sha256" else None,
                                             value if sig == "pdq" else None):
                matches, allow_listed = [], True
            out.append({"signal_type": sig, "value": value, "ref": q.ref, "matches": matches,
                        "allow_listed": allow_listed})
            if matches:
                hit_log.extend({"list": m["list"], "entry_id": m["entry_id"],
                                "distance": m["distance"]} for m in matches)
                notify.append((q, sig, value, matches))
        events = 0
        if body.notify and notify:
            def enqueue() -> int:
                n = 0
                for q, sig, value, matches in notify:
                    n += len(wh.enqueue_match_events(
                        svc.store, matches, {"ref": q.ref, sig: value, "review_item_id": None}))
                return n

            events = await run_in_threadpool(enqueue)
            if events and svc.delivery is not None:
                svc.delivery.wake()
        digest = hashlib.sha256("\n".join(f"{s}:{v}" for s, v, _ in queries).encode()).hexdigest()
        await audit_async(svc, p, "match.hashes", {
            "n": len(queries), "query_sha256": digest, "lists": lists,
            "hits": len(hit_log), "result": hit_log[:200],
        })
        return {"results": out, "events": events}

    # ---- lists ----
    def _list_or_404(svc: Service, name: str) -> Any:
        try:
            return svc.store.get_list(name)
        except ListNotFound:
            raise ApiError(404, "unknown_list", f"no hash list named {name[:200]!r}") from None

    @app.get(f"{API}/lists", tags=["lists"])
    def lists_index(p: Read) -> dict[str, Any]:
        return {"lists": [i.as_dict() for i in svc_of().store.lists()]}

    @app.post(f"{API}/lists", tags=["lists"], status_code=201)
    def lists_create(p: Curate, body: ListIn) -> dict[str, Any]:
        try:
            info = svc_of().store.create_list(
                body.name, source=body.source, jurisdiction=body.jurisdiction,
                category_scheme=body.category_scheme, description=body.description,
                actor=p.name)
        except ListExists as exc:
            raise ApiError(409, "list_exists", str(exc)) from None
        except StoreError as exc:
            raise ApiError(422, "invalid_list", str(exc)) from None
        return info.as_dict()

    @app.get(f"{API}/lists/{{name}}", tags=["lists"])
    def lists_show(p: Read, name: str) -> dict[str, Any]:
        return _list_or_404(svc_of(), name).as_dict()

    @app.patch(f"{API}/lists/{{name}}", tags=["lists"])
    def lists_patch(p: Curate, name: str, body: ListPatch) -> dict[str, Any]:
        svc = svc_of()
        _list_or_404(svc, name)
        return svc.store.set_list_enabled(name, body.enabled, actor=p.name).as_dict()

    @app.delete(f"{API}/lists/{{name}}", tags=["lists"])
    def lists_delete(p: Curate, name: str) -> dict[str, Any]:
        """Soft delete: the list stops matching at once; rows and history stay."""
        svc = svc_of()
        _list_or_404(svc, name)
        svc.store.delete_list(name, actor=p.name)
        return {"deleted": name}

    @app.post(f"{API}/lists/{{name}}/entries", tags=["lists"], status_code=201)
    def entries_add(p: Curate, name: str, body: EntriesIn) -> dict[str, Any]:
        """Add entries (up to 10,000 per request; use /import for files)."""
        from hashwatch.formats._common import category_or_none, make_entry

        svc = svc_of()
        _list_or_404(svc, name)
        items = []
        for i, e in enumerate(body.entries):
            try:
                items.append(make_entry(e.signal_type, e.value,
                                        category=category_or_none(e.category),
                                        labels=e.labels, source_ref=e.ref))
            except ValueError as exc:
                raise ApiError(422, "malformed_entry", f"entry {i}: {exc}") from None
        res = svc.store.add_entries(name, items, actor=p.name)
        svc.refresh_now()
        return {"added": res.added, "duplicates": res.duplicates, "restored": res.restored,
                "ids": res.added_ids}

    @app.get(f"{API}/lists/{{name}}/entries", tags=["lists"])
    def entries_page(p: Curate, name: str, after_id: AfterId = 0,
                     limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> dict[str, Any]:
        from hashwatch.store.core import _row_to_entry
        from hashwatch.store.schema import entries as entries_t

        svc = svc_of()
        info = _list_or_404(svc, name)
        # keyset page straight from the store's entry query (constant cost at any depth)
        q = (svc.store._entry_query()
             .where(entries_t.c.list_id == info.id, entries_t.c.id > after_id)
             .order_by(entries_t.c.id).limit(limit))
        with svc.store.engine.connect() as conn:
            rows = [_row_to_entry(r).as_dict() for r in conn.execute(q)]
        return {"entries": rows, "next_after_id": rows[-1]["id"] if rows else None}

    @app.post(f"{API}/lists/{{name}}/entries/remove", tags=["lists"])
    def entries_remove(p: Curate, name: str, body: RemoveIn) -> dict[str, Any]:
        svc = svc_of()
        _list_or_404(svc, name)
        n = svc.store.remove_entries(name, body.ids, actor=p.name)
        svc.refresh_now()
        return {"removed": n}

    @app.post(f"{API}/lists/{{name}}/import", tags=["lists"],
              openapi_extra={"requestBody": {"content": {"application/octet-stream": {
                  "schema": {"type": "string", "format": "binary"}}}, "required": True}})
    async def entries_import(
        p: Curate, name: str, request: Request,
        format: Annotated[Literal["csv", "hashlines", "vics", "icse"], Query()] = "csv",
        signal: Annotated[str | None, Query(max_length=64)] = None,
        category: Annotated[str | None, Query(max_length=120)] = None,
    ) -> dict[str, Any]:
        """Bulk import a list file (request body = the file; streamed to a private temp
        file, then read row by row). Bad rows are counted and reported, good rows kept."""
        svc = svc_of()
        await run_in_threadpool(_list_or_404, svc, name)
        spool = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)  # noqa: SIM115
        try:
            try:
                async for chunk in request.stream():
                    spool.write(chunk)
            except BodyTooLarge:
                raise ApiError(413, "too_large", "import file too large") from None
            spool.seek(0)
            return await run_in_threadpool(_import_file, svc, p, name, spool, format, signal,
                                           category)
        finally:
            spool.close()

    def _import_file(svc: Service, p: Principal, name: str, spool: Any, fmt: str,
                     signal: str | None, category: str | None) -> dict[str, Any]:
        from hashwatch.formats import FormatError, RowError, reader
        from hashwatch.formats._common import category_or_none

        try:
            cat = category_or_none(category)
        except ValueError as exc:
            raise ApiError(422, "invalid_category", str(exc)) from None
        fh: Any = spool if fmt == "vics" else io.TextIOWrapper(spool, encoding="utf-8-sig",
                                                               newline="", errors="replace")
        errors: list[str] = []
        detail: dict[str, Any] = {"format": fmt, "errors": 0}  # read by add_entries at the end

        def good() -> Any:
            for item in reader(fmt)(fh, signal=signal, category=cat):
                if isinstance(item, RowError):
                    detail["errors"] += 1
                    if len(errors) < 20:
                        errors.append(str(item))
                else:
                    yield item

        try:
            res = svc.store.add_entries(name, good(), actor=p.name, action="entries.import",
                                        detail=detail)
        except (FormatError, ValueError, UnicodeDecodeError) as exc:
            raise ApiError(422, "bad_file", f"cannot read the file as {fmt}: {exc}"[:500]) from None
        finally:
            if fh is not spool:
                fh.detach()
        svc.refresh_now()
        return {"added": res.added, "duplicates": res.duplicates, "restored": res.restored,
                "errors": detail["errors"], "first_errors": errors}

    @app.get(f"{API}/lists/{{name}}/export", tags=["lists"],
             response_class=Response,
             responses={200: {"content": {"text/plain": {}, "application/json": {}}}})
    def entries_export(p: Curate, name: str,
                       format: Annotated[Literal["csv", "hashlines", "vics", "icse"],
                                         Query()] = "csv") -> Response:
        """Export a list's active entries (hashes and metadata only)."""
        from hashwatch.formats import writer

        svc = svc_of()
        _list_or_404(svc, name)
        fd, tmp = tempfile.mkstemp(prefix="hw-export-", suffix=f".{format}")  # 0600
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            n = writer(format)(svc.store.iter_entries(list_name=name), fh)
        svc.store.audit(p.name, "list.export", {"format": format, "entries": n},
                        list_name=name)
        from starlette.background import BackgroundTask

        media = "application/json" if format == "vics" else "text/plain; charset=utf-8"
        return FileResponse(tmp, media_type=media, filename=f"{name}.{format}",
                            background=BackgroundTask(os.unlink, tmp))

    # ---- webhooks ----
    @app.post(f"{API}/lists/{{name}}/webhooks", tags=["webhooks"], status_code=201)
    def webhook_create(p: Admin, name: str, body: WebhookIn) -> dict[str, Any]:
        """Add a webhook; the signing secret is returned once."""
        svc = svc_of()
        _list_or_404(svc, name)
        try:
            return wh.create_webhook(svc.store, name, body.url, actor=p.name)
        except ValueError as exc:
            raise ApiError(422, "invalid_webhook", str(exc)) from None

    @app.get(f"{API}/lists/{{name}}/webhooks", tags=["webhooks"])
    def webhook_index(p: Admin, name: str) -> dict[str, Any]:
        svc = svc_of()
        _list_or_404(svc, name)
        return {"webhooks": wh.list_webhooks(svc.store, name)}

    @app.delete(f"{API}/webhooks/{{webhook_id}}", tags=["webhooks"])
    def webhook_delete(p: Admin, webhook_id: ItemId) -> dict[str, Any]:
        if not wh.delete_webhook(svc_of().store, webhook_id, actor=p.name):
            raise ApiError(404, "unknown_webhook", f"no webhook {webhook_id}")
        return {"deleted": webhook_id}

    @app.get(f"{API}/outbox", tags=["webhooks"])
    def outbox_index(p: Admin, limit: Annotated[int, Query(ge=1, le=1000)] = 100
                     ) -> dict[str, Any]:
        return {"events": wh.outbox_rows(svc_of().store, limit)}

    # ---- keys & audit ----
    @app.post(f"{API}/keys", tags=["admin"], status_code=201)
    def key_create(p: Admin, body: KeyIn) -> dict[str, Any]:
        """Create an API key; the key is returned once and stored only as a salted hash."""
        try:
            key = create_key(svc_of().store, body.name, body.scopes, actor=p.name,
                             rate_limit=body.rate_limit)
        except KeyError_ as exc:
            raise ApiError(422 if "invalid" in str(exc) else 409, "invalid_key", str(exc)) from None
        return {"name": body.name, "key": key}

    @app.get(f"{API}/keys", tags=["admin"])
    def key_index(p: Admin) -> dict[str, Any]:
        return {"keys": list_keys(svc_of().store)}

    @app.delete(f"{API}/keys/{{name}}", tags=["admin"])
    def key_revoke(p: Admin, name: str) -> dict[str, Any]:
        svc = svc_of()
        try:
            revoke_key(svc.store, name, actor=p.name)
        except KeyError_ as exc:
            raise ApiError(404, "unknown_key", str(exc)) from None
        svc.verifier.forget()
        return {"revoked": name}

    @app.get(f"{API}/audit", tags=["admin"])
    def audit_index(p: Admin, after_id: AfterId = 0,
                    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> dict[str, Any]:
        return {"events": list(svc_of().store.iter_audit(after_id, limit))}

    # ---- review ----
    def _item_or_404(svc: Service, item_id: ItemId) -> dict[str, Any]:
        try:
            return review_mod.get_item(svc.store, item_id)
        except review_mod.ItemNotFound:
            raise ApiError(404, "unknown_item", f"no review item {item_id}") from None

    @app.get(f"{API}/review/items", tags=["review"])
    def review_index(p: Review,
                     status: Annotated[Literal["pending", "confirmed", "false_positive",
                                               "escalated", "all"], Query()] = "pending",
                     after_id: AfterId = 0,
                     limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
        items = review_mod.list_items(svc_of().store, None if status == "all" else status,
                                      limit, after_id)
        return {"items": items}

    @app.get(f"{API}/review/items/{{item_id}}", tags=["review"])
    def review_show(p: Review, item_id: ItemId) -> dict[str, Any]:
        return _item_or_404(svc_of(), item_id)

    def _image(svc: Service, item_id: int, which: str) -> Response:
        try:
            data = review_mod.item_image(svc.store, item_id, which)
        except review_mod.ItemNotFound:
            raise ApiError(404, "unknown_item", f"no review item {item_id}") from None
        if not data:
            raise ApiError(404, "no_image", "no image kept for this item")
        return Response(data, media_type="image/jpeg",
                        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})

    @app.get(f"{API}/review/items/{{item_id}}/thumb", tags=["review"],
             response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
    def review_thumb(p: Review, item_id: ItemId) -> Response:
        """The blurred greyscale thumbnail (the default view)."""
        return _image(svc_of(), item_id, "thumb")

    @app.get(f"{API}/review/items/{{item_id}}/preview", tags=["review"],
             response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
    def review_preview(p: Review, item_id: ItemId) -> Response:
        """The clear preview: only on an explicit reveal, and audited."""
        svc = svc_of()
        resp = _image(svc, item_id, "preview")
        svc.store.audit(p.name, "review.reveal", {"item": item_id})
        return resp

    @app.post(f"{API}/review/items/{{item_id}}/decision", tags=["review"])
    def review_decide(p: Review, item_id: ItemId, body: DecisionIn) -> dict[str, Any]:
        svc = svc_of()
        _item_or_404(svc, item_id)
        try:
            item = review_mod.decide(svc.store, item_id, body.decision, actor=p.name,
                                     note=body.note, allow=body.allow_list)
        except ValueError as exc:
            raise ApiError(422, "invalid_decision", str(exc)) from None
        if body.allow_list:
            svc.allow.refresh()
        return item

    # ---- private matching (threshold vouchers), when configured ----
    add_private_routes(app, API, settings.private_dir, svc_of, MatchP, Review, ApiError)

    # ---- the review UI (static; data comes from the API with the reviewer's key) ----
    static_dir = resources.files("hashwatch.service") / "static"
    template = (resources.files("hashwatch.service") / "templates" / "review.html")

    @app.get("/review", include_in_schema=False)
    def review_page() -> HTMLResponse:
        return HTMLResponse(template.read_text(encoding="utf-8"), headers={
            "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; "
            "style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
            "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})

    app.mount("/static", StaticFiles(directory=str(static_dir)), name="static")
    return app


def app_from_env() -> FastAPI:
    """Uvicorn factory for ``--workers N`` (settings come from HASHWATCH_* variables)."""
    return create_app(Settings.from_env())
