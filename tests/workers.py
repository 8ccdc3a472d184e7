"""Real `hashwatch serve` worker processes for tests that need more than one worker, a
kill -9, or a server restart (test_feed_service.py, test_faults.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Worker:
    """One `hashwatch serve` process (one uvicorn worker) on its own port."""

    def __init__(self, db: str, log_dir: Path, name: str, **env: str) -> None:
        self.db, self.name = db, name
        self.port = free_port()
        self.log_path = log_dir / f"{name}.log"
        # receivers in these tests and benchmarks listen on loopback
        self.env = {**os.environ, "HASHWATCH_RATE_LIMIT": "0",
                    "HASHWATCH_RECONCILE_INTERVAL": "0",
                    "HASHWATCH_WEBHOOK_ALLOW_PRIVATE": "1", **env}
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, wait: bool = True) -> Worker:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hashwatch.cli", "serve", "--host", "127.0.0.1",
             "--port", str(self.port), "--db", self.db, "--log-level", "warning"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 90.0) -> dict:
        end = time.monotonic() + timeout
        last = ""
        while time.monotonic() < end:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited: {self.tail()}")
            try:
                r = httpx.get(f"{self.url}/v1/health/ready", timeout=2)
                if r.status_code == 200:
                    return r.json()
                last = r.text
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.1)
        raise TimeoutError(f"worker {self.name} not ready after {timeout} s: {last} "
                           f"{self.tail()}")

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""
