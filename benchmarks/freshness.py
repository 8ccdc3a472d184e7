"""Freshness: commit of a list update -> matchable on *every* worker (PostgreSQL, 2 workers).

    .venv/bin/python benchmarks/freshness.py --seconds 120 --load-clients 6 \\
        --workdir /work/scratch/feed2/fresh

A PostgreSQL 15 cluster with default durability (fsync on) is started in WORKDIR/pg; a list of
``--entries`` random PDQ hashes is bulk-imported; two `hashwatch serve` workers (push on,
the default 1 s poll as the fallback) serve it. Optional background load: ``--load-clients``
threads sending the soak's mix (single and batched lookups, list additions and removals, no
uploads) to both workers.

The cluster runs with ``track_commit_timestamp = on``, so each probe update's commit time is
PostgreSQL's own (``pg_xact_commit_timestamp`` of the change row's transaction), read on the
same clock as the watchers'.

Probe: one update at a time (every ``--every`` s, jittered), taking turns: an addition by
*another process* (this one, straight into the store: neither worker writes it, both learn
of it by push), an addition through worker 0's API and one through worker 1's API, then a
removal of an earlier probe entry the same three ways. For each worker a watcher thread asks
that worker, back to back, whether the probe value matches (one-hash requests). The update
committed at c; the worker answered "not yet" to a request sent at s0 and "yes" to one
answered at r1, so

    freshness (commit -> matchable on this worker) <= r1 - c      (the figure reported)
    freshness                                      >= s0 - c      (printed beside it)

The gap between the two bounds is about one watcher round trip (printed), so the upper
bound is conservative. Each worker's own counters (/v1/health/metrics: notify ->
applied, refresh duration) are printed after the run to say where the time goes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' Worker (a `hashwatch serve` process)
sys.path.insert(0, str(REPO / "benchmarks"))

from soak import LIMITS, near, pg_cluster, rand_hex  # noqa: E402
from workers import Worker  # noqa: E402


class Watch:
    """Asks one worker, back to back, whether the current probe value is in the wanted state."""

    def __init__(self, worker: Worker, key: str) -> None:
        self.c = httpx.Client(base_url=worker.url, headers={"Authorization": f"Bearer {key}"},
                              timeout=30, limits=LIMITS)
        self.cv = threading.Condition()
        self.job: tuple[str, bool] | None = None  # (value, want match)
        self.result: tuple[float, float] | None = None  # (last "not yet" sent, "yes" answered)
        self.rtt: list[float] = []
        self.stop = False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def watch(self, value: str, want: bool) -> None:
        with self.cv:
            self.job, self.result = (value, want), None
            self.cv.notify_all()

    def wait(self, timeout: float) -> tuple[float, float] | None:
        end = time.monotonic() + timeout
        with self.cv:
            while self.result is None and time.monotonic() < end:
                self.cv.wait(0.05)
            return self.result

    def run(self) -> None:
        last_no: tuple[tuple[str, bool] | None, float] = (None, 0.0)  # (job, sent at)
        while True:
            with self.cv:
                while not self.stop and (self.job is None or self.result is not None):
                    self.cv.wait(0.05)
                if self.stop:
                    return
                job = self.job
                value, want = job
            s = time.monotonic()
            try:
                r = self.c.post("/v1/match/hashes", json={"notify": False, "hashes": [
                    {"signal_type": "pdq", "value": value}]})
                r.raise_for_status()
            except httpx.HTTPError:
                continue
            e = time.monotonic()
            self.rtt.append(e - s)
            if bool(r.json()["results"][0]["matches"]) == want:
                with self.cv:
                    if self.job == job:
                        self.result = (last_no[1] if last_no[0] == job else s, e)
                        self.cv.notify_all()
            else:
                last_no = (job, s)


def background(ws: list[Worker], keys: dict, known: list[str], stop: threading.Event,
               seed: int, errors: dict) -> None:
    rng = random.Random(seed)
    hc = [httpx.Client(base_url=w.url, timeout=60, limits=LIMITS) for w in ws]
    hm = {"Authorization": f"Bearer {keys['match']}"}
    hcur = {"Authorization": f"Bearer {keys['curate']}"}
    added: list[int] = []
    while not stop.is_set():
        c = hc[rng.randrange(len(hc))]
        x = rng.random()
        try:
            if x < 0.55:
                v = near(rng.choice(known), rng) if rng.random() < 0.02 else rand_hex(rng)
                r = c.post("/v1/match/hashes", headers=hm,
                           json={"hashes": [{"signal_type": "pdq", "value": v}]})
            elif x < 0.70:
                r = c.post("/v1/match/hashes", headers=hm, json={"hashes": [
                    {"signal_type": "pdq", "value": rand_hex(rng)} for _ in range(100)]})
            elif x < 0.90 or not added:
                r = c.post("/v1/lists/bg/entries", headers=hcur, json={"entries": [
                    {"signal_type": "pdq", "value": rand_hex(rng)}
                    for _ in range(rng.randint(1, 5))]})
                if r.status_code < 300:
                    added.extend(r.json()["ids"])
            else:
                r = c.post("/v1/lists/bg/entries/remove", headers=hcur,
                           json={"ids": [added.pop(rng.randrange(len(added)))]})
            if r.status_code >= 300:
                errors[r.status_code] += 1
        except httpx.HTTPError as exc:
            errors[type(exc).__name__] += 1
    for x in hc:
        x.close()


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def metrics(w: Worker) -> dict[str, float]:
    out = {}
    for line in httpx.get(f"{w.url}/v1/health/metrics", timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--every", type=float, default=0.3)
    ap.add_argument("--entries", type=int, default=200_000)
    ap.add_argument("--load-clients", type=int, default=0)
    ap.add_argument("--workdir", default="fresh-bench")
    ap.add_argument("--env", action="append", default=[],
                    help="NAME=VALUE for both workers (e.g. HASHWATCH_FEED_LISTEN=0)")
    a = ap.parse_args()
    from hashwatch.service.auth import create_key
    from hashwatch.store import EntryIn, Store
    from hashwatch.store.bulk import bulk_add

    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    db = pg_cluster(work, "fresh", {"track_commit_timestamp": "on"})
    import sqlalchemy as sa

    ws: list[Worker] = []
    extra = dict(x.split("=", 1) for x in a.env)
    try:
        store = Store.open(db)
        ts_eng = sa.create_engine(db.replace("postgresql:", "postgresql+psycopg:", 1)
                                  if db.startswith("postgresql:") else db)
        # the commit time of an entry's newest change, on this process' monotonic clock (a
        # fresh cluster: transaction ids are below 2**32, so xid8 -> text -> xid is exact)
        commit_sql = sa.text(
            "SELECT EXTRACT(EPOCH FROM pg_xact_commit_timestamp("
            "CAST(CAST(txid AS text) AS xid))) FROM changes WHERE entry_id = :e "
            "ORDER BY seq DESC LIMIT 1")

        def committed(entry_id: int) -> float:
            with ts_eng.connect() as conn:
                wall = float(conn.execute(commit_sql, {"e": entry_id}).scalar_one())
            return wall - (time.time() - time.monotonic())
        keys = {"curate": create_key(store, "curator", "curate"),
                "match": create_key(store, "platform", "match,hash")}
        rng = np.random.default_rng(78)
        codes = rng.integers(0, 256, (a.entries, 32), dtype=np.uint8).tobytes().hex()
        known = [codes[i : i + 64] for i in range(0, len(codes), 64)]
        for name in ("fresh", "bg", "probe"):
            store.create_list(name)
        bulk_add(store, "fresh", (EntryIn("pdq", v) for v in known), actor="bench")
        ws = [Worker(db, work, f"w{i}", HASHWATCH_RECONCILE_INTERVAL="120",
                     HASHWATCH_WORKERS="2", **extra) for i in range(2)]
        for w in ws:
            w.start(wait=False)
        for w in ws:
            w.wait_ready(timeout=600)
        print("load average before:", os.getloadavg(), flush=True)
        m0 = [metrics(w) for w in ws]
        stop = threading.Event()
        bg_errors: dict = defaultdict(int)
        bg = [threading.Thread(target=background, args=(ws, keys, known, stop, 100 + k, bg_errors),
                               daemon=True) for k in range(a.load_clients)]
        for t in bg:
            t.start()
        watches = [Watch(w, keys["match"]) for w in ws]
        api = [httpx.Client(base_url=w.url, timeout=60, limits=LIMITS,
                            headers={"Authorization": f"Bearer {keys['curate']}"}) for w in ws]
        prng = random.Random(5)
        fresh: dict[tuple[str, str], list[list[float]]] = defaultdict(lambda: [[], []])
        lower: dict[tuple[str, str], list[list[float]]] = defaultdict(lambda: [[], []])
        missed: dict[tuple[str, str], int] = defaultdict(int)
        live: list[tuple[int, str]] = []
        writes: list[float] = []
        end = time.monotonic() + a.seconds
        k = 0
        c0 = time.process_time()
        t0 = time.monotonic()
        while time.monotonic() < end:
            time.sleep(a.every * (0.5 + prng.random()))
            how = ("store", "api0", "api1")[k % 3]
            remove = (k // 3) % 2 == 1 and bool(live)
            k += 1
            if remove:
                eid, value = live.pop(prng.randrange(len(live)))
            else:
                value = rand_hex(prng)
            for w in watches:
                w.watch(value, not remove)
            c_lo = time.monotonic()
            if how == "store":
                if remove:
                    store.remove_entries("probe", [eid], actor="bench")
                else:
                    eid = store.add_entries("probe", [EntryIn("pdq", value)],
                                            actor="bench").added_ids[0]
            else:
                cl = api[int(how[-1])]
                if remove:
                    cl.post("/v1/lists/probe/entries/remove",
                            json={"ids": [eid]}).raise_for_status()
                else:
                    r = cl.post("/v1/lists/probe/entries", json={"entries": [
                        {"signal_type": "pdq", "value": value}]})
                    r.raise_for_status()
                    eid = r.json()["ids"][0]
            writes.append(time.monotonic() - c_lo)
            if not remove:
                live.append((eid, value))
            kind = "remove" if remove else "add"
            for i, w in enumerate(watches):
                res = w.wait(30)
                if res is None:
                    missed[(how, kind)] += 1
                    continue
                c = committed(eid)
                s0, r1 = res
                fresh[(how, kind)][i].append(r1 - c)
                lower[(how, kind)][i].append(max(0.0, s0 - c))
        wall = time.monotonic() - t0
        stop.set()
        for t in bg:
            t.join()
        for w in watches:
            with w.cv:
                w.stop = True
                w.cv.notify_all()
        m1 = [metrics(w) for w in ws]
        print("load average after:", os.getloadavg())
        print(f"\n{k} probe updates in {wall:.0f} s; background: {a.load_clients} clients, "
              f"errors {dict(bg_errors) or 0}; probe process CPU {time.process_time() - c0:.0f} s")
        print("watcher round trip p50/p99 (ms): " + ", ".join(
            f"w{i} {pct(w.rtt, 50) * 1000:.1f}/{pct(w.rtt, 99) * 1000:.1f}"
            for i, w in enumerate(watches)))
        print(f"\n{'update':<8}{'how':<7}{'n':>5}  " + "  ".join(
            f"w{i} p50 / p99 / max (lower p99) ms" for i in range(len(ws))))
        allf: list[list[float]] = [[], []]
        for (how, kind), per in sorted(fresh.items(), key=lambda x: (x[0][1], x[0][0])):
            cells = []
            for i, xs in enumerate(per):
                allf[i] += xs
                lo = lower[(how, kind)][i]
                cells.append(f"{pct(xs, 50) * 1000:6.0f} / {pct(xs, 99) * 1000:6.0f} / "
                             f"{max(xs) * 1000:6.0f} ({pct(lo, 99) * 1000:4.0f})")
            print(f"{kind:<8}{how:<7}{len(per[0]):>5}  " + "      ".join(cells))
        print("all updates, commit -> matchable (upper bound) p50 / p99 / max ms: " + "; ".join(
            f"w{i} {pct(xs, 50) * 1000:.0f} / {pct(xs, 99) * 1000:.0f} / "
            f"{max(xs, default=float('nan')) * 1000:.0f}" for i, xs in enumerate(allf)))
        print(f"missed (not seen within 30 s): {dict(missed) or 0}")
        for i, (a0, a1) in enumerate(zip(m0, m1, strict=True)):
            d = {k2.replace("hashwatch_feed_", ""): a1.get(k2, 0) - a0.get(k2, 0)
                 for k2 in a1 if "feed" in k2 and "bucket" not in k2 and "listening" not in k2}
            print(f"w{i} feed counters during the run: " + json.dumps(d))
            for h in ("notify_to_applied", "refresh", "refresh_cpu"):
                name = f"hashwatch_feed_{h}_seconds_bucket"
                cum = {k2.split('"')[1]: a1[k2] - a0.get(k2, 0) for k2 in a1
                       if k2.startswith(name)}
                print(f"   {h} histogram (cumulative, le seconds): " + ", ".join(
                    f"{le}:{n:.0f}" for le, n in cum.items()))
            feed = ws[i].wait_ready()["feed"]
            print(f"   last {feed['notify_to_applied']['n']} notifications, notify -> applied "
                  f"(s): {json.dumps(feed['notify_to_applied'])}; refresh: "
                  f"{json.dumps(feed['refresh_seconds'])}; refresh CPU: "
                  f"{json.dumps(feed['refresh_cpu_seconds'])}")
        for w in watches:
            w.c.close()
        for c in api:
            c.close()
        store.close()
        ts_eng.dispose()
    finally:
        for w in ws:
            w.stop()
        subprocess.run([str(REPO / ".ci" / "postgres.sh"), "stop", str(work / "pg")],
                       check=False)


if __name__ == "__main__":
    main()
