"""Fault injection (issue 12): a worker killed with SIGKILL during a list import, an upload
and a webhook delivery; PostgreSQL restarted under load; the disk under a SQLite database
filled up. After each: nothing acknowledged to a client is lost, nothing is applied twice,
imports resume (rows) or roll back (bulk), the service recovers by itself, and the index
equals the store. (Triage killed mid-run and resumed: tests/test_triage.py::
test_kill_and_resume, marked ``fault`` too.) Run alone with ``pytest -m fault``.

Every wait is bounded, and each test as a whole by ``FAULT_TIMEOUT`` (pytest-timeout: a hang
fails the test instead of stalling CI); the whole module takes about a minute on an idle
machine.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

from conftest_pg import SCRIPT, create_database, drop_database, pg_db, pg_url  # noqa: F401
from hashwatch.service import webhooks as wh
from hashwatch.service.auth import create_key
from hashwatch.store import Store
from workers import Worker

FAULT_TIMEOUT = 600  # seconds per test: ~10x an idle run, room for a shared CI machine
pytestmark = [pytest.mark.fault, pytest.mark.timeout(FAULT_TIMEOUT)]


def _values(seed: int, n: int) -> list[str]:
    codes = np.random.default_rng(seed).integers(0, 256, (n, 32), dtype=np.uint8)
    text = codes.tobytes().hex()
    return [text[i : i + 64] for i in range(0, len(text), 64)]


def _keys(db: str) -> dict[str, str]:
    with Store.open(db) as s:
        k = create_key(s, "ops", "admin,curate,match,hash")
    return {"Authorization": f"Bearer {k}"}


def _live_pdq(db: str) -> set[str]:
    with Store.open(db) as s, s.snapshot() as snap:
        return {r[2] for b in snap.live("pdq") for r in b}


def _in_sync(w: Worker, h: dict, n: int | None = None) -> dict:
    """The worker's own check of its index against the store (repairs nothing here)."""
    rep = httpx.post(f"{w.url}/v1/index/reconcile?repair=false", headers=h, timeout=60).json()
    assert rep["differences"] == 0, rep
    if n is not None:
        assert sum(c["store_count"] for c in rep["lists"]) == n
    return rep


def _wait(pred, timeout: float, step: float = 0.05):  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def _count(db: str, list_name: str) -> int:
    with Store.open(db) as s:
        return s.get_list(list_name).entry_count or 0


def _copying(db: str) -> bool:
    """A bulk import's transaction is at work on its staging table: COPY into it, or the
    set-based insert of a staged chunk (the file is parsed before each chunk's COPY)."""
    with Store.open(db, migrate=False) as s, s.engine.connect() as conn:
        return bool(conn.execute(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
            "AND pid <> pg_backend_pid() "  # (this query's own text matches too)
            "AND (query LIKE 'COPY hw_stage%' OR query LIKE '%FROM hw_stage%')")).scalar_one())


# -- kill -9 during a list import --------------------------------------------------------
@pytest.mark.parametrize("method", ["rows", "bulk"])
def test_worker_killed_during_import(pg_db, tmp_path, method):  # noqa: F811
    h = _keys(pg_db)
    n = 60_000
    body = ("\n".join(_values(1, n)) + "\n").encode()
    w = Worker(pg_db, tmp_path, "w").start()
    try:
        httpx.post(f"{w.url}/v1/lists", json={"name": "imp"}, headers=h).raise_for_status()
        url = f"{w.url}/v1/lists/imp/import?format=hashlines&signal=pdq&method={method}"
        result: dict = {}

        def send() -> None:
            try:
                result["r"] = httpx.post(url, content=body, headers=h, timeout=120)
            except httpx.HTTPError as exc:
                result["error"] = exc

        t = threading.Thread(target=send)
        t.start()
        if method == "rows":  # killed once some batches have committed
            assert _wait(lambda: _count(pg_db, "imp") > 0, 60)
        else:  # killed while the file is staged or applied (one transaction either way)
            assert _wait(lambda: _copying(pg_db), 60, step=0.01)
        w.kill9()
        t.join(30)
        assert "r" not in result or result["r"].status_code != 200, "finished before the kill"
        before = _count(pg_db, "imp")
        if method == "rows":
            assert 0 < before < n  # committed batches stay
        else:
            assert before == 0  # all or nothing: rolled back
        w.start()  # the service comes back by itself and holds what the store holds
        _in_sync(w, h, before)
        # sending the file again completes the import without adding anything twice
        r = httpx.post(url, content=body, headers=h, timeout=300)
        assert r.status_code == 200, r.text
        assert (r.json()["added"], r.json()["duplicates"]) == (n - before, before)
        assert _count(pg_db, "imp") == n
        _in_sync(w, h, n)
    finally:
        w.stop()


# -- kill -9 during uploads ----------------------------------------------------------------
def _jpeg(i: int) -> bytes:
    rng = np.random.default_rng(i)
    y, x = np.mgrid[0:240, 0:320].astype(np.float32)
    img = np.stack([128 + 100 * np.sin(x / (20 + i)) * np.cos(y / 30),
                    128 + 90 * np.cos((x + 2 * y) / (40 + i)), 255 * x / 320], axis=2)
    img[30:90, 40 + i:120 + i] = (250, 240, 30)
    img += rng.normal(0, 3, img.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_worker_killed_during_uploads(pg_db, tmp_path):  # noqa: F811
    h = _keys(pg_db)
    imgs = [_jpeg(i) for i in range(6)]
    w = Worker(pg_db, tmp_path, "w", HASHWATCH_RUN_WEBHOOK_WORKER="0").start()
    acked: list[dict] = []
    try:
        c = httpx.Client(base_url=w.url, headers=h, timeout=60)
        c.post("/v1/lists", json={"name": "up"}).raise_for_status()
        for img in imgs:
            pdq = c.post("/v1/hash", files={"file": ("k.jpg", img)}).json()["hashes"]["pdq"]
            c.post("/v1/lists/up/entries", json={"entries": [
                {"signal_type": "pdq", "value": pdq}]}).raise_for_status()
        c.post("/v1/lists/up/webhooks", json={"url": "http://127.0.0.1:9/x"})
        c.close()
        stop = threading.Event()

        def client(k: int) -> None:
            cc = httpx.Client(base_url=w.url, headers=h, timeout=30)
            i = 0
            while not stop.is_set():
                ref = f"c{k}-{i}"
                i += 1
                try:
                    r = cc.post("/v1/match/upload", files={"file": ("u.jpg", imgs[i % 6])},
                                data={"ref": ref})
                except httpx.HTTPError:
                    return
                if r.status_code == 200:
                    acked.append(dict(r.json(), ref=ref))

        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        assert _wait(lambda: len(acked) >= 8, 60)
        w.kill9()
        stop.set()
        for t in threads:
            t.join(30)
        w.start()
        with Store.open(pg_db) as s, s.engine.connect() as conn:
            audited = [r[0] for r in conn.exec_driver_sql(
                "SELECT detail FROM audit_log WHERE action = 'match.upload'")]
            items = dict(conn.exec_driver_sql(
                "SELECT public_id, filename FROM review_items").all())
            events = conn.exec_driver_sql("SELECT count(*) FROM outbox").scalar_one()
        import json

        refs = [json.loads(d)["ref"] for d in audited]
        for a in acked:  # every acknowledged upload: audited once, its review item and events
            assert refs.count(a["ref"]) == 1
            assert a["review_item_id"] in items and items[a["review_item_id"]] == a["ref"]
        assert len(set(items.values())) == len(items)  # no upload kept twice
        assert events >= sum(a["events"] for a in acked)
        _in_sync(w, h, 6)
    finally:
        w.stop()


# -- kill -9 during a webhook delivery ---------------------------------------------------
class SlowReceiver:
    """Holds the first delivery (the worker is killed meanwhile); applies each event id
    once and answers 200 to a re-delivery it has already applied."""

    def __init__(self, hold: float) -> None:
        self.secret = ""
        self.applied: list[str] = []
        self.deliveries = 0
        self.first_seen = threading.Event()
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.deliveries += 1
                if outer.deliveries == 1:
                    outer.first_seen.set()
                    time.sleep(hold)  # the sender dies while we hold the request
                eid = self.headers.get(wh.EVENT_HEADER, "")
                ok = wh.verify_signature(outer.secret, body,
                                         self.headers.get(wh.TIMESTAMP_HEADER),
                                         self.headers.get(wh.SIGNATURE_HEADER), eid)
                if ok and eid not in outer.applied:
                    outer.applied.append(eid)
                self.send_response(200 if ok else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_worker_killed_during_webhook_delivery(pg_db, tmp_path):  # noqa: F811
    h = _keys(pg_db)
    rx = SlowReceiver(hold=4.0)
    env = {"HASHWATCH_WEBHOOK_TIMEOUT": "2", "HASHWATCH_WEBHOOK_LEASE": "3",
           "HASHWATCH_WEBHOOK_POLL_INTERVAL": "0.1", "HASHWATCH_WEBHOOK_BACKOFF_BASE": "0.2"}
    w = Worker(pg_db, tmp_path, "w", **env).start()
    try:
        c = httpx.Client(base_url=w.url, headers=h, timeout=30)
        c.post("/v1/lists", json={"name": "hk"}).raise_for_status()
        rx.secret = c.post("/v1/lists/hk/webhooks", json={"url": rx.url}).json()["secret"]
        vals = _values(3, 5)
        c.post("/v1/lists/hk/entries", json={"entries": [
            {"signal_type": "md5", "value": v[:32]} for v in vals]}).raise_for_status()
        r = c.post("/v1/match/hashes", json={"hashes": [
            {"signal_type": "md5", "value": v[:32], "ref": f"r{i}"} for i, v in enumerate(vals)]})
        assert r.json()["events"] == 5  # acknowledged: five events to deliver
        c.close()
        assert rx.first_seen.wait(30)
        w.kill9()  # while the receiver holds the first delivery
        w.start()
        assert _wait(lambda: len(rx.applied) == 5, 60), rx.applied
        with Store.open(pg_db) as s, s.engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT event_id, status FROM outbox").all()
        assert sorted(e for e, _ in rows) == sorted(rx.applied)  # each applied exactly once
        assert _wait(lambda: all(st == "delivered" for _e, st in Store.open(pg_db).engine
                                 .connect().exec_driver_sql(
                                     "SELECT event_id, status FROM outbox").all()), 30)
        assert rx.deliveries >= 6  # the interrupted one was delivered again (at least once)
    finally:
        w.stop()
        rx.server.shutdown()


# -- PostgreSQL restarted under load -----------------------------------------------------
@pytest.fixture
def own_cluster(tmp_path):
    """A PostgreSQL cluster of its own (restarting the shared one would break other tests)."""
    if not (Path(os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin")) / "initdb").exists():
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL 15 needed under CI=true")
        pytest.skip("PostgreSQL 15 not installed")
    d = Path(f"/tmp/hw-fault-pg-{os.getpid()}-{time.monotonic_ns()}")
    out = subprocess.run([str(SCRIPT), "start", str(d)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    url = next(x.split("=", 1)[1].strip("'") for x in out.stdout.split()
               if x.startswith("HASHWATCH_TEST_PG_URL="))
    yield d, url
    subprocess.run([str(SCRIPT), "stop", str(d)], capture_output=True, timeout=60)


def test_postgresql_restart_under_load(own_cluster, tmp_path):
    d, admin = own_cluster
    db = create_database(admin)
    h = _keys(db)
    ws = [Worker(db, tmp_path, f"w{i}") for i in range(2)]
    for w in ws:
        w.start()
    acked: list[str] = []
    failures = 0
    stop = threading.Event()

    def load(k: int) -> None:
        nonlocal failures
        c = httpx.Client(base_url=ws[k % 2].url, headers=h, timeout=30)
        for v in _values(100 + k, 100_000):
            if stop.is_set():
                return
            try:
                r = c.post("/v1/lists/pg/entries", json={"entries": [
                    {"signal_type": "pdq", "value": v}]})
                if r.status_code == 201:
                    acked.append(v)
                    continue
            except httpx.HTTPError:
                pass
            failures += 1  # refused while the server is down: not acknowledged
            time.sleep(0.05)

    try:
        httpx.post(f"{ws[0].url}/v1/lists", json={"name": "pg"}, headers=h).raise_for_status()
        threads = [threading.Thread(target=load, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        assert _wait(lambda: len(acked) >= 50, 60)
        out = subprocess.run([str(SCRIPT), "restart", str(d)], capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        n = len(acked)
        # recovers by itself: writes are acknowledged again, on both workers
        assert _wait(lambda: len(acked) >= n + 50, 60), "no write acknowledged after restart"
        stop.set()
        for t in threads:
            t.join(30)
        live = _live_pdq(db)
        assert set(acked) <= live  # nothing acknowledged lost
        for w in ws:  # each worker matches every acknowledged entry, and holds the store
            ready = _wait(lambda w=w: w.wait_ready()["feed"]["listening"], 30)
            assert ready
            _in_sync(w, h, len(live))
            r = httpx.post(f"{w.url}/v1/match/hashes", headers=h, timeout=60, json={
                "hashes": [{"signal_type": "pdq", "value": v} for v in acked[-500:]]})
            assert all(x["matches"] for x in r.json()["results"])
    finally:
        stop.set()
        for w in ws:
            w.stop()


# -- a disk that fills: a small tmpfs in the worker's own mount namespace ----------------
def _need_private_tmpfs(what: str) -> None:
    """Skip (fail under CI=true) unless a private tmpfs can be mounted: root, unshare, nsenter."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("nsenter") is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{what} needs root, unshare and nsenter under CI=true")
        pytest.skip("needs root, unshare and nsenter (a private tmpfs)")


def _start_in_private_mounts(w: Worker, script: str) -> None:
    """Run ``script`` (it mounts its tmpfs, then execs the service) as ``w``'s process, in a
    private mount namespace so the mount is seen by the worker alone."""
    log = open(w.log_path, "ab")  # noqa: SIM115
    w.proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                               script], env=w.env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    log.close()


# -- the disk under a SQLite database fills up -------------------------------------------
def test_disk_full_under_sqlite(tmp_path):
    # The worker runs in a private mount namespace on a small tmpfs mounted over `small/`
    # (needs root, as in CI); once it runs, a filler file leaves about 1 MB, the adds fill
    # the rest.
    _need_private_tmpfs("the disk-full test")
    small = tmp_path / "small"
    small.mkdir()
    db, keyfile = small / "hw.db", tmp_path / "key"
    py = sys.executable
    setup = ("import sys; from hashwatch.store import Store; "
             "from hashwatch.service.auth import create_key; "
             f"s = Store.open({str(db)!r}); s.create_list('dl'); "
             f"open({str(keyfile)!r}, 'w').write(create_key(s, 'ops', 'admin,curate,match'))")
    w = Worker(str(db), tmp_path, "w")
    script = (f"mount -t tmpfs -o size=16m tmpfs {small} && {py} -c \"{setup}\" && "
              f"exec {py} -m hashwatch.cli serve --host 127.0.0.1 --port {w.port} "
              f"--db {db} --log-level warning")
    _start_in_private_mounts(w, script)
    try:
        w.wait_ready()
        # the disk fills under the running service: a filler leaves it about 1 MB
        subprocess.run(["nsenter", "-t", str(w.proc.pid), "-m", "sh", "-c",
                        f"dd if=/dev/zero of={small}/filler bs=256k status=none 2>/dev/null; "
                        f"truncate -s -1M {small}/filler"], check=True)
        h = {"Authorization": f"Bearer {keyfile.read_text()}"}
        c = httpx.Client(base_url=w.url, headers=h, timeout=60)
        vals = _values(7, 200 * 500)
        acked: list[str] = []
        full = None
        for k in range(200):
            part = vals[k * 500 : (k + 1) * 500]
            r = c.post("/v1/lists/dl/entries", json={"entries": [
                {"signal_type": "pdq", "value": v} for v in part]})
            if r.status_code != 201:
                full = r
                break
            acked += part
        assert full is not None, "the disk never filled"
        # a clear error, and nothing of the refused request was kept (one transaction)
        assert full.status_code == 507 and full.json()["error"]["code"] == "storage_full"
        assert c.get("/v1/lists/dl").json()["entry_count"] == len(acked)
        # reads go on while the disk is full
        r = c.post("/v1/match/hashes", json={"hashes": [
            {"signal_type": "pdq", "value": v} for v in acked[-200:]]})
        assert r.status_code == 200 and all(x["matches"] for x in r.json()["results"])
        # space comes back: writes work again without a restart
        subprocess.run(["nsenter", "-t", str(w.proc.pid), "-m", "truncate", "-s", "0",
                        str(small / "filler")], check=True)
        more = vals[len(acked) : len(acked) + 500]
        r = c.post("/v1/lists/dl/entries", json={"entries": [
            {"signal_type": "pdq", "value": v} for v in more]})
        assert r.status_code == 201, r.text
        acked += more
        assert c.get("/v1/lists/dl").json()["entry_count"] == len(acked)
        rep = c.post("/v1/index/reconcile?repair=false").json()
        assert rep["differences"] == 0 and rep["lists"][0]["store_count"] == len(acked)
        assert w.proc.poll() is None  # the worker never went down
        c.close()
    finally:
        w.stop()


# -- the index cannot be saved at start (its disk is full) -------------------------------
def test_serve_with_the_index_disk_full(tmp_path):
    # The index folder is a 1 MB tmpfs filled before `serve` starts: the service starts,
    # serves from memory, shows why the index is not saved, and saves it once space is back.
    _need_private_tmpfs("the index-disk-full test")
    idx, db = tmp_path / "idx", tmp_path / "hw.db"
    idx.mkdir()
    known = _values(11, 300)
    with Store.open(db) as s:
        from hashwatch.store import EntryIn

        s.create_list("dl")
        s.add_entries("dl", [EntryIn("pdq", v) for v in known])
    h = _keys(str(db))
    w = Worker(str(db), tmp_path, "w", HASHWATCH_INDEX_SAVE_RETRY="1")
    script = (f"mount -t tmpfs -o size=1m tmpfs {idx} && "
              f"(dd if=/dev/zero of={idx}/filler bs=64k status=none 2>/dev/null; true) && "
              f"exec {sys.executable} -m hashwatch.cli serve --host 127.0.0.1 --port {w.port} "
              f"--db {db} --index-path {idx}/hw.pdq.idx --log-level warning")
    _start_in_private_mounts(w, script)
    try:
        ready = w.wait_ready()
        assert "No space" in (ready["feed"]["index_save_error"] or ""), ready["feed"]
        assert "cannot save the index" in w.tail()
        c = httpx.Client(base_url=w.url, headers=h, timeout=60)
        metrics = c.get("/v1/health/metrics").text
        assert "hashwatch_index_saved 0" in metrics
        # it serves from memory: what was known, and what is added now
        new = _values(12, 50)
        assert c.post("/v1/lists/dl/entries", json={"entries": [
            {"signal_type": "pdq", "value": v} for v in new]}).status_code == 201
        r = c.post("/v1/match/hashes", json={"hashes": [
            {"signal_type": "pdq", "value": v} for v in known[:50] + new]})
        assert r.status_code == 200 and all(x["matches"] for x in r.json()["results"])
        # space comes back: the next retry saves, without a restart
        subprocess.run(["nsenter", "-t", str(w.proc.pid), "-m", "rm", "-f",
                        str(idx / "filler")], check=True)
        saved = _wait(lambda: c.get("/v1/health/ready").json()["feed"]["index_save_error"]
                      is None, 30, 0.2)
        assert saved, c.get("/v1/health/ready").json()["feed"]
        listing = subprocess.run(["nsenter", "-t", str(w.proc.pid), "-m", "ls", str(idx)],
                                 capture_output=True, text=True, check=True).stdout.split()
        assert "hw.pdq.idx" in listing and "hw.pdq.idx.json" in listing
        assert w.proc.poll() is None
        c.close()
    finally:
        w.stop()


# -- kill -9 during a SQLite bulk import: committed chunks stay, a re-run adds the rest ----
_SQLITE_IMPORT = """
import sys
from hashwatch.lists import import_stream
from hashwatch.store import Store, bulk

bulk.SQLITE_CHUNK_FIRST = bulk.SQLITE_CHUNK = 1_000  # many small chunks, one at a time
bulk.SQLITE_PAUSE = 0.02
with Store.open(sys.argv[1]) as s, open(sys.argv[2], "rb") as fh:
    import_stream(s, "imp", fh, "hashlines", signal="pdq", method="bulk")
"""


def test_sqlite_bulk_import_killed_then_resumed(tmp_path):
    """SQLite applies a bulk import in short transactions (other writers keep the lock):
    killed with SIGKILL between them, it keeps the committed chunks; importing the same file
    again adds exactly the rest (the rows already in are reported as duplicates), every
    line's entry is in once, with one change row, and the staging tables are gone."""
    db = str(tmp_path / "k.db")
    vals = _values(3, 40_000)
    vals[100:150] = vals[:50]  # repeated lines: the first occurrence is the one kept
    path = tmp_path / "list.txt"
    path.write_text("\n".join(vals) + "\nnot-a-hash\n")
    unique = len(set(vals))
    with Store.open(db) as s:
        s.create_list("imp")
    p = subprocess.Popen([sys.executable, "-c", _SQLITE_IMPORT, db, str(path)])
    try:
        assert _wait(lambda: _count(db, "imp") > 2_000, 120, step=0.02), "no chunk committed"
        p.kill()
    finally:
        p.wait(30)
    before = _count(db, "imp")
    assert 0 < before < unique, "the import finished before the kill"
    with Store.open(db) as s, open(path, "rb") as fh:
        from hashwatch.lists import import_stream

        res = import_stream(s, "imp", fh, "hashlines", signal="pdq", method="bulk")
        assert (res.added, res.bad_rows) == (unique - before, 1)
        assert res.duplicates == len(vals) - unique + before
        with s.engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT count(*), count(DISTINCT value) FROM entries e JOIN hash_lists l "
                "ON l.id = e.list_id WHERE l.name = 'imp'").one()
            feed = conn.exec_driver_sql(
                "SELECT count(*), count(DISTINCT entry_id) FROM changes WHERE op = 'add'").one()
            temp = conn.exec_driver_sql(
                "SELECT count(*) FROM sqlite_temp_master WHERE name LIKE 'hw_%'").scalar_one()
        assert tuple(rows) == (unique, unique) and tuple(feed) == (unique, unique)
        assert temp == 0
    assert _live_pdq(db) == set(vals)
