"""Soak: `hashwatch serve` on PostgreSQL, two workers, mixed load for N minutes.

    .venv/bin/python benchmarks/soak.py --minutes 10 --workdir /work/scratch/feed/soak

A PostgreSQL 15 cluster with default durability (fsync on) is started in WORKDIR/pg; a list of
``--entries`` random PDQ hashes is bulk-imported through the API; two workers (separate
`hashwatch serve` processes on one database) take a mixed load from ``--clients`` threads of
this process, and a local webhook receiver (signature and replay checks, as README tells
platforms) takes the list's match events:

* single PDQ lookups (2 % near-duplicates of list entries: hits, store look-ups, webhooks),
* batched lookups (100 hashes per request),
* uploads (generated 640x480 JPEGs; a quarter of them are on the list: match, review item,
  webhook event),
* list additions (1-5 entries per request) and removals of earlier additions
  (``--remove-batch`` entries per request, 1 by default; 4 keeps the list's size constant).

Every addition and removal is followed on *both* workers by a watcher that polls with
match requests until it is matchable (or gone): freshness = acknowledged -> seen, per
worker; an update never seen by the end (plus 10 s) is *missed*. Webhook events: every
event the API reported (``"events"``) must reach the receiver once (by event id); *late* =
received more than 10 s after the request that created it, *lost* = never (60 s grace).
Worker RSS from /proc at the start (after warm-up) and at the end, and every ``--sample``
seconds beside each worker's index size and the bytes of its PDQ index's arrays
(``index_bytes`` of /v1/health/ready: codes, ids, tombstones, chunk tables), so growth can be
told from warm-up and from the entries the load adds (a table per phase).

RSS verdict, per worker: over the samples after ``--warmup-minutes``, the least-squares slope
of RSS *less the index's arrays* must be at most ``--flat-slope`` MB/min. The list grows
during the soak (additions outnumber removals), and the entries added cost memory: ~100 bytes
each once folded into the index's big segment, ~170-200 bytes while they sit in the small
segments (their own chunk tables; folded when they reach 10 % of the big one), measured by the
index itself rather than assumed. Everything else (Python objects, malloc's free blocks,
caches, a leak) counts against flatness. The raw RSS slope and the index's share are printed
beside the verdict.

Anchor, in the same run: the same load for ``--anchor-minutes`` with LISTEN/NOTIFY off
(``HASHWATCH_FEED_LISTEN=0``: the 1 s polling the service did before), for freshness.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' Worker (a `hashwatch serve` process)

from workers import Worker  # noqa: E402

LIMITS = httpx.Limits(keepalive_expiry=2.0)


class Receiver:
    """Verifies signatures, applies each event id once, records arrival times."""

    def __init__(self) -> None:
        from hashwatch.service import webhooks as wh

        self.wh = wh
        self.secret = ""
        self.arrived: dict[str, float] = {}
        self.deliveries = 0
        self.duplicates = 0
        self.bad = 0
        self.lock = threading.Lock()
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                eid = self.headers.get(outer.wh.EVENT_HEADER, "")
                ok = outer.wh.verify_signature(outer.secret, body,
                                               self.headers.get(outer.wh.TIMESTAMP_HEADER),
                                               self.headers.get(outer.wh.SIGNATURE_HEADER), eid)
                with outer.lock:
                    outer.deliveries += 1
                    if not ok:
                        outer.bad += 1
                    elif eid in outer.arrived:
                        outer.duplicates += 1  # a re-delivery: acknowledged, not applied
                    else:
                        outer.arrived[eid] = time.time()
                self.send_response(200 if ok else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def rand_hex(rng: random.Random) -> str:
    return rng.randbytes(32).hex()


def near(value: str, rng: random.Random, flips: int = 6) -> str:
    v = int(value, 16)
    for b in rng.sample(range(256), flips):
        v ^= 1 << b
    return f"{v:064x}"


def make_images(n: int) -> list[bytes]:
    from PIL import Image

    out = []
    for i in range(n):
        rng = np.random.default_rng(900 + i)
        y, x = np.mgrid[0:480, 0:640].astype(np.float32)
        img = np.stack([128 + 100 * np.sin(x / (30 + 7 * i) + i) * np.cos(y / 50),
                        128 + 90 * np.cos((x + 2 * y) / (60 + i * 3)),
                        255 * (x / 640) * (1 - y / 480)], axis=2)
        img[40 + 10 * i: 160 + 10 * i, 60:200] = (250, 240, 30)
        img += rng.normal(0, 3, img.shape)
        buf = io.BytesIO()
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=88)
        out.append(buf.getvalue())
    return out


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + sys) of a process and its live descendants (decode processes)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        todo += [int(k) for k in kids]
    return total


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


ARENA_HEAP = 64 << 20  # glibc reserves each secondary malloc arena's heap as 64 MiB, aligned


def rss_parts(pid: int) -> dict[str, float]:
    """Resident MB of a process by kind of mapping (/proc/PID/smaps): ``heap`` (glibc's main
    arena, brk), ``arenas`` (secondary malloc arenas: the 64 MiB-aligned heaps glibc makes for
    threads), ``anon`` (other anonymous mappings: blocks malloc mmapped on their own,
    CPython's object arenas, thread stacks) and ``file`` (libraries, the mapped index)."""
    out = {"heap": 0.0, "arenas": 0.0, "anon": 0.0, "file": 0.0}
    kind = None
    try:
        text = Path(f"/proc/{pid}/smaps").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        head = line.split(None, 5)
        if "-" in head[0] and len(head) >= 5 and ":" not in head[0]:
            start = int(head[0].split("-")[0], 16)
            name = head[5].strip() if len(head) > 5 else ""
            if name == "[heap]":
                kind = "heap"
            elif name.startswith("/") or name.startswith("[") and name != "[stack]" \
                    and not name.startswith("[anon"):
                kind = "file" if name.startswith("/") else "anon"
            elif start % ARENA_HEAP == 0 and head[1].startswith("rw"):
                kind = "arenas"
            else:
                kind = "anon"
        elif line.startswith("Rss:") and kind is not None:
            out[kind] += int(line.split()[1]) / 1024
    return out


class Watch:
    """Freshness of list updates on one worker."""

    def __init__(self, worker: Worker, key: str) -> None:
        self.c = httpx.Client(base_url=worker.url, headers={"Authorization": f"Bearer {key}"},
                              timeout=30, limits=LIMITS)
        self.pending: dict[str, tuple[float, bool]] = {}  # value -> (acked at, want match)
        self.fresh: dict[bool, list[float]] = {True: [], False: []}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def ack(self, values: list[str], at: float, want: bool) -> None:
        with self.lock:
            for v in values:
                self.pending[v] = (at, want)

    def run(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                todo = list(self.pending.items())[:1000]
            if not todo:
                time.sleep(0.01)
                continue
            try:
                r = self.c.post("/v1/match/hashes", json={"notify": False, "hashes": [
                    {"signal_type": "pdq", "value": v} for v, _ in todo]})
                now = time.monotonic()
                r.raise_for_status()
            except httpx.HTTPError:
                time.sleep(0.05)
                continue
            for (v, (at, want)), res in zip(todo, r.json()["results"], strict=True):
                if bool(res["matches"]) == want:
                    with self.lock:
                        if self.pending.get(v, (None,))[0] == at:
                            del self.pending[v]
                            self.fresh[want].append(now - at)
            time.sleep(0.005)


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def run_phase(ws: list[Worker], keys: dict, images: list[bytes], known: list[str],
              minutes: float, clients: int, rx: Receiver, seed: int,
              every: float = 60.0, remove_batch: int = 1) -> dict:
    stats: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    events: list[tuple[float, int]] = []  # (request time, events reported)
    added: list[tuple[int, str]] = []  # (entry id, value) live additions, for removals
    added_lock = threading.Lock()
    watches = [Watch(w, keys["match"]) for w in ws]
    stop = time.monotonic() + minutes * 60

    def client(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        hc = [httpx.Client(base_url=w.url, timeout=60, limits=LIMITS) for w in ws]
        hm = {"Authorization": f"Bearer {keys['match']}"}
        hcur = {"Authorization": f"Bearer {keys['curate']}"}
        while time.monotonic() < stop:
            c = hc[rng.randrange(len(hc))]
            x = rng.random()
            t0 = time.monotonic()
            try:
                if x < 0.50:
                    kind = "single"
                    v = near(rng.choice(known), rng) if rng.random() < 0.02 else rand_hex(rng)
                    r = c.post("/v1/match/hashes", headers=hm,
                               json={"hashes": [{"signal_type": "pdq", "value": v}]})
                elif x < 0.60:
                    kind = "batch100"
                    r = c.post("/v1/match/hashes", headers=hm, json={"hashes": [
                        {"signal_type": "pdq", "value": rand_hex(rng)} for _ in range(100)]})
                elif x < 0.65:
                    kind = "upload"
                    data = rng.choice(images)
                    r = c.post("/v1/match/upload", headers=hm,
                               files={"file": ("u.jpg", data)}, data={"ref": f"u{k}"})
                elif x < 0.85:
                    kind = "add"
                    vals = [rand_hex(rng) for _ in range(rng.randint(1, 5))]
                    r = c.post("/v1/lists/soak/entries", headers=hcur, json={"entries": [
                        {"signal_type": "pdq", "value": v} for v in vals]})
                else:
                    kind = "remove"
                    with added_lock:
                        if not added:
                            continue
                        gone = [added.pop(rng.randrange(len(added)))
                                for _ in range(min(remove_batch, len(added)))]
                    r = c.post("/v1/lists/soak/entries/remove", headers=hcur,
                               json={"ids": [eid for eid, _ in gone]})
                at = time.monotonic()
                stats[kind].append(at - t0)
                if r.status_code >= 300:
                    errors[kind] += 1
                    continue
                body = r.json()
                if kind in ("single", "upload", "batch100") and body.get("events"):
                    events.append((t0, body["events"]))
                if kind == "add":
                    for w in watches:
                        w.ack(vals, at, True)
                    with added_lock:
                        added.extend(zip(body["ids"], vals, strict=True))
                elif kind == "remove":
                    for w in watches:
                        w.ack([val for _, val in gone], at, False)
            except httpx.HTTPError:
                errors["transport"] += 1
        for x in hc:
            x.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    cpu_start = [tree_cpu(w.proc.pid) for w in ws]
    own_start = time.process_time()
    t_start = time.monotonic()
    # (s, RSS MB, index size, RSS by kind of mapping) per worker
    samples: list[tuple[float, list[float], list[int], list[dict[str, float]]]] = []

    def sample() -> None:
        sizes, index_mb = [], []
        for w in ws:
            try:
                ready = httpx.get(f"{w.url}/v1/health/ready", timeout=10).json()
                sizes.append(int(ready["index_size"]))
                index_mb.append(int(ready["index_bytes"]) / 2**20)
            except (httpx.HTTPError, KeyError, ValueError):
                sizes.append(-1)
                index_mb.append(float("nan"))
        parts = [rss_parts(w.proc.pid) for w in ws]
        for p, x in zip(parts, index_mb, strict=True):
            p["index"] = x
        samples.append((time.monotonic() - t_start, [rss_mb(w.proc.pid) for w in ws], sizes,
                        parts))

    def sampler() -> None:
        sample()
        while time.monotonic() < stop - every / 2:
            time.sleep(min(every, max(0.0, stop - time.monotonic())))
            sample()

    for t in threads:
        t.start()
    sampling = threading.Thread(target=sampler, daemon=True)
    sampling.start()
    time.sleep(min(30, minutes * 60 / 4))
    rss_start = [rss_mb(w.proc.pid) for w in ws]
    for t in threads:
        t.join()
    wall = time.monotonic() - t_start
    rss_end = [rss_mb(w.proc.pid) for w in ws]
    sampling.join()
    sample()
    cpu = [tree_cpu(w.proc.pid) - c for w, c in zip(ws, cpu_start, strict=True)]
    own_cpu = time.process_time() - own_start
    grace = time.monotonic() + 10
    while time.monotonic() < grace and any(w.pending for w in watches):
        time.sleep(0.1)
    for w in watches:
        w.stop.set()
    missed = [len(w.pending) for w in watches]
    n_events = sum(n for _, n in events)
    return {"wall": wall, "cpu": cpu, "own_cpu": own_cpu,
            "stats": stats, "errors": dict(errors), "rss_start": rss_start,
            "rss_end": rss_end, "samples": samples, "missed": missed,
            "fresh": [w.fresh for w in watches],
            "events": n_events, "event_times": events}


def pg_cluster(work: Path, name: str, settings: dict[str, str] | None = None) -> str:
    """Start a PostgreSQL 15 cluster with default durability (fsync on) in ``work``/pg, with
    these server ``settings`` (ALTER SYSTEM, then a restart), and a fresh database ``name``
    in it; returns its URL. Stop it with ``.ci/postgres.sh stop work/pg``."""
    import sqlalchemy as sa

    env = dict(os.environ, HASHWATCH_PG_DURABLE="1")
    script = str(REPO / ".ci" / "postgres.sh")
    out = subprocess.run([script, "start", str(work / "pg")],
                         capture_output=True, text=True, check=True, env=env)
    admin = next(x.split("=", 1)[1].strip("'") for x in out.stdout.split()
                 if x.startswith("HASHWATCH_TEST_PG_URL="))
    eng = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with eng.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
        for k, v in (settings or {}).items():
            conn.exec_driver_sql(f"ALTER SYSTEM SET {k} = {v}")
    eng.dispose()
    if settings:
        subprocess.run([script, "restart", str(work / "pg")], check=True, env=env)
    return admin.rsplit("/", 1)[0] + "/" + name


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--anchor-minutes", type=float, default=1)
    ap.add_argument("--entries", type=int, default=200_000)
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--workdir", default="soak-bench")
    ap.add_argument("--sample", type=float, default=60.0,
                    help="seconds between samples of worker RSS and index size")
    ap.add_argument("--warmup-minutes", type=float, default=3.0,
                    help="RSS flatness is judged on the samples after this many minutes")
    ap.add_argument("--flat-slope", type=float, default=0.5,
                    help="MB/min: a worker's RSS is flat when the slope of its RSS less its "
                    "PDQ index's arrays after warm-up is at most this")
    ap.add_argument("--remove-batch", type=int, default=1,
                    help="entries per removal request; 4 balances the additions (1-5 "
                    "entries at 20 %% of requests vs removals at 15 %%): the list stays "
                    "the same size")
    ap.add_argument("--env", action="append", default=[],
                    help="NAME=VALUE for every worker (e.g. HASHWATCH_GIL_SWITCH_INTERVAL=0.001)")
    a = ap.parse_args()
    extra = dict(x.split("=", 1) for x in a.env)
    from hashwatch.service.auth import create_key
    from hashwatch.store import Store

    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    db = pg_cluster(work, "soak")
    ws: list[Worker] = []
    try:
        with Store.open(db) as s:
            keys = {"admin": create_key(s, "admin", "admin,curate,match"),
                    "curate": create_key(s, "curator", "curate"),
                    "match": create_key(s, "platform", "match,hash")}
        rng = np.random.default_rng(77)
        codes = rng.integers(0, 256, (a.entries, 32), dtype=np.uint8).tobytes().hex()
        known = [codes[i : i + 64] for i in range(0, len(codes), 64)]
        images = make_images(16)
        print("load average before:", os.getloadavg(), flush=True)
        results = {}
        phases = [("push", "1", a.minutes), ("anchor", "0", a.anchor_minutes)]
        for phase, listen, minutes in [p for p in phases if p[2] > 0]:
            env = {"HASHWATCH_FEED_LISTEN": listen, "HASHWATCH_RECONCILE_INTERVAL": "120",
                   "HASHWATCH_WORKERS": "2", "HASHWATCH_WEBHOOK_POLL_INTERVAL": "0.2", **extra}
            ws = [Worker(db, work, f"{phase}{i}", **env) for i in range(2)]
            for w in ws:
                w.start(wait=False)
            for w in ws:
                w.wait_ready(timeout=600)
            ha = {"Authorization": f"Bearer {keys['admin']}"}
            if phase == "push":
                c = httpx.Client(base_url=ws[0].url, headers=ha, timeout=600)
                c.post("/v1/lists", json={"name": "soak"}).raise_for_status()
                r = c.post("/v1/lists/soak/import?format=hashlines&signal=pdq&method=bulk",
                           content=("\n".join(known) + "\n").encode())
                r.raise_for_status()
                for img in images[:4]:  # a quarter of the uploads are known pictures
                    h = c.post("/v1/hash", files={"file": ("k.jpg", img)}).json()["hashes"]
                    c.post("/v1/lists/soak/entries", json={"entries": [
                        {"signal_type": "pdq", "value": h["pdq"]}]}).raise_for_status()
                rx = Receiver()
                rx.secret = c.post("/v1/lists/soak/webhooks",
                                   json={"url": rx.url}).json()["secret"]
                c.close()
                for w in ws:  # both workers hold the imported list before the load starts
                    end = time.monotonic() + 600
                    while time.monotonic() < end and w.wait_ready()["index_size"] < a.entries:
                        time.sleep(0.5)
            print(f"phase {phase}: {minutes} min", flush=True)
            res = run_phase(ws, keys, images, known, minutes, a.clients, rx,
                            seed=1 if phase == "push" else 2, every=a.sample,
                            remove_batch=a.remove_batch)
            time.sleep(5)
            res["ready"] = [w.wait_ready() for w in ws]
            results[phase] = res
            for w in ws:
                w.stop()
        # webhooks: every reported event delivered once; late / lost
        grace_end = time.monotonic() + 60
        total = sum(r["events"] for r in results.values())
        while time.monotonic() < grace_end and len(rx.arrived) < total:
            time.sleep(0.5)
        with Store.open(db) as s, s.engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT event_id, created_at, status, attempts FROM outbox").all()
        print("load average after:", os.getloadavg())
        report(results, rx, rows, a)
    finally:
        for w in ws:
            w.stop()
        subprocess.run([str(REPO / ".ci" / "postgres.sh"), "stop", str(work / "pg")],
                       check=False)


def flatness(samples: list, warmup_minutes: float, limit: float) -> list[str]:
    """Per worker, over the samples taken after ``warmup_minutes``: the least-squares slope
    (MB/min) of RSS less the PDQ index's arrays (``index_bytes``), the verdict (*flat* when
    that slope is at most ``limit`` MB/min), and beside it the raw RSS slope, the index's
    slope and what the index costs per entry added (bytes)."""
    after = [x for x in samples if x[0] >= warmup_minutes * 60]
    if len(after) < 3:
        return [f"not judged: {len(after)} samples after {warmup_minutes:g} min of warm-up"
                ] * (len(samples[0][1]) if samples else 0)
    t = np.array([x[0] for x in after]) / 60
    out = []
    for k in range(len(after[0][1])):
        rss = np.array([x[1][k] for x in after])
        n = np.array([x[2][k] for x in after], dtype=float)
        idx = np.array([x[3][k].get("index", float("nan")) for x in after])
        if np.isnan(idx).any():
            out.append("not judged: the worker did not report index_bytes")
            continue
        slope = float(np.polyfit(t, rss - idx, 1)[0])
        raw = float(np.polyfit(t, rss, 1)[0])
        idx_slope = float(np.polyfit(t, idx, 1)[0])
        per_min = float(np.polyfit(t, n, 1)[0])
        per_entry = idx_slope * 2**20 / per_min if per_min > 0 else float("nan")
        rest = rss - idx
        verdict = "FLAT" if slope <= limit else "GROWING"
        out.append(f"{verdict}: RSS less the index {slope:+.2f} MB/min over {t[0]:.1f}-"
                   f"{t[-1]:.1f} min (limit {limit:g}), {rest[0]:.1f} -> {rest[-1]:.1f} MB, "
                   f"range {rest.min():.1f}-{rest.max():.1f}; RSS {raw:+.2f} MB/min "
                   f"({rss[0]:.1f} -> {rss[-1]:.1f} MB), of which the index {idx_slope:+.2f} "
                   f"({per_min:+,.0f} entries/min, {per_entry:.0f} bytes per entry)")
    return out


def report(results: dict, rx: Receiver, outbox: list, a: argparse.Namespace) -> None:
    for phase, r in results.items():
        print(f"\n== {phase}: {r['wall']:.0f} s, 2 workers, {a.clients} client threads ==")
        total = sum(len(v) for v in r["stats"].values())
        print(f"requests: {total:,} ({total / r['wall']:.1f}/s); errors: {r['errors'] or 0}")
        for kind, xs in sorted(r["stats"].items()):
            print(f"  {kind:<9} n={len(xs):>7,} {len(xs) / r['wall']:>7.1f}/s  "
                  f"p50 {pct(xs, 50) * 1000:7.1f} ms  p99 {pct(xs, 99) * 1000:7.1f} ms")
        for k, f in enumerate(r["fresh"]):
            print(f"  worker {k} freshness add: n={len(f[True]):,} p50 "
                  f"{pct(f[True], 50) * 1000:.0f} ms p99 {pct(f[True], 99) * 1000:.0f} ms max "
                  f"{max(f[True], default=float('nan')) * 1000:.0f} ms; remove: n="
                  f"{len(f[False]):,} p50 {pct(f[False], 50) * 1000:.0f} ms p99 "
                  f"{pct(f[False], 99) * 1000:.0f} ms")
        print(f"  updates missed per worker: {r['missed']}")
        print(f"  CPU s per worker (with its decode processes): "
              f"{[round(c) for c in r['cpu']]}; load generator + watchers: {r['own_cpu']:.0f}")
        print(f"  worker RSS start/end MB: "
              f"{[f'{s:.0f}/{e:.0f}' for s, e in zip(r['rss_start'], r['rss_end'], strict=True)]}")
        print("  t (s) | worker RSS MB | index entries | RSS - first sample MB | index growth"
              " | heap / arenas / anon / file / index arrays MB per worker")
        (_, rss0, n0, _) = r["samples"][0]
        for t, rss, n, parts in r["samples"]:
            print(f"  {t:5.0f} | " + " / ".join(f"{x:.1f}" for x in rss) + " | "
                  + " / ".join(f"{x:,}" for x in n) + " | "
                  + " / ".join(f"{x - x0:+.1f}" for x, x0 in zip(rss, rss0, strict=True))
                  + " | " + " / ".join(f"{x - x0:+,}" for x, x0 in zip(n, n0, strict=True))
                  + " | " + "; ".join(" / ".join(f"{v:.1f}" for v in p.values())
                                      for p in parts))
        for k, line in enumerate(flatness(r["samples"], a.warmup_minutes, a.flat_slope)):
            print(f"  worker {k} RSS after warm-up: {line}")
        for k, rd in enumerate(r["ready"]):
            rec = rd["feed"]["reconcile"]
            print(f"  worker {k}: index {rd['index_size']:,}, push {rd['feed']['push']}, "
                  f"reconciliations' differences total "
                  f"{rd['feed']['reconcile_differences_total']}, last: "
                  f"{rec['differences'] if rec else 'none yet'}")
    from datetime import UTC, datetime

    reported = sum(r["events"] for r in results.values())
    status: dict[str, int] = defaultdict(int)
    delays, lost = [], 0
    for eid, created, st, _n in outbox:
        status[st] += 1
        if eid not in rx.arrived:
            lost += 1
            continue
        t0 = datetime.strptime(created, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=UTC).timestamp()
        delays.append(rx.arrived[eid] - t0)
    late = sum(1 for d in delays if d > 10)
    print(f"\nwebhooks: {reported} events reported by the API, {len(outbox)} in the outbox, "
          f"{len(rx.arrived)} received once ({rx.duplicates} re-deliveries acknowledged, not "
          f"applied; {rx.bad} bad signatures); outbox status {dict(status)}; delivery delay "
          f"p50 {pct(delays, 50) * 1000:.0f} ms p99 {pct(delays, 99) * 1000:.0f} ms; "
          f"late (> 10 s): {late}; lost: {lost}")
    push, anchor = results.get("push"), results.get("anchor")
    if push and anchor:
        p = [x for f in push["fresh"] for x in f[True]]
        q = [x for f in anchor["fresh"] for x in f[True]]
        print(f"freshness add p50/p99, push vs anchor (1 s poll): {pct(p, 50) * 1000:.0f}/"
              f"{pct(p, 99) * 1000:.0f} ms vs {pct(q, 50) * 1000:.0f}/{pct(q, 99) * 1000:.0f} ms"
              f" -> p99 {pct(q, 99) / pct(p, 99):.1f}x better")
    print(json.dumps({ph: {"errors": r["errors"], "missed": r["missed"]}
                      for ph, r in results.items()}))


if __name__ == "__main__":
    main()
