"""Serving at scale without an engine: stateless ``hashwatch serve`` replicas on one
PostgreSQL, behind a round-robin client.

Each replica is a separate process holding its own PDQ index (its own ``--index-path``) and
following the lists' change feed in the shared database (``HASHWATCH_REFRESH_INTERVAL``, 1 s),
so an entry added through one replica is matched by every replica within about a second. A
replica answers ``/v1/health/ready`` with 503 until its index is loaded; the client skips a
replica that is down or not ready, so restarting replicas one at a time (a staggered reload:
the next starts only once the previous is ready again) never fails a request.

    python examples/replicas.py postgresql+psycopg://user:pw@127.0.0.1:5432/hashwatch

A load balancer (nginx, HAProxy, a Kubernetes Service) plays the client's part in production:
route only to replicas whose readiness probe passes.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx


class NoReplica(Exception):
    """No replica answered (all down or not ready)."""


class RoundRobin:
    """Send each request to the next replica; one that refuses the connection or answers
    503 (index loading) is skipped for this request and the next replica tried."""

    def __init__(self, urls: list[str], key: str, timeout: float = 10.0) -> None:
        self.urls = urls
        self.headers = {"Authorization": f"Bearer {key}"}
        self._next = itertools.cycle(range(len(urls)))
        self.client = httpx.Client(timeout=timeout)
        self.served_by: list[str] = []  # which replica answered each request

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        start = next(self._next)
        for i in range(len(self.urls)):
            url = self.urls[(start + i) % len(self.urls)]
            try:
                r = self.client.request(method, url + path, headers=self.headers, **kw)
            except httpx.TransportError:
                continue  # down (restarting): try the next replica
            if r.status_code == 503:
                continue  # up but its index is still loading
            self.served_by.append(url)
            return r
        raise NoReplica(f"no replica of {self.urls} answered {method} {path}")

    def close(self) -> None:
        self.client.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_replica(db: str, port: int, index_path: Path) -> subprocess.Popen:
    """One replica: ``hashwatch serve`` as its own process, its own index file."""
    env = {**os.environ, "HASHWATCH_REFRESH_INTERVAL": os.environ.get(
        "HASHWATCH_REFRESH_INTERVAL", "0.5")}
    return subprocess.Popen(
        [sys.executable, "-m", "hashwatch.cli", "serve", "--db", db, "--host", "127.0.0.1",
         "--port", str(port), "--index-path", str(index_path), "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"replica {url} exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{url}/v1/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"replica {url} not ready within {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Replicas:
    """``n`` replicas on ``db``, index files under ``folder``; ``rolling_restart`` restarts
    them one at a time, each only after the previous one is ready again."""

    def __init__(self, db: str, folder: Path, n: int = 2) -> None:
        self.db, self.folder = db, folder
        self.ports = [free_port() for _ in range(n)]
        self.urls = [f"http://127.0.0.1:{p}" for p in self.ports]
        self.procs = [start_replica(db, p, folder / f"replica{i}.idx")
                      for i, p in enumerate(self.ports)]
        for url, proc in zip(self.urls, self.procs, strict=True):
            wait_ready(url, proc)

    def restart(self, i: int, *, wait: bool = True) -> None:
        stop(self.procs[i])
        self.procs[i] = start_replica(self.db, self.ports[i], self.folder / f"replica{i}.idx")
        if wait:
            wait_ready(self.urls[i], self.procs[i])

    def rolling_restart(self) -> None:
        for i in range(len(self.procs)):
            self.restart(i)

    def close(self) -> None:
        for p in self.procs:
            stop(p)


def main(db: str) -> None:
    import tempfile

    from hashwatch.service.auth import create_key
    from hashwatch.store import Store

    with Store.open(db) as store:
        admin = create_key(store, f"replicas-admin-{os.getpid()}", "admin", actor="example")
    with tempfile.TemporaryDirectory() as tmp:
        reps = Replicas(db, Path(tmp))
        client = RoundRobin(reps.urls, admin)
        try:
            pdq = "f" * 64
            client.request("POST", "/v1/lists", json={"name": f"example-{os.getpid()}"})
            print("replicas ready:", reps.urls)
            for _ in range(4):
                r = client.request("POST", "/v1/match/hashes",
                                   json={"hashes": [{"signal_type": "pdq", "value": pdq}]})
                print(client.served_by[-1], r.status_code)
            reps.rolling_restart()
            print("rolling restart done; served by:", sorted(set(client.served_by)))
        finally:
            client.close()
            reps.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.environ["HASHWATCH_DB"])
