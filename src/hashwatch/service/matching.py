"""Matching helpers the routers share: validate hash values, search the PDQ index, resolve
candidates to list entries, and turn uploads into hashes.

Two phases for hash lookups: ``pdq_hits`` (index only, no database) and ``resolve_matches``
(store), so the common case (a few PDQ hashes, no hit) never touches the database.
"""

from collections.abc import Sequence
from typing import Any

from fastapi import UploadFile

from hashwatch.service.errors import ApiError, BodyTooLarge
from hashwatch.service.settings import Settings
from hashwatch.service.state import Service
from hashwatch.service.uploads import UploadError, UploadLimits

HashQ = tuple[str, str, int | None]  # (signal type, normalised value, quality)


def validate_hash(signal: str, value: str) -> tuple[Any, str]:
    """(SignalType, normalised value); 422 for an unknown signal type or a malformed value."""
    from hashwatch.signals import InvalidSignalValue, UnknownSignalType, get_signal_type

    try:
        st = get_signal_type(signal.strip().lower())
    except (UnknownSignalType, KeyError):
        raise ApiError(422, "unknown_signal_type", f"unknown signal type {signal[:64]!r}") from None
    try:
        return st, st.validate(value.strip())
    except (InvalidSignalValue, ValueError) as exc:
        raise ApiError(422, "malformed_hash", f"malformed {st.name} value: {exc}") from None


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
            out[i] = [entry_match(e, 0, True) for e in found.get(queries[i][1], [])]
    return out


def match_values(svc: Service, queries: Sequence[HashQ],
                 lists: Sequence[str] | None) -> list[list[dict[str, Any]]]:
    """Matches for each query: one index pass, then one store round per signal type."""
    return resolve_matches(svc, queries, pdq_hits(svc, queries), lists)


def entry_match(e: Any, distance: int, exact: bool) -> dict[str, Any]:
    """A match record for list entry ``e`` (an ``EntryRow``)."""
    from hashwatch.matches import CONFIDENCE

    tier = "exact" if exact else "hash"
    d = {"list": e.list_name, "entry_id": e.id, "ref": e.source_ref, "signal": e.signal_type,
         "distance": distance, "category": str(e.category) if e.category else None,
         "exact": exact, "tier": tier, "confidence": CONFIDENCE[tier]}
    if e.variant:
        d["variant"] = e.variant
    return d


# -- uploads ---------------------------------------------------------------------------
async def read_upload(file: UploadFile, settings: Settings) -> bytes:
    """The uploaded file's bytes; 413 over the limit, 422 when empty."""
    try:
        data = await file.read()
    except BodyTooLarge:
        raise ApiError(413, "too_large", "upload too large") from None
    if len(data) > settings.max_upload_bytes:
        raise ApiError(413, "too_large", f"upload over {settings.max_upload_bytes} bytes")
    if not data:
        raise ApiError(422, "empty_upload", "the uploaded file is empty")
    return data


def upload_limits(settings: Settings) -> UploadLimits:
    return UploadLimits(max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels,
                        video_max_samples=settings.video_max_samples,
                        video_max_decoded_pixels=settings.video_max_decoded_pixels)


def hash_upload(data: bytes, name: str, svc: Service, extras: Any = None) -> Any:
    """Hash an uploaded image or video (``uploads.HashedUpload``) through the worker's
    decoder (a child process with a deadline, see ``hashwatch.service.isolation``);
    decode failures, timeouts and a full decoder are 4xx/503 ``ApiError``. ``extras``:
    the matcher's query views (a picklable callable), computed on each distinct frame of a
    video or animation (a still's are computed by the caller from the decoded pixels)."""
    try:
        return svc.decoder.run(data, name, upload_limits(svc.settings), extras)
    except UploadError as exc:
        headers = {"Retry-After": "2"} if exc.status == 503 else None
        raise ApiError(exc.status, exc.code, exc.message[:300], headers) from None


def hash_dict(h: Any, up: Any = None) -> dict[str, Any]:
    """The hashes of an upload as returned by the API: for a video or animated image also
    ``kind``, every kept frame (``index``, ``t`` seconds, ``pdq``, ``quality``), and a video's
    ``rotation`` (display matrix, degrees counter-clockwise applied) and ``vpdq`` (the
    reference interchange form: ``"hex,quality,seconds"`` per frame); always
    ``pdq_matchable`` (and ``pdq_reason`` when not)."""
    from hashwatch.matcher import pdq_matchability

    d = {"md5": h.md5, "sha1": h.sha1, "sha256": h.sha256, "pdq": h.pdq,
         "pdq_quality": h.pdq_quality, "width": h.width, "height": h.height,
         "format": h.format, "size": h.size}
    if getattr(h, "frames", None):
        d["kind"] = h.kind
        d["duration"] = h.duration
        d["frame_count"] = h.frame_count
        d["frames"] = [f.as_dict() for f in h.frames]
        if h.kind == "video":
            d["rotation"] = h.rotation
            d["vpdq"] = [str(f) for f in h.vpdq or ()]
        if h.limited:
            d["limited"] = h.limited
    elif up is not None and up.frames is not None:
        d["duration"] = up.duration
        d["frames"] = [{"t": t, "pdq": v, "quality": q} for t, v, q in up.frames]
    ok, why = pdq_matchability(h)
    d["pdq_matchable"] = ok
    if why:
        d["pdq_reason"] = why
    return d
