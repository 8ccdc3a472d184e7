"""The service side of private matching (threshold vouchers, ``hashwatch.private``): the
server state behind ``/v1/private`` (routes in :mod:`hashwatch.service.routes.private`), and
the HTTP transport and in-thread server ``hashwatch private demo`` uses."""

import re
import threading
from pathlib import Path
from typing import Any

# The files devices fetch: the commitment chain, each epoch's parameters, the chunks.
PUBLIC_FILE = re.compile(r"chain\.json|params-e\d{4}\.json|chunk-e\d{4}-\d{4}\.bin")


class PrivateMatching:
    """The server side, loaded from a folder made by ``hashwatch private setup``: the public
    files (chain, parameters, chunks), the secrets (``secret/``) and the per-account state
    (``state.json``, written 0600 after every voucher). A version published into the folder
    while the service runs (``hashwatch private update/remove/rotate``) is picked up on the
    next request."""

    def __init__(self, folder: str | Path) -> None:
        from hashwatch.private.server import PsiServer

        self.folder = Path(folder)
        self.server = PsiServer.open(self.folder, state_path=self.folder / "state.json")
        self._lock = threading.Lock()

    def public_file(self, name: str) -> Path | None:
        """The path of a public file by name, or None (anything else is never served)."""
        if not PUBLIC_FILE.fullmatch(name):
            return None
        p = self.folder / name
        return p if p.is_file() else None

    def ingest(self, account: str, voucher: bytes) -> dict[str, Any]:
        with self._lock:
            self.server.reload_if_changed()
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
                 "report_raised": after["report"] is not None, "report": after["report"]}
                for i in range(len(vouchers))]

    return send


def http_fetch(base_url: str, key: str) -> Any:
    """A ``hashwatch.private.device`` fetch through the service's ``/v1/private/files``."""
    import httpx

    client = httpx.Client(base_url=base_url, timeout=60.0)

    def fetch(name: str) -> bytes:
        r = client.get(f"/v1/private/files/{name}", headers={"Authorization": f"Bearer {key}"})
        r.raise_for_status()
        return r.content

    return fetch


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
