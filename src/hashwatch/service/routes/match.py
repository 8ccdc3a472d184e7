"""``/v1/hash`` and ``/v1/match/*``: hash uploads, match uploads, URLs and hash values.

Every lookup is audited before it is answered; matches raise webhook events and (for
uploads) a review item, unless the content is allow-listed.
"""

import dataclasses
import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from hashwatch.service import review as review_mod
from hashwatch.service import webhooks as wh
from hashwatch.service.auth import Principal
from hashwatch.service.deps import (
    API,
    Hash,
    MatchP,
    Svc,
    audit,
    audit_async,
    check_lists,
    need_ready,
)
from hashwatch.service.destinations import redact_url
from hashwatch.service.errors import ApiError
from hashwatch.service.matching import (
    HashQ,
    hash_dict,
    hash_upload,
    match_values,
    pdq_hits,
    read_upload,
    resolve_matches,
    validate_hash,
)
from hashwatch.service.state import Service
from hashwatch.service.uploads import blurred_thumbnail, clear_preview

INLINE_QUERIES = 8  # match requests up to this many PDQ hashes search in the event loop

router = APIRouter(prefix=API, tags=["match"])


class HashQuery(BaseModel):
    signal_type: str = Field(min_length=1, max_length=64, examples=["pdq"])
    value: str = Field(min_length=1, max_length=400)
    quality: int | None = Field(default=None, ge=0, le=100)
    ref: str = Field(default="", max_length=500, description="your id for this content")


class MatchHashesIn(BaseModel):
    hashes: list[HashQuery] = Field(min_length=1, max_length=1000)
    lists: list[str] | None = Field(default=None, max_length=100)
    notify: bool = Field(default=True, description="send webhook events for matches")


class UrlIn(BaseModel):
    url: str = Field(min_length=8, max_length=2000)
    lists: list[str] | None = Field(default=None, max_length=100)
    ref: str = Field(default="", max_length=500)


def _split(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [x.strip() for x in text.split(",") if x.strip()] or None


@router.post("/hash")
async def hash_endpoint(p: Hash, svc: Svc, file: Annotated[UploadFile, File()]
                        ) -> dict[str, Any]:
    """Hash an uploaded image or video: md5, sha1, sha256, PDQ (+ quality, pdq_matchable),
    dimensions; videos and animated images every kept frame's PDQ, videos their vPDQ."""
    data = await read_upload(file, svc.settings)
    up = await run_in_threadpool(hash_upload, data, file.filename or "upload", svc)
    return {"hashes": hash_dict(up.hashes, up)}


def do_match_upload(svc: Service, p: Principal, data: bytes, name: str, ref: str,
                    lists: list[str] | None) -> dict[str, Any]:
    """Hash ``data``, match it (exact, PDQ views, keypoints; video and animation: every
    distinct kept frame with its views, a video's vPDQ),
    then review item, webhook events and audit. Runs in a worker thread."""
    settings = svc.settings
    need_ready(svc)
    lists = check_lists(svc, lists)
    query_extras = getattr(svc.matcher, "query_extras", None)
    qx = query_extras() if query_extras is not None else None
    up = hash_upload(data, name, svc, qx)
    h = up.hashes
    if qx is not None and not h.frames and up.pixels is not None and up.pixels.ndim == 3 \
            and hasattr(h, "extras") and h.extras is None:
        # the robust tier (flips, crops, borders, rotations, screenshots) needs the query
        # views the matcher asks for: the decoder child computes them from the decoded
        # pixels (videos and animations: per frame); this is only the fallback for a
        # decoder that did not
        h = dataclasses.replace(h, extras=qx(up.pixels))
    # videos and animations: every distinct frame with its views, a video's vPDQ too
    # (hashwatch.media.matching); a frame match says which frame
    matches = [m.as_dict() for m in svc.matcher.match_hashes(h, lists)]
    frame_pdq = {f.index: f.pdq for f in h.frames or ()}
    for m in matches:
        if m.get("frame"):
            m["frame_time"] = m["frame"]["t"]
            m["frame_pdq"] = frame_pdq.get(m["frame"]["index"])
    # allow-list rows silence only the perceptual matches of the entry they were
    # reviewed for; exact matches and other entries still alert
    matches, allow_listed = svc.allow.filter(matches, h.sha256, h.pdq)
    if h.pdq is None and matches:  # video: the review item keeps the matched frame
        fp = next((m["frame_pdq"] for m in matches if m.get("frame_pdq")), None)
        h = dataclasses.replace(h, pdq=fp)
    item_id = None
    events: list[str] = []
    if matches:
        if settings.review_queue and up.pixels is not None:
            item_id = review_mod.create_item(
                svc.store, submitted_by=p.name, filename=ref or name, hashes=h,
                matches=matches, queue=p.queue,
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
    hd = hash_dict(up.hashes, up)
    return {"hashes": hd, "matches": matches, "pdq_matchable": hd["pdq_matchable"],
            **({"pdq_reason": hd["pdq_reason"]} if "pdq_reason" in hd else {}),
            "confidence": wh.overall_confidence(matches),
            "allow_listed": allow_listed,
            "review_item_id": item_id, "events": len(events)}


@router.post("/match/upload")
async def match_upload(
    p: MatchP, svc: Svc, file: Annotated[UploadFile, File()],
    lists: Annotated[str | None, Form(max_length=5000,
                                      description="comma-separated list names")] = None,
    ref: Annotated[str, Form(max_length=500, description="your id for this content")] = "",
) -> dict[str, Any]:
    """Hash an uploaded image and match it (exact, then PDQ). Matches create a review
    item and webhook events (unless the content is allow-listed)."""
    data = await read_upload(file, svc.settings)
    return await run_in_threadpool(do_match_upload, svc, p, data,
                                   file.filename or "upload", ref, _split(lists))


@router.post("/match/url")
def match_url(p: MatchP, svc: Svc, body: UrlIn) -> dict[str, Any]:
    """Fetch an image from an allow-listed host and match it (disabled by default)."""
    from hashwatch.service.urlfetch import FetchError, fetch

    settings = svc.settings
    if not settings.url_fetch:
        raise ApiError(403, "url_fetch_disabled", "URL fetch is disabled on this service")
    try:
        data = fetch(body.url, allowed_hosts=settings.url_allowed_hosts,
                     policy=settings.url_policy(),
                     max_bytes=min(settings.url_max_bytes, settings.max_upload_bytes),
                     timeout=settings.url_timeout)
    except FetchError as exc:
        svc.store.audit(p.name, "match.url.refused", {"url": redact_url(body.url)[:500],
                                                       "reason": exc.code})
        raise ApiError(exc.status, exc.code, exc.message) from None
    return do_match_upload(svc, p, data, body.url.rsplit("/", 1)[-1][:200] or "url",
                           body.ref or redact_url(body.url)[:500], body.lists)


@router.post("/match/hashes")
async def match_hashes(p: MatchP, svc: Svc, body: MatchHashesIn) -> dict[str, Any]:
    """Match up to 1,000 hash values (md5, sha1, sha256 exactly; pdq within distance 31)."""
    need_ready(svc)
    lists = await run_in_threadpool(check_lists, svc, body.lists) if body.lists else None
    queries: list[HashQ] = []
    for q in body.hashes:
        st, value = validate_hash(q.signal_type, q.value)
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
        matches, allow_listed = svc.allow.filter(matches, value if sig == "sha256" else None,
                                                 value if sig == "pdq" else None)
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
