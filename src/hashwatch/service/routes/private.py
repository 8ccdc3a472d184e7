"""``/v1/private``: private matching with threshold vouchers, mounted when the service is
configured with a folder made by ``hashwatch private setup``.

Devices fetch the commitment chain and the table chunks and post vouchers per account; the answer
to a device is always the same ``202 accepted``, because whether a voucher opened would tell
the device that its picture is on the list. Only reviewers see which accounts crossed the
threshold and the reports raised for them.
"""

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse

from hashwatch.service.deps import API, MatchP, Review, Svc
from hashwatch.service.errors import ApiError
from hashwatch.service.private_api import PrivateMatching
from hashwatch.store.guards import InvalidText, check_identifier

MAX_VOUCHER_BYTES = 64 * 1024  # a voucher is ~10 KB; anything far larger is not one

_BINARY = {200: {"content": {"application/octet-stream": {}}}}


def build_router(folder: str | Path) -> APIRouter:
    """The private-matching routes over the server state in ``folder``."""
    pm = PrivateMatching(folder)
    router = APIRouter(prefix=f"{API}/private", tags=["private"])

    @router.get("/files/{name}", response_class=FileResponse, responses=_BINARY)
    def private_file(name: str, _p: MatchP) -> FileResponse:
        """A published file: ``chain.json`` (the signed commitment chain: every version signs
        the one before), ``params-eNNNN.json`` (an epoch's public parameters) or
        ``chunk-eNNNN-NNNN.bin`` (a table chunk). A device fetches the chain, then only the
        files of versions it does not hold, and verifies each against the chain."""
        path = pm.public_file(name)
        if path is None:
            raise ApiError(404, "not_found", "no such published file")
        media = "application/json" if name.endswith(".json") else "application/octet-stream"
        return FileResponse(path, media_type=media)

    def _account_id(account: str) -> None:
        try:
            check_identifier(account, "account")
        except InvalidText as exc:
            raise ApiError(422, "invalid_account", str(exc)) from None

    @router.post("/accounts/{account}/vouchers", status_code=202)
    async def private_voucher(account: str, request: Request, p: MatchP,
                              svc: Svc) -> JSONResponse:
        """Take one voucher (the request body) for an account. Always 202: the device learns
        nothing about whether its picture matched."""
        _account_id(account)
        chunks, size = [], 0
        async for chunk in request.stream():  # stop at the voucher cap, not the upload cap
            size += len(chunk)
            if size > MAX_VOUCHER_BYTES:
                raise ApiError(413, "too_large", "a voucher is at most 64 KiB")
            chunks.append(chunk)
        body = b"".join(chunks)
        if not body:
            raise ApiError(400, "empty", "the request body must be one voucher")
        pm.ingest(account, body)
        svc.store.audit(p.name, "private.voucher", {"account": account})
        return JSONResponse({"accepted": True}, status_code=202)

    @router.get("/accounts/{account}")
    def private_account(account: str, p: Review, svc: Svc) -> dict[str, Any]:
        """Operator view of one account: threshold crossed, and the report if one was raised
        (full PDQ hashes verified against the list, for human review)."""
        _account_id(account)
        svc.store.audit(p.name, "private.account.view", {"account": account})
        return pm.account(account)

    @router.get("/reports")
    def private_reports(p: Review, svc: Svc) -> dict[str, Any]:
        svc.store.audit(p.name, "private.reports.view", {})
        return {"reports": pm.server.reports()}

    return router
