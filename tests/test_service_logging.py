"""The running service's own log lines (a real `hashwatch serve` process): they carry a
level prefix like uvicorn's, and a bad --log-level is refused before any work."""

from __future__ import annotations

import socket
import time

import httpx
from typer.testing import CliRunner

from hashwatch.cli import app
from hashwatch.service.auth import create_key
from hashwatch.store import Store
from workers import Worker


def test_service_warning_lines_carry_their_level(tmp_path):
    db = f"sqlite:///{tmp_path / 'hw.db'}"
    with Store.open(db) as s:
        key = create_key(s, "curator", "curate,match")
    w = Worker(db, tmp_path, "w0").start()
    try:
        h = {"Authorization": f"Bearer {key}"}
        assert httpx.post(f"{w.url}/v1/lists", json={"name": "gone"}, headers=h
                          ).status_code < 300
        # a client that drops the connection mid-upload: the service warns (see
        # test_service_hardening for what is imported: nothing)
        head = ("POST /v1/lists/gone/import?format=hashlines&signal=pdq HTTP/1.1\r\n"
                f"Host: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
                "Content-Type: application/octet-stream\r\nContent-Length: 10000000\r\n\r\n")
        with socket.create_connection(("127.0.0.1", w.port)) as sock:
            sock.sendall(head.encode() + "".join(f"{i:064x}\n" for i in range(1, 2001)).encode())
            time.sleep(0.5)
        end = time.monotonic() + 30
        lines: list[str] = []
        while time.monotonic() < end:
            lines = [ln for ln in w.log_path.read_text().splitlines() if "disconnected" in ln]
            if lines:
                break
            time.sleep(0.2)
        assert len(lines) == 1, w.log_path.read_text()
        assert lines[0].startswith("WARNING:"), lines[0]
        assert "gone" in lines[0]
    finally:
        w.stop()


def test_bad_log_level_is_refused_before_any_work(tmp_path):
    db = tmp_path / "hw.db"
    r = CliRunner().invoke(app, ["serve", "--db", f"sqlite:///{db}", "--log-level", "loud"])
    assert r.exit_code == 2, r.output
    assert "--log-level" in r.output and "warning" in r.output
    assert not db.exists()  # refused before the database was created
