"""HMA-compatible API: the Hasher-Matcher-Actioner (OpenMediaMatch 2.x) endpoints for hashing
(``/h``), lookup (``/m``) and bank curation (``/c``), with HMA's request and response shapes,
over hashwatch lists (mapping: :mod:`hashwatch.service.hma`).

A platform integrated with HMA switches by changing its base URL and adding an API key:
unlike HMA, every endpoint here needs a hashwatch key with a scope (hashing: ``hash`` or
``match``; lookups: ``match``; reading banks: ``curate`` or ``match``; changing banks and
reading their content: ``curate``). Lookups go through the same matcher path as ``/v1``
(list state, allow-list, robust routes for uploads, webhook events, audit); list changes are
audited by the store with the key's name.

Errors are HMA's ``{"message": ...}`` (plus hashwatch's ``error`` object), with HMA's status
codes: bad input is a 400, an existing bank a 403, an unknown bank or content a 404.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from hashwatch.service import hma
from hashwatch.service.auth import Principal
from hashwatch.service.deps import Curate, Hash, MatchP, Read, Svc, audit
from hashwatch.service.errors import ApiError, BodyTooLarge
from hashwatch.service.guards import JsonRefused, is_json_content_type, load_json, safe_text
from hashwatch.service.matching import hash_dict, hash_upload, read_upload
from hashwatch.service.routes import match as v1_match
from hashwatch.service.state import Service
from hashwatch.store import ListExists, ListNotFound, StoreError

# per store (one per worker; tests run several apps in one process)
_live_counts: weakref.WeakKeyDictionary[Any, hma.LiveCounts] = weakref.WeakKeyDictionary()


def hma_error(status: int, code: str, message: str,
              headers: dict[str, str] | None = None) -> JSONResponse:
    """HMA's error body ``{"message"}``, with hashwatch's ``{"error": {code, message}}``
    beside it so both kinds of client read it."""
    message = safe_text(message)  # messages repeat input: always encodable
    return JSONResponse({"message": message, "error": {"code": code, "message": message}},
                        status_code=status, headers=headers)


class HmaRoute(APIRoute):
    """Answers every error of these routes, the key check's included, in HMA's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except hma.HmaError as exc:
                return hma_error(exc.status, "bad_request", exc.message)
            except ApiError as exc:
                # HMA answers bad input with 400 where hashwatch says 422
                status = 400 if exc.status == 422 else exc.status
                return hma_error(status, exc.code, exc.message, exc.headers)
            except RequestValidationError as exc:
                errs = exc.errors()
                where = ".".join(str(x) for x in errs[0].get("loc", ())) if errs else ""
                msg = errs[0].get("msg", "invalid request") if errs else "invalid request"
                return hma_error(400, "invalid_request", f"{where}: {msg}"[:300])
            except BodyTooLarge:
                return hma_error(413, "too_large", "request body too large")

        return route


router = APIRouter(tags=["hma-compatible"], route_class=HmaRoute)


# -- shared helpers --------------------------------------------------------------------
async def _one_upload(request: Request, svc: Service) -> tuple[str, UploadFile, Any]:
    """HMA's multipart upload: exactly one file, its field name a content type (``photo``
    or ``video``). Returns (content type, file, the form)."""
    form = await request.form(max_files=2, max_fields=20)
    files = [(k, v) for k, v in form.multi_items() if isinstance(v, UploadFile)]
    if not files:
        raise hma.HmaError("Missing multipart/form-data file upload")
    if len(files) > 1:
        raise hma.HmaError("Only one file allowed per request")
    field, file = files[0]
    if field not in hma.CONTENT_TYPES:
        raise hma.HmaError(f"no such content_type: '{field[:64]}'")
    return field, file, form


async def _json_object(request: Request, message: str) -> dict[str, Any]:
    """The request's JSON body, which must be declared JSON (else a 415, as Flask answers
    HMA's clients) and be an object (else a 400 with ``message``); read by the service's
    one strict JSON reader (:func:`hashwatch.service.guards.load_json`)."""
    if not is_json_content_type(request.headers.get("content-type")):
        raise ApiError(415, "unsupported_media_type",
                       "the request body must be JSON (Content-Type: application/json)")
    try:
        body = load_json(await request.body())
    except JsonRefused as exc:
        raise hma.HmaError(f"{exc.field or 'body'}: {exc.problem}") from None
    except ValueError:
        raise hma.HmaError(message) from None
    if not isinstance(body, dict):
        raise hma.HmaError(message)
    return body


def _check_content_type(content_type: str | None) -> None:
    if content_type is not None and content_type not in hma.CONTENT_TYPES:
        raise hma.HmaError(f"no such content_type: '{content_type[:64]}'")


def _fetch_url(svc: Service, p: Principal, url: str) -> bytes:
    """The bytes at ``url`` through the service's URL fetch (allow-listed hosts only; off by
    default, then a 403 as on ``/v1/match/url``)."""
    from hashwatch.service.destinations import redact_url
    from hashwatch.service.urlfetch import FetchError, fetch

    s = svc.settings
    if not s.url_fetch:
        raise ApiError(403, "url_fetch_disabled", "URL fetch is disabled on this service")
    try:
        return fetch(url, allowed_hosts=s.url_allowed_hosts, policy=s.url_policy(),
                     max_bytes=min(s.url_max_bytes, s.max_upload_bytes), timeout=s.url_timeout)
    except FetchError as exc:
        svc.store.audit(p.name, "match.url.refused", {"url": redact_url(url)[:500],
                                                       "reason": exc.code})
        status = 400 if exc.status in (403, 422) else exc.status  # HMA: "Invalid or unsafe URL"
        raise ApiError(status, exc.code, exc.message) from None


def _name_of(url: str) -> str:
    return url.rsplit("/", 1)[-1].split("?", 1)[0][:200] or "url"


def _min_quality(svc: Service) -> int:
    from hashwatch.matcher import PDQ_MIN_QUALITY

    return svc.matcher.min_quality if svc.matcher is not None else PDQ_MIN_QUALITY


def _signals_of(svc: Service, hashes: dict[str, Any], types: list[str] | None
                ) -> dict[str, str]:
    return hma.upload_signals(hashes, video=_is_video(hashes), min_quality=_min_quality(svc),
                              types=types)


def _is_video(hashes: dict[str, Any]) -> bool:
    """A video (not a still or an animated image), from the service's hash record."""
    return hashes.get("kind", "video" if "frames" in hashes else "image") == "video"


def _banks(svc: Service, text: str | None) -> list[str] | None:
    """The lists a lookup is restricted to: None = all; [] = none of the named banks exists
    (HMA answers with no match instead of an error)."""
    names = hma.split_banks(text)
    return None if names is None else hma.existing_banks(svc.store, names)


def _matches_by_bank(svc: Service, matches: list[dict[str, Any]]
                     ) -> dict[str, list[dict[str, Any]]]:
    """hashwatch matches -> HMA's ``{bank: [{"bank_content_id", "distance"}]}``: one item per
    content, its best match first."""
    if not matches:
        return {}
    cids = hma.content_ids(svc.store, [m["entry_id"] for m in matches])
    best: dict[tuple[str, int], dict[str, Any]] = {}
    for m in matches:
        key = (m["list"], cids.get(m["entry_id"], m["entry_id"]))
        rank = m["distance"] if m["distance"] >= 0 else 10**6
        if key not in best or rank < best[key]["rank"]:
            best[key] = {"rank": rank, "distance": hma.distance_text(m)}
    out: dict[str, list[dict[str, Any]]] = {}
    for (bank, cid), v in sorted(best.items(), key=lambda kv: (kv[0][0], kv[1]["rank"],
                                                               kv[0][1])):
        out.setdefault(bank, []).append({"bank_content_id": cid, "distance": v["distance"]})
    return out


async def _lookup_value(svc: Service, p: Principal, signal_type: str, signal: str,
                        lists: list[str] | None, *, notify: bool) -> list[dict[str, Any]]:
    """hashwatch matches of one hash value, through ``/v1/match/hashes`` itself (validation,
    index then store, list state, allow-list, webhook events when ``notify``, audit)."""
    st = hma.signal_type(signal_type, matchable=True)
    value = hma.validate_value(st, signal, signal_type)
    if lists == []:
        return []
    try:
        body = v1_match.MatchHashesIn(
            hashes=[v1_match.HashQuery(signal_type=st.name, value=value)],
            lists=lists, notify=notify)
    except ValidationError as exc:
        raise hma.HmaError(f"invalid signal: {exc.errors()[0].get('msg', '')}"[:300]) from None
    res = await v1_match.match_hashes(p, svc, body)
    return res["results"][0]["matches"]


def _lookup_upload(svc: Service, p: Principal, data: bytes, name: str,
                   lists: list[str] | None, types: list[str] | None) -> dict[str, Any]:
    """HMA's per-signal-type answer for uploaded bytes, matched like ``/v1/match/upload``
    (exact, PDQ views, keypoints; review item and webhook events on a match)."""
    if lists == []:
        up = hash_upload(data, name, svc)
        return {sig: {} for sig in _signals_of(svc, hash_dict(up.hashes, up), types)}
    res = v1_match.do_match_upload(svc, p, data, name, "", lists)
    signals = _signals_of(svc, res["hashes"], types)
    video = _is_video(res["hashes"])
    per_sig: dict[str, list[dict[str, Any]]] = {}
    for m in res["matches"]:
        sig = "video_md5" if video and m["signal"] == "md5" else m["signal"]
        if types is None or sig in types:
            per_sig.setdefault(sig, []).append(m)
    out: dict[str, Any] = {sig: {} for sig in signals}
    for sig, ms in per_sig.items():
        out[sig] = _matches_by_bank(svc, ms)
    return out


# -- hashing -----------------------------------------------------------------------------------
@router.get("/h/hash")
def hma_hash_url(p: Hash, svc: Svc, url: Annotated[str, Query(min_length=1, max_length=2000)],
                 content_type: Annotated[str | None, Query(max_length=64)] = None,
                 types: Annotated[str | None, Query(max_length=500)] = None) -> dict[str, str]:
    """Fetch ``url`` and hash it: ``{signal type: value}`` (HMA ``GET /h/hash``)."""
    _check_content_type(content_type)
    data = _fetch_url(svc, p, url)
    up = hash_upload(data, _name_of(url), svc)
    return _signals_of(svc, hash_dict(up.hashes, up), hma.split_types(types))


@router.post("/h/hash")
async def hma_hash_upload(request: Request, p: Hash, svc: Svc,
                          types: Annotated[str | None, Query(max_length=500)] = None
                          ) -> dict[str, str]:
    """Hash one uploaded file (multipart field ``photo`` or ``video``): ``{signal type:
    value}``; a photo gives pdq, md5, sha1, sha256 (HMA ``POST /h/hash``)."""
    _field, file, _form = await _one_upload(request, svc)
    data = await read_upload(file, svc.settings)
    up = await run_in_threadpool(hash_upload, data, file.filename or "upload", svc)
    return _signals_of(svc, hash_dict(up.hashes, up), hma.split_types(types))


# -- matching ----------------------------------------------------------------------------------
@router.get("/m/lookup")
async def hma_lookup(
    p: MatchP, svc: Svc,
    signal_type: Annotated[str | None, Query(max_length=64)] = None,
    signal: Annotated[str | None, Query(max_length=2000)] = None,
    url: Annotated[str | None, Query(max_length=2000)] = None,
    content_type: Annotated[str | None, Query(max_length=64)] = None,
    types: Annotated[str | None, Query(max_length=500)] = None,
    banks: Annotated[str | None, Query(max_length=5000)] = None,
    seed: Annotated[str | None, Query(max_length=200)] = None,  # noqa: ARG001 - HMA's coinflip
    bypass_coinflip: bool = False,  # noqa: ARG001 - lists are on or off: no coinflip
) -> dict[str, Any]:
    """Look up a hash (``signal_type`` + ``signal``: ``{bank: [{"bank_content_id",
    "distance"}]}``) or a URL's content (``{signal type: {bank: [...]}}``)."""
    lists = await run_in_threadpool(_banks, svc, banks)
    if url:
        _check_content_type(content_type)
        data = await run_in_threadpool(_fetch_url, svc, p, url)
        out = await run_in_threadpool(_lookup_upload, svc, p, data, _name_of(url), lists,
                                      hma.split_types(types))
        return out.get(signal_type, {}) if signal_type else out
    if not signal or not signal_type:
        raise hma.HmaError("Either url or both signal and signal_type are required")
    matches = await _lookup_value(svc, p, signal_type, signal, lists, notify=True)
    return await run_in_threadpool(_matches_by_bank, svc, matches)


@router.post("/m/lookup")
async def hma_lookup_upload(
    request: Request, p: MatchP, svc: Svc,
    types: Annotated[str | None, Query(max_length=500)] = None,
    banks: Annotated[str | None, Query(max_length=5000)] = None,
    seed: Annotated[str | None, Query(max_length=200)] = None,  # noqa: ARG001
    bypass_coinflip: bool = False,  # noqa: ARG001
) -> dict[str, Any]:
    """Hash and match one uploaded file (multipart ``photo`` or ``video``): ``{signal type:
    {bank: [{"bank_content_id", "distance"}]}}``, robust routes included."""
    _field, file, _form = await _one_upload(request, svc)
    data = await read_upload(file, svc.settings)
    lists = await run_in_threadpool(_banks, svc, banks)
    return await run_in_threadpool(_lookup_upload, svc, p, data, file.filename or "upload",
                                   lists, hma.split_types(types))


@router.get("/m/raw_lookup")
async def hma_raw_lookup(
    p: MatchP, svc: Svc,
    signal_type: Annotated[str, Query(min_length=1, max_length=64)],
    signal: Annotated[str, Query(min_length=1, max_length=2000)],
    banks: Annotated[str | None, Query(max_length=5000)] = None,
    include_distance: bool = False,
) -> dict[str, Any]:
    """Content ids matching a hash: ``{"matches": [id, ...]}``, or with ``include_distance``
    ``{"matches": [{"bank_content_id", "distance"}]}``. No webhook events."""
    lists = await run_in_threadpool(_banks, svc, banks)
    matches = await _lookup_value(svc, p, signal_type, signal, lists, notify=False)
    by_bank = await run_in_threadpool(_matches_by_bank, svc, matches)
    items = [m for ms in by_bank.values() for m in ms]
    return {"matches": items if include_distance else [m["bank_content_id"] for m in items]}


@router.get("/m/index/status")
def hma_index_status(p: Read, svc: Svc,
                     signal_type: Annotated[str | None, Query(max_length=64)] = None
                     ) -> dict[str, Any]:
    """Per signal type: ``{"built_to": unix time or -1, "present": bool, "size": hashes}``.
    PDQ is the in-memory index (current up to the last change-feed refresh); exact hashes
    are looked up in the database, always current."""
    names = hma.lookup_signal_types()
    if signal_type is not None:
        if signal_type not in names:
            raise hma.HmaError(f"No such signal type '{signal_type[:64]}'")
        names = [signal_type]
    ready = svc.ready.is_set() and svc.matcher is not None
    counts = _live_counts.setdefault(svc.store, hma.LiveCounts()).get(svc.store)
    out = {}
    for name in names:
        st = hma.signal_type(name)
        if st.name == "pdq":
            present = ready
            size = len(svc.matcher.index) if ready else 0
            built = int(svc.last_refresh) if ready else -1
        else:  # exact hashes are database lookups: present and current once started
            present, size, built = True, counts.get(st.name, 0), int(svc.last_refresh or 0)
        out[name] = {"built_to": built if present else -1, "present": present, "size": size}
    return out


@router.post("/m/compare")
async def hma_compare(request: Request, p: Hash, svc: Svc) -> dict[str, Any]:
    """Compare pairs of hashes: body ``{signal type: [a, b]}``, answer ``{signal type:
    [match, {"distance": d}]}`` (``{}`` for exact types)."""
    body = await _json_object(request, "Request input was not a dict")
    out = {}
    for name, pair in body.items():
        if not isinstance(pair, list):
            raise hma.HmaError(f"Comparison hashes for {str(name)[:64]} was not a list")
        if len(pair) != 2:
            raise hma.HmaError("Comparison hash list length must be exactly 2")
        st = hma.signal_type(str(name), matchable=True)
        if not all(isinstance(v, str) for v in pair):
            raise hma.HmaError(f"Invalid {str(name)[:64]} hash: values must be strings")
        a, b = (hma.validate_value(st, v, str(name)) for v in pair)
        out[name] = hma.compare(st, a, b)
    return out


# -- banks ---------------------------------------------------------------------------------------
class BankCreate(BaseModel):
    name: str
    enabled_ratio: float | None = 1.0
    enabled: bool | None = None


class BankUpdate(BaseModel):
    name: str | None = None
    enabled_ratio: float | None = None
    enabled: bool | None = None


def _bank(svc: Service, name: str) -> Any:
    try:
        return svc.store.get_list(name)
    except ListNotFound:
        raise ApiError(404, "unknown_bank", f"bank '{name[:200]}' not found") from None


@router.get("/c/banks")
def hma_banks(p: Read, svc: Svc) -> list[dict[str, Any]]:
    """Every bank (hash list): ``[{"name", "matching_enabled_ratio"}]``."""
    return [hma.bank_json(i) for i in svc.store.lists()]


@router.post("/c/banks", status_code=201)
def hma_bank_create(p: Curate, svc: Svc, body: BankCreate) -> dict[str, Any]:
    """Create a bank (a hash list). Names follow HMA's rule, UPPER_WITH_UNDERSCORE."""
    # an explicit enabled_ratio wins, then enabled; a new bank matches by default
    ratio = body.enabled_ratio if "enabled_ratio" in body.model_fields_set else None
    enabled = hma.enabled_from(body.enabled, ratio)
    if not hma.BANK_NAME_RE.fullmatch(body.name):
        raise hma.HmaError("Bank names must be UPPER_WITH_UNDERSCORE")
    try:
        info = svc.store.create_list(body.name, description="created through the "
                                     "HMA-compatible API", actor=p.name)
    except ListExists:
        raise ApiError(403, "bank_exists", "Bank already exists") from None
    except StoreError as exc:
        raise hma.HmaError(str(exc)[:300]) from None
    if enabled is False:
        info = svc.store.set_list_enabled(body.name, False, actor=p.name)
    return hma.bank_json(info)


@router.get("/c/bank/{bank_name}")
def hma_bank_show(p: Read, svc: Svc, bank_name: str) -> dict[str, Any]:
    """One bank: ``{"name", "matching_enabled_ratio"}``."""
    return hma.bank_json(_bank(svc, bank_name))


@router.put("/c/bank/{bank_name}")
def hma_bank_update(p: Curate, svc: Svc, bank_name: str, body: BankUpdate) -> dict[str, Any]:
    """Turn a bank's matching on or off (``enabled``, or ``enabled_ratio`` 0 or 1)."""
    info = _bank(svc, bank_name)
    if body.name is not None and body.name != info.name:
        if not hma.BANK_NAME_RE.fullmatch(body.name):
            raise hma.HmaError("Bank names must be UPPER_WITH_UNDERSCORE")
        raise hma.HmaError("renaming a bank is not supported by hashwatch (list names are "
                           "kept in exports, audit records and webhook subscriptions)")
    enabled = hma.enabled_from(body.enabled, body.enabled_ratio)
    if enabled is not None and enabled != info.enabled:
        info = svc.store.set_list_enabled(bank_name, enabled, actor=p.name)
        svc.refresh_now()
    return hma.bank_json(info)


@router.delete("/c/bank/{bank_name}")
def hma_bank_delete(p: Curate, svc: Svc, bank_name: str) -> dict[str, str]:
    """Delete a bank (hashwatch keeps its rows and history: a soft delete). Deleting a bank
    that does not exist succeeds, as in HMA."""
    try:
        svc.store.delete_list(bank_name, actor=p.name)
    except ListNotFound:
        pass
    else:
        svc.refresh_now()
    return {"message": "Done"}


# -- bank content --------------------------------------------------------------------------------
def _add_entries(svc: Service, p: Principal, info: Any, items: list[Any], group: str,
                 pairs: list[tuple[str, str]], local: tuple[str, bytes] | None) -> int:
    """Add one content's entries; its id (the first entry of its group, or, when every
    value was already in the bank as another content, that content's id)."""
    store = svc.store
    try:
        store.add_entries(info.name, items, actor=p.name, action="entries.add",
                          detail={"via": "hma"})
    except (StoreError, ValueError) as exc:  # e.g. text the store's guards refuse
        raise hma.HmaError(f"the content cannot be stored: {exc}"[:300]) from None
    if local is not None:
        store.add_local_features(info.name, [local], actor=p.name)
    svc.refresh_now()
    cid = hma.content_id_of_group(store, info.id, group)
    if cid is None:
        found = hma.entry_ids_for_values(store, info.id, pairs)
        cid = hma.content_ids(store, found)[found[0]] if found else None
    if cid is None:
        raise ApiError(409, "not_added", "the content could not be added")
    return cid


def _add_upload(svc: Service, p: Principal, info: Any, data: bytes, name: str,
                meta: dict[str, Any] | None, note: str | None) -> dict[str, Any]:
    """A known picture or video from its bytes: hashed as ``hashwatch lists add`` does
    (crypto hashes, PDQ and the robust matcher's extra views and keypoints)."""
    from hashwatch import robust
    from hashwatch.known import entries_for_record, local_features_for_record

    up = hash_upload(data, name, svc)
    rec = up.hashes
    if getattr(rec, "vpdq", None) is None and up.pixels is not None and up.pixels.ndim == 3:
        # a picture (an animation: its first frame, as partners' PDQ tools see it)
        rec = dataclasses.replace(rec, extras=robust.known_extras(up.pixels))
    labels = hma.metadata_labels(meta, note)
    ref = (meta or {}).get("content_id", "")
    items = [dataclasses.replace(e, labels=labels)
             for e in entries_for_record(rec, source_ref=ref)]
    signals = _signals_of(svc, hash_dict(up.hashes, up), None)
    pairs = [(e.signal_type, e.value) for e in items if not e.variant]
    cid = _add_entries(svc, p, info, items, rec.sha256 or "", pairs,
                       local_features_for_record(rec))
    return {"id": cid, "signals": signals}


def _add_signals(svc: Service, p: Principal, info: Any, given: dict[str, Any],
                 meta: dict[str, Any] | None, note: str | None) -> dict[str, Any]:
    """Content from signal values (``{signal type: value}``), e.g. a partner's hashes."""
    from hashwatch.store import EntryIn

    if not given:
        raise hma.HmaError("No signals given")
    from hashwatch.signals.vpdq import format_vpdq, parse_vpdq

    values: dict[str, str] = {}  # hashwatch name -> value
    echo: dict[str, str] = {}
    frames: list[str] = []  # a known video's vPDQ: one entry per frame
    for name, value in given.items():
        st = hma.signal_type(str(name))
        if not isinstance(value, str):
            raise hma.HmaError(f"Invalid {str(name)[:64]} signal: not a string")
        if st.name == "vpdq":  # HMA's vpdq value is a whole video (reference JSON)
            try:
                feats = parse_vpdq(value)
            except ValueError as exc:
                raise hma.HmaError(f"invalid signal: Invalid vpdq hash: {exc}"[:300]) from None
            if not feats:
                raise hma.HmaError("invalid signal: Invalid vpdq hash: no frames")
            frames = [str(f) for f in feats]
            v = format_vpdq(feats)
        else:
            v = hma.validate_value(st, value, str(name))
        values[st.name] = v
        echo[str(name)] = v
    group = hma.group_for_signals(values)
    labels = hma.metadata_labels(meta, note)
    ref = (meta or {}).get("content_id", "")
    pairs = [(s, v) for s, v in values.items() if s != "vpdq"] + [("vpdq", f) for f in frames]
    items = [EntryIn(signal_type=s, value=v, labels=labels, source_ref=ref, group_ref=group)
             for s, v in pairs]
    cid = _add_entries(svc, p, info, items, group, pairs, None)
    return {"id": cid, "signals": echo}


@router.post("/c/bank/{bank_name}/content")
async def hma_content_add(
    request: Request, p: Curate, svc: Svc, bank_name: str,
    url: Annotated[str | None, Query(max_length=2000)] = None,
    content_type: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """Add content by ``url`` or by a multipart upload (``photo`` / ``video``), with
    optional ``metadata`` (``content_id``, ``content_uri``, ``json``) and ``note``:
    ``{"id", "signals"}``."""
    info = await run_in_threadpool(_bank, svc, bank_name)
    ctype = request.headers.get("content-type", "")
    if url:
        _check_content_type(content_type)
        raw: dict[str, Any] = {}
        if ctype.startswith("application/json"):
            raw = await _json_object(request, "the request body must be a JSON object")
        meta, note = hma.check_metadata(raw.get("metadata")), hma.check_note(raw.get("note"))
        data = await run_in_threadpool(_fetch_url, svc, p, url)
        return await run_in_threadpool(_add_upload, svc, p, info, data, _name_of(url), meta,
                                       note)
    if not ctype.startswith("multipart/form-data"):
        raise hma.HmaError("Neither `url` nor multipart file upload was received")
    _field, file, form = await _one_upload(request, svc)
    meta = None
    if form.get("metadata") is not None:
        try:
            meta = load_json(str(form.get("metadata")))
        except JsonRefused as exc:
            raise hma.HmaError(f"metadata {exc.field or ''}: {exc.problem}") from None
        except ValueError:
            raise hma.HmaError("metadata form field must be valid JSON") from None
    meta = hma.check_metadata(meta)
    note = hma.check_note(form.get("note"))
    data = await read_upload(file, svc.settings)
    return await run_in_threadpool(_add_upload, svc, p, info, data, file.filename or "upload",
                                   meta, note)


@router.post("/c/bank/{bank_name}/signal")
async def hma_signal_add(request: Request, p: Curate, svc: Svc, bank_name: str
                         ) -> dict[str, Any]:
    """Add content as hashes: body ``{signal type: value, ..., "note"?}`` -> ``{"id",
    "signals"}``. Adding values the bank already holds returns their content's id."""
    info = await run_in_threadpool(_bank, svc, bank_name)
    body = await _json_object(request, "the request body must be a JSON object")
    note = hma.check_note(body.pop("note", None))
    return await run_in_threadpool(_add_signals, svc, p, info, body, None, note)


def _content(svc: Service, info: Any, content_id: int) -> list[Any]:
    members = hma.content_members(svc.store, info.id, content_id)
    if not members:
        raise ApiError(404, "unknown_content", f"content '{content_id}' not found")
    return members


@router.get("/c/bank/{bank_name}/content/{content_id}")
def hma_content_show(p: Curate, svc: Svc, bank_name: str,
                     content_id: int,
                     include_signals: bool = False, include_metadata: bool = True
                     ) -> dict[str, Any]:
    """One content: ``{"id", "disable_until_ts", "original_media_uri", "bank",
    "signals"?, "metadata"?, "note"?}`` (``include_signals=true`` for the hashes)."""
    info = _bank(svc, bank_name)
    if not 1 <= content_id <= 2**62:
        raise ApiError(404, "unknown_content", f"content '{content_id}' not found")
    members = _content(svc, info, content_id)
    audit(svc, p, "hma.content.read", {"list": info.name, "content_id": content_id,
                                       "signals": include_signals})
    return hma.content_json(info, members, include_signals=include_signals,
                            include_metadata=include_metadata)


@router.delete("/c/bank/{bank_name}/content/{content_id}")
def hma_content_delete(p: Curate, svc: Svc, bank_name: str, content_id: int) -> dict[str, int]:
    """Remove a content (every entry of its group): ``{"deleted": 1}``, or 0 if none."""
    info = _bank(svc, bank_name)
    if not 1 <= content_id <= 2**62:
        return {"deleted": 0}
    members = hma.content_members(svc.store, info.id, content_id)
    n = svc.store.remove_entries(info.name, [e.id for e in members], actor=p.name) \
        if members else 0
    if n:
        svc.refresh_now()
    return {"deleted": 1 if n else 0}
