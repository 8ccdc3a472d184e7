"""HTTP endpoints of private matching (threshold vouchers, ``hashwatch.private``).

Devices fetch the published table and commitment and post vouchers per account; the answer
to a device is always the same ``202 accepted``, because whether a voucher opened would tell
the device that its picture is on the list. Only reviewers see which accounts crossed the
threshold and the reports raised for them.
"""

import threading
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

MAX_VOUCHER_BYTES = 64 * 1024  # a voucher is ~10 KB; anything far larger is not one


class PrivateMatching:
    """The server side, loaded from a folder made by ``hashwatch private setup``: the public
    table (``table.bin``, ``commitment.json``), the secret (``server-secret.npz``) and the
    per-account state (``state.json``, written 0600 after every voucher)."""

    def __init__(self, folder: str | Path) -> None:
        from hashwatch.private.server import PsiServer

        self.folder = Path(folder)
        self.server = PsiServer.open(self.folder, state_path=self.folder / "state.json")
        self._lock = threading.Lock()

    def ingest(self, account: str, voucher: bytes) -> dict[str, Any]:
        with self._lock:
            res = self.server.ingest(account, voucher)
            self.server.save()
        return res.to_dict()

    def account(self, account: str) -> dict[str, Any]:
        """What an operator may see: the threshold state and the report, not the shares."""
        v = self.server.account_view(account)
        return {
            "account": account,
            "vouchers_received": v["vouchers_received"],
            "vouchers_opened": len(v["opened"]),
            "threshold_crossed": bool(v.get("recovered")),
            "report": v.get("report"),
        }


def add_private_routes(app: FastAPI, api: str, folder: str | None, svc_of: Any,
                       matcher_dep: Any, review_dep: Any, error: type[Exception]) -> None:
    """Mount /v1/private/* when a private-matching folder is configured."""
    if not folder:
        return
    pm = PrivateMatching(folder)

    binary = {200: {"content": {"application/octet-stream": {}}}}

    @app.get(f"{api}/private/table.bin", tags=["private"], response_class=Response,
             responses=binary)
    def private_table(_p: matcher_dep) -> Response:
        """The blinded table every device downloads (verify it against the commitment)."""
        return Response((pm.folder / "table.bin").read_bytes(),
                        media_type="application/octet-stream")

    @app.get(f"{api}/private/commitment.json", tags=["private"])
    def private_commitment(_p: matcher_dep) -> Response:
        """The signed commitment: a digest anyone can recompute from table.bin."""
        return Response((pm.folder / "commitment.json").read_bytes(),
                        media_type="application/json")

    @app.post(f"{api}/private/accounts/{{account}}/vouchers", tags=["private"],
              status_code=202)
    async def private_voucher(account: str, request: Request, p: matcher_dep) -> JSONResponse:
        """Take one voucher (the request body) for an account. Always 202: the device learns
        nothing about whether its picture matched."""
        if not account or len(account) > 200:
            raise error(400, "invalid_account", "account must be 1-200 characters")
        body = await request.body()
        if not body:
            raise error(400, "empty", "the request body must be one voucher")
        if len(body) > MAX_VOUCHER_BYTES:
            raise error(413, "too_large", "a voucher is at most 64 KiB")
        pm.ingest(account, body)
        svc_of().store.audit(p.name, "private.voucher", {"account": account})
        return JSONResponse({"accepted": True}, status_code=202)

    @app.get(f"{api}/private/accounts/{{account}}", tags=["private"])
    def private_account(account: str, p: review_dep) -> dict[str, Any]:
        """Operator view of one account: threshold crossed, and the report if one was raised
        (full PDQ hashes verified against the list, for human review)."""
        svc_of().store.audit(p.name, "private.account.view", {"account": account})
        return pm.account(account)

    @app.get(f"{api}/private/reports", tags=["private"])
    def private_reports(p: review_dep) -> dict[str, Any]:
        svc_of().store.audit(p.name, "private.reports.view", {})
        return {"reports": pm.server.reports()}


def http_transport(base_url: str, device_key: str, reviewer_key: str) -> Any:
    """A ``hashwatch.private.demo`` transport through the HTTP service: the device posts
    vouchers (and only ever hears "accepted"); the demo's per-voucher outcome comes from the
    operator's view of the account, as a reviewer would see it."""
    import httpx

    client = httpx.Client(base_url=base_url, timeout=30.0)

    def view(account: str) -> dict:
        r = client.get(f"/v1/private/accounts/{account}",
                       headers={"Authorization": f"Bearer {reviewer_key}"})
        r.raise_for_status()
        return r.json()

    def send(account: str, vouchers: list[bytes]) -> list[dict]:
        before = view(account)["vouchers_opened"]
        for v in vouchers:
            r = client.post(f"/v1/private/accounts/{account}/vouchers", content=v,
                            headers={"Authorization": f"Bearer {device_key}",
                                     "Content-Type": "application/octet-stream"})
            if r.status_code != 202 or r.json() != {"accepted": True}:
                raise RuntimeError(f"voucher refused: {r.status_code} {r.text[:200]}")
        after = view(account)
        opened = after["vouchers_opened"] - before  # which ones is the operator's business
        return [{"status": "opened" if i < opened else "accepted",
                 "threshold_crossed": after["threshold_crossed"],
                 "report_raised": after["report"] is not None} for i in range(len(vouchers))]

    return send


def serve_in_thread(settings: Any, host: str = "127.0.0.1") -> tuple[str, Any]:
    """Start the real service (uvicorn) on a free loopback port; returns (url, stop)."""
    import socket
    import time

    import httpx
    import uvicorn

    from hashwatch.service.app import create_app

    with socket.socket() as sock:
        sock.bind((host, 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host=host, port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v1/health/ready", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    else:
        server.should_exit = True
        raise RuntimeError("the service did not become ready within 60 s")

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)

    return url, stop
