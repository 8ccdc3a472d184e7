"""Hundreds of concurrent list updates through the API on PostgreSQL, two service workers:
every added entry becomes matchable on both, every removed one stops matching on both.

The workers poll the feed only every 120 s here, so anything seen sooner came by push
(LISTEN/NOTIFY). The asserted bound (30 s, far below the poll) holds on a CI machine
shared with other jobs (a load average of 25 stretched some entries to 7 s); the freshness
distribution against its target (p99 250 ms) is measured by benchmarks/soak.py, and printed
here. Run several rounds on the same workers (issue 12: the skip was intermittent).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from conftest_pg import pg_url  # noqa: F401
from hashwatch.service.auth import create_key
from hashwatch.store import Store
from workers import Worker

N = 400
BOUND = 30.0  # seconds, from acknowledgement to matchable on a worker (see docstring)
ROUNDS = 3
# drop idle connections before uvicorn's 5 s keep-alive timeout closes them under our feet
LIMITS = httpx.Limits(keepalive_expiry=2.0)


@pytest.fixture(scope="module")
def cluster(pg_url, tmp_path_factory):  # noqa: F811
    from conftest_pg import create_database, drop_database

    db = create_database(pg_url)
    with Store.open(db) as s:
        key = create_key(s, "curator", "curate,match")
    logs = tmp_path_factory.mktemp("workers")
    ws = [Worker(db, logs, f"w{i}", HASHWATCH_REFRESH_INTERVAL="120") for i in range(2)]
    try:
        for w in ws:
            w.start(wait=False)
        for w in ws:
            w.wait_ready()
        yield ws, {"Authorization": f"Bearer {key}"}
    finally:
        for w in ws:
            w.stop()
        drop_database(pg_url, db)


def _values(round_: int, n: int) -> list[str]:
    rng = np.random.default_rng(500 + round_)
    return [bytes(rng.integers(0, 256, 32, dtype=np.uint8)).hex() for _ in range(n)]


class Watcher:
    """Polls one worker for the values acknowledged so far until each is in the wanted
    state (matchable, or not), recording when it was first seen so."""

    def __init__(self, worker: Worker, headers: dict, want_match: bool) -> None:
        self.client = httpx.Client(base_url=worker.url, headers=headers, timeout=30,
                                   limits=LIMITS)
        self.want = want_match
        self.pending: dict[str, float] = {}  # value -> acknowledged at
        self.fresh: dict[str, float] = {}  # value -> seconds from ack to wanted state
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def ack(self, value: str, at: float) -> None:
        with self.lock:
            self.pending[value] = at

    def run(self) -> None:
        while not self.done.is_set():
            with self.lock:
                todo = list(self.pending)
            if not todo:
                time.sleep(0.005)
                continue
            for i in range(0, len(todo), 1000):
                part = todo[i : i + 1000]
                r = self.client.post("/v1/match/hashes", json={"notify": False, "hashes": [
                    {"signal_type": "pdq", "value": v} for v in part]})
                now = time.monotonic()
                r.raise_for_status()
                for v, res in zip(part, r.json()["results"], strict=True):
                    if bool(res["matches"]) == self.want:
                        with self.lock:
                            self.fresh[v] = now - self.pending.pop(v)

    def close(self) -> None:
        self.done.set()
        self.thread.join(timeout=30)
        self.client.close()


def _concurrently(ws: list[Worker], headers: dict, calls: list[tuple[str, dict, str]],
                  watchers: list[Watcher]) -> list[dict]:
    clients = [httpx.Client(base_url=w.url, headers=headers, timeout=60, limits=LIMITS)
               for w in ws]
    try:
        def one(i: int) -> dict:
            path, body, value = calls[i]
            r = clients[i % len(clients)].post(path, json=body)
            at = time.monotonic()
            assert r.status_code in (200, 201), r.text
            for w in watchers:
                w.ack(value, at)
            return r.json()

        with ThreadPoolExecutor(32) as pool:
            return list(pool.map(one, range(len(calls))))
    finally:
        for c in clients:
            c.close()


def _wait_all(watchers: list[Watcher], n: int) -> None:
    end = time.monotonic() + BOUND + 10
    while time.monotonic() < end and any(len(w.fresh) < n for w in watchers):
        time.sleep(0.02)
    for w in watchers:
        w.close()


def _report(what: str, watchers: list[Watcher]) -> None:
    for k, w in enumerate(watchers):
        f = np.array(sorted(w.fresh.values()))
        if f.size:
            print(f"{what} worker {k}: n={f.size} p50={np.percentile(f, 50) * 1000:.0f} ms "
                  f"p99={np.percentile(f, 99) * 1000:.0f} ms max={f.max() * 1000:.0f} ms")


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_concurrent_adds_then_removals_reach_both_workers(cluster, round_):
    ws, headers = cluster
    name = f"conc{round_}"
    r = httpx.post(f"{ws[0].url}/v1/lists", json={"name": name}, headers=headers)
    assert r.status_code == 201, r.text
    values = _values(round_, N)

    adds = [Watcher(w, headers, True) for w in ws]
    for w in adds:
        w.thread.start()
    out = _concurrently(ws, headers, [
        (f"/v1/lists/{name}/entries", {"entries": [{"signal_type": "pdq", "value": v}]}, v)
        for v in values], adds)
    _wait_all(adds, N)
    _report("add", adds)
    for w in adds:
        missing = N - len(w.fresh)
        assert missing == 0, f"{missing} of {N} added entries never matchable on a worker"
        assert max(w.fresh.values()) <= BOUND, max(w.fresh.values())
    for w in ws:  # each worker times its notifications (readiness and /metrics)
        timing = httpx.get(f"{w.url}/v1/health/ready", timeout=10).json()["feed"]
        assert timing["notify_to_applied"]["n"] > 0, timing
        assert timing["refresh_seconds"]["n"] > 0, timing
        text = httpx.get(f"{w.url}/v1/health/metrics", timeout=10).text
        count = next(ln for ln in text.splitlines()
                     if ln.startswith("hashwatch_feed_notify_to_applied_seconds_count"))
        assert int(count.rsplit(" ", 1)[1]) > 0
        # the scrape names the worker process that answered it
        assert f'hashwatch_worker_info{{pid="{w.proc.pid}"' in text

    ids = [o["ids"][0] for o in out]
    removes = [Watcher(w, headers, False) for w in ws]
    for w in removes:
        w.thread.start()
    _concurrently(ws, headers, [
        (f"/v1/lists/{name}/entries/remove", {"ids": [i]}, v)
        for i, v in zip(ids, values, strict=True)], removes)
    _wait_all(removes, N)
    _report("remove", removes)
    for w in removes:
        left = N - len(w.fresh)
        assert left == 0, f"{left} of {N} removed entries still matched on a worker"
        assert max(w.fresh.values()) <= BOUND, max(w.fresh.values())


# -- the late commit, forced, against running workers ---------------------------------------
def _matches(w: Worker, headers: dict, value: str) -> bool:
    r = httpx.post(f"{w.url}/v1/match/hashes", headers=headers, timeout=30, json={
        "notify": False, "hashes": [{"signal_type": "pdq", "value": value}]})
    r.raise_for_status()
    return bool(r.json()["results"][0]["matches"])


def _in_progress(position: str) -> set[int]:
    """Transaction ids a worker's feed position ("pg:xmin:xmax:xip,...") saw in progress."""
    xip = position.split(":")[3]
    return {int(x) for x in xip.split(",") if x}


@pytest.mark.parametrize("push", [True, False], ids=["push", "poll"])
def test_late_commit_becomes_matchable_on_running_workers(pg_url, tmp_path, push):  # noqa: F811
    """Issue 12's interleaving against two `hashwatch serve` workers: transaction A inserts
    an entry and holds; B adds one through worker 0's API and commits; both workers refresh
    (worker 0 after its own write, worker 1 by push or poll) and their feed positions are
    checked to have seen A in progress; then A commits, and A must become matchable on both
    workers. The seq-based feed skipped A for good here. Push: the poll is 120 s, so only
    the notification of A's commit can bring it within the bound; poll: no LISTEN, a 0.2 s
    poll. Reconciliation is off, so no repair can hide a skip."""
    from conftest_pg import create_database, drop_database
    from test_feed import _held_add

    db = create_database(pg_url)
    a_val, b_val = _values(90, 2)
    env = ({"HASHWATCH_REFRESH_INTERVAL": "120"} if push else
           {"HASHWATCH_FEED_LISTEN": "0", "HASHWATCH_REFRESH_INTERVAL": "0.2"})
    ws: list[Worker] = []
    try:
        with Store.open(db) as s:
            headers = {"Authorization": f"Bearer {create_key(s, 'curator', 'curate,match')}"}
            lid = s.create_list("k").id
            ws = [Worker(db, tmp_path, f"w{i}", **env) for i in range(2)]
            for w in ws:
                w.start(wait=False)
            for w in ws:
                w.wait_ready()
            conn_a, tx_a = _held_add(s, lid, a_val)  # A inserts and holds
            try:
                a_txid = int(conn_a.exec_driver_sql("SELECT pg_current_xact_id()::text")
                             .scalar_one())
                r = httpx.post(f"{ws[0].url}/v1/lists/k/entries", headers=headers, timeout=30,
                               json={"entries": [{"signal_type": "pdq", "value": b_val}]})
                assert r.status_code == 201, r.text  # B committed, worker 0 refreshed
                end = time.monotonic() + BOUND
                while not _matches(ws[1], headers, b_val):  # worker 1: by push or poll
                    assert time.monotonic() < end, "B never reached worker 1"
                    time.sleep(0.05)
                for w in ws:
                    assert not _matches(w, headers, a_val)
                    position = w.wait_ready()["feed"]["position"]
                    assert a_txid in _in_progress(position), position
                tx_a.commit()  # A commits after both workers read past it
            finally:
                conn_a.close()
        end = time.monotonic() + BOUND
        for w in ws:
            while not _matches(w, headers, a_val):
                assert time.monotonic() < end, f"A was skipped by worker {w.name}"
                time.sleep(0.05)
            assert _matches(w, headers, b_val)
            assert w.wait_ready()["feed"]["reconcile_differences_total"] == 0
    finally:
        for w in ws:
            w.stop()
        drop_database(pg_url, db)
