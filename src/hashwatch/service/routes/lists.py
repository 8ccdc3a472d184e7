"""``/v1/lists``: hash lists and their entries (create, show, enable/disable, delete; add,
page through, remove, bulk import, export). Curation needs the ``curate`` scope."""

import logging
import os
import tempfile
from itertools import islice
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from hashwatch.lists import choose_method
from hashwatch.service.auth import Principal
from hashwatch.service.deps import API, MAX_ID, AfterId, Curate, Read, Svc, audit, list_or_404
from hashwatch.service.errors import ApiError, BodyTooLarge
from hashwatch.service.state import Service
from hashwatch.store import ListExists, StoreError

log = logging.getLogger("hashwatch.service")
router = APIRouter(prefix=f"{API}/lists", tags=["lists"])

Format = Literal["csv", "hashlines", "vics", "icse"]


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


@router.get("")
def lists_index(p: Read, svc: Svc) -> dict[str, Any]:
    return {"lists": [i.as_dict() for i in svc.store.lists()]}


@router.post("", status_code=201)
def lists_create(p: Curate, svc: Svc, body: ListIn) -> dict[str, Any]:
    try:
        info = svc.store.create_list(
            body.name, source=body.source, jurisdiction=body.jurisdiction,
            category_scheme=body.category_scheme, description=body.description,
            actor=p.name)
    except ListExists as exc:
        raise ApiError(409, "list_exists", str(exc)) from None
    except StoreError as exc:
        raise ApiError(422, "invalid_list", str(exc)) from None
    return info.as_dict()


@router.get("/{name}")
def lists_show(p: Read, svc: Svc, name: str) -> dict[str, Any]:
    return list_or_404(svc, name).as_dict()


@router.patch("/{name}")
def lists_patch(p: Curate, svc: Svc, name: str, body: ListPatch) -> dict[str, Any]:
    list_or_404(svc, name)
    return svc.store.set_list_enabled(name, body.enabled, actor=p.name).as_dict()


@router.delete("/{name}")
def lists_delete(p: Curate, svc: Svc, name: str) -> dict[str, Any]:
    """Soft delete: the list stops matching at once; rows and history stay."""
    list_or_404(svc, name)
    svc.store.delete_list(name, actor=p.name)
    return {"deleted": name}


@router.post("/{name}/entries", status_code=201)
def entries_add(p: Curate, svc: Svc, name: str, body: EntriesIn) -> dict[str, Any]:
    """Add entries (up to 10,000 per request; use /import for files)."""
    from hashwatch.formats import category_or_none, make_entry

    list_or_404(svc, name)
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


@router.get("/{name}/entries")
def entries_page(p: Curate, svc: Svc, name: str, after_id: AfterId = 0,
                 limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> dict[str, Any]:
    info = list_or_404(svc, name)
    # one keyset page of the store's entry stream (constant cost at any depth)
    rows = [e.as_dict() for e in islice(
        svc.store.iter_entries(list_name=info.name, after_id=after_id, batch=limit), limit)]
    # reading a list page by page is an export in instalments: audited like one, before
    # the page is answered (no audit, no answer)
    audit(svc, p, "list.entries.page", {
        "list": info.name, "after_id": after_id, "limit": limit, "entries": len(rows),
        "first_id": rows[0]["id"] if rows else None,
        "last_id": rows[-1]["id"] if rows else None}, list_id=info.id)
    return {"entries": rows, "next_after_id": rows[-1]["id"] if rows else None}


@router.post("/{name}/entries/remove")
def entries_remove(p: Curate, svc: Svc, name: str, body: RemoveIn) -> dict[str, Any]:
    list_or_404(svc, name)
    n = svc.store.remove_entries(name, body.ids, actor=p.name)
    svc.refresh_now()
    return {"removed": n}


@router.post("/{name}/import",
             openapi_extra={"requestBody": {"content": {"application/octet-stream": {
                 "schema": {"type": "string", "format": "binary"}}}, "required": True}})
async def entries_import(
    p: Curate, svc: Svc, name: str, request: Request,
    format: Annotated[Format, Query()] = "csv",
    signal: Annotated[str | None, Query(max_length=64)] = None,
    category: Annotated[str | None, Query(max_length=120)] = None,
    method: Annotated[Literal["auto", "rows", "bulk"], Query(
        description="rows: batches commit as they go (an interrupted import resumes when "
        "sent again); bulk: staged, then applied set-based, several times faster "
        "(PostgreSQL: one transaction, all or nothing; SQLite: chunks, resumable); auto: "
        "bulk from 16 MiB")] = "auto",
) -> dict[str, Any]:
    """Bulk import a list file (request body = the file; streamed to a private temp
    file, then read row by row). Bad rows are counted and reported, good rows kept."""
    await run_in_threadpool(list_or_404, svc, name)
    spool = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)  # noqa: SIM115
    try:
        size = 0
        try:
            async for chunk in request.stream():
                spool.write(chunk)
                size += len(chunk)
        except BodyTooLarge:
            raise ApiError(413, "too_large", "import file too large") from None
        except ClientDisconnect:
            # nothing was read into the list yet: an operator's event, not a server error
            log.warning("import into list %r: the client disconnected after %d bytes; "
                        "nothing was imported", name, size)
            raise ApiError(400, "client_disconnected",
                           "the request body ended early; nothing was imported") from None
        spool.seek(0)
        chosen = choose_method(size) if method == "auto" else method
        return await run_in_threadpool(_import_file, svc, p, name, spool, format, signal,
                                       category, chosen)
    finally:
        spool.close()


def _import_file(svc: Service, p: Principal, name: str, spool: Any, fmt: str,
                 signal: str | None, category: str | None, method: str) -> dict[str, Any]:
    from hashwatch.formats import FormatError, category_or_none
    from hashwatch.lists import import_stream

    try:
        cat = category_or_none(category)
    except ValueError as exc:
        raise ApiError(422, "invalid_category", str(exc)) from None
    try:
        res = import_stream(svc.store, name, spool, fmt, signal=signal, category=cat,
                            actor=p.name, keep_errors=20, method=method)
    except (FormatError, ValueError) as exc:
        raise ApiError(422, "bad_file", f"cannot read the file as {fmt}: {exc}"[:500]) from None
    svc.refresh_now()
    out = res.as_dict()
    out["errors"] = res.bad_rows  # the name this endpoint has always used
    out["method"] = method
    return out


@router.get("/{name}/export", response_class=Response,
            responses={200: {"content": {"text/plain": {}, "application/json": {}}}})
def entries_export(p: Curate, svc: Svc, name: str,
                   format: Annotated[Format, Query()] = "csv") -> Response:
    """Export a list's active entries (hashes and metadata only)."""
    from hashwatch.formats import writer

    list_or_404(svc, name)
    fd, tmp = tempfile.mkstemp(prefix="hw-export-", suffix=f".{format}")  # 0600
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
        n = writer(format)(svc.store.iter_entries(list_name=name), fh)
    svc.store.audit(p.name, "list.export", {"format": format, "entries": n},
                    list_name=name)
    media = "application/json" if format == "vics" else "text/plain; charset=utf-8"
    return FileResponse(tmp, media_type=media, filename=f"{name}.{format}",
                        background=BackgroundTask(os.unlink, tmp))
