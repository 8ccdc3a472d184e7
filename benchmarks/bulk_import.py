"""Bulk list import (COPY / staging + one set-based insert) beside today's row-by-row path.

One generated hash-per-line file of N PDQ hashes (with 0.5 % repeated lines and one bad line
in 1,000,000), imported into a fresh list on each backend by each method, each run in its
own process so that its peak RSS is its own. The row-by-row path (the anchor: what
`hashwatch lists import` did before) runs on the first ``--anchor-lines`` lines of the same
file in the same run; its rate is linear in the line count at these sizes (batches of 2,500
rows, each one statement), which is how its 20M figure is extrapolated and labelled.

    .venv/bin/python benchmarks/bulk_import.py --lines 20000000 --anchor-lines 2000000 \\
        --workdir /work/scratch/feed/bulk

PostgreSQL: a cluster with default durability (fsync on) is started in WORKDIR/pg with
.ci/postgres.sh and stopped at the end. During each import a *probe writer* (another
connection, as the service's list updates would be) adds one entry to another list every
0.5 s: its slowest write and its failures (SQLite: "database is locked" after the 30 s busy
timeout) show whether the import starves other writers. CPU: the import process (user + sys) and, on
PostgreSQL, its server backend (from /proc), so the cost is visible apart from other load.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def generate(path: Path, n: int) -> None:
    import numpy as np

    if path.exists() and path.with_suffix(".n").exists() and \
            path.with_suffix(".n").read_text() == str(n):
        return
    rng = np.random.default_rng(12)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)  # a hash list: 0600
    written = 0
    with os.fdopen(fd, "w") as fh:
        while written < n:
            k = min(500_000, n - written)
            block = rng.integers(0, 256, (k, 32), dtype=np.uint8)
            dup = rng.random(k) < 0.005  # repeat an earlier line of the block
            src = rng.integers(0, k, k)
            block[dup] = block[np.minimum(src[dup], np.arange(k)[dup])]
            text = block.tobytes().hex()
            lines = [text[i : i + 64] for i in range(0, len(text), 64)]
            for j in range(k):
                if (written + j) % 1_000_000 == 999_999:
                    lines[j] = "not-a-pdq-hash"
            fh.write("\n".join(lines) + "\n")
            written += k
    os.replace(tmp, path)
    path.with_suffix(".n").write_text(str(n))


def prefix(path: Path, lines: int) -> Path:
    """The first ``lines`` lines of ``path`` as a file of their own (the readers sniff the
    file's head, so a prefix is a file, not an iterator), written once, owner-only."""
    out = path.with_name(f"{path.stem}-first-{lines}.txt")
    if out.exists():
        return out
    tmp = out.with_suffix(".tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as dst, open(path) as src:
        for _k, line in zip(range(lines), src, strict=False):
            dst.write(line)
    os.replace(tmp, out)
    return out


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Probe:
    """Another writer: one entry into list "probe" every 0.5 s, timed."""

    def __init__(self, db: str) -> None:
        import threading

        from hashwatch.store import Store

        self.store = Store.open(db, migrate=False)
        self.store.create_list("probe")
        self.waits: list[float] = []
        self.failures: list[str] = []
        self.stop = threading.Event()
        # SQLite: the write-ahead log's largest size and the database's, sampled as it runs
        self.wal = Path(db + "-wal") if "://" not in db else None
        self.wal_peak = 0
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self) -> None:
        from hashwatch.store import EntryIn

        k = 0
        while not self.stop.wait(0.5):
            if self.wal is not None:
                with contextlib.suppress(OSError):
                    self.wal_peak = max(self.wal_peak, self.wal.stat().st_size)
            k += 1
            t0 = time.perf_counter()
            try:
                self.store.add_entries("probe", [EntryIn("pdq", f"{k:064x}")], actor="probe")
                self.waits.append(time.perf_counter() - t0)
            except Exception as exc:  # noqa: BLE001 - reported
                self.failures.append(type(exc).__name__ + ": " + str(exc)[:80])

    def close(self) -> dict:
        self.stop.set()
        self.t.join()
        self.store.close()
        w = sorted(self.waits)
        return {"probe_writes": len(w), "probe_max_s": w[-1] if w else None,
                "probe_p50_s": w[len(w) // 2] if w else None,
                "probe_failures": len(self.failures),
                "probe_first_failure": self.failures[0] if self.failures else "",
                "wal_peak_mb": self.wal_peak / 1e6 if self.wal is not None else None}


def _wal_lsn(store) -> int:
    with store.engine.connect() as conn:
        return int(conn.exec_driver_sql(
            "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").scalar_one())


def child(method: str, db: str, path: str, lines: int) -> None:
    """Import the first ``lines`` lines of ``path`` into list "bench" with ``method``."""
    from hashwatch.lists import import_stream
    from hashwatch.store import Store, bulk

    # --set NAME=VALUE: a module constant of hashwatch.store.bulk, to measure a lever
    for name, value in json.loads(os.environ.get("BULK_SET", "{}")).items():
        setattr(bulk, name, type(getattr(bulk, name))(value))
    import logging

    phases: list[str] = []  # the bulk path's own account of its phases (debug log)
    h = logging.Handler(logging.DEBUG)
    h.emit = lambda rec: phases.append(rec.getMessage())  # type: ignore[method-assign]
    logging.getLogger(bulk.__name__).addHandler(h)
    logging.getLogger(bulk.__name__).setLevel(logging.DEBUG)
    with Store.open(db) as store:
        store.create_list("bench")
        probe = Probe(db)
        backend_pid = None
        if store.dialect == "postgresql":
            # the import's own connection is the pool's first; its backend is this one
            with store.engine.connect() as conn:
                backend_pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        pg0 = _proc_cpu(backend_pid) if backend_pid else 0.0
        wal0 = _wal_lsn(store) if backend_pid else None
        applied: list[float] = []
        t0 = time.perf_counter()
        c0 = time.process_time()
        with open(path, "rb") as fh:
            res = import_stream(store, "bench", fh, "hashlines", signal="pdq", method=method,
                                on_apply=lambda: applied.append(time.perf_counter()))
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0
        probed = probe.close()
        pg_cpu = (_proc_cpu(backend_pid) - pg0) if backend_pid else None
        # WAL written meanwhile (the whole cluster's: the import's and the probe's)
        wal_mb = (_wal_lsn(store) - wal0) / 1e6 if wal0 is not None else None
        count = store.get_list("bench").entry_count
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child would report
    # the parent's high-water mark (the parent generated the file)
    rss = next(int(x.split()[1]) for x in Path("/proc/self/status").read_text().splitlines()
               if x.startswith("VmHWM:")) / 1024
    db_mb = Path(db).stat().st_size / 1e6 if "://" not in db else None
    print(json.dumps({"method": method, "wall": wall, "cpu": cpu, "pg_cpu": pg_cpu,
                      "db_mb": db_mb, "phases": phases,
                      "staged_at": (applied[0] - t0) if applied else None,
                      "added": res.added, "duplicates": res.duplicates, "bad": res.bad_rows,
                      "first_error": str(res.errors[0]) if res.errors else "",
                      "entries": count, "rss_mb": rss, "pg_wal_mb": wal_mb, **probed}))


def run_child(method: str, db: str, path: Path, lines: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", method, db, str(path),
                          str(lines)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{method} import failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _pg_settings(admin: str, settings: list[str], pg_dir: Path) -> None:
    """Apply NAME=VALUE server settings and print what the run uses. Reloadable ones take
    effect on reload; the server is restarted when one needs it (e.g. shared_buffers)."""
    import sqlalchemy as sa

    eng = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with eng.connect() as conn:
        for item in settings:
            name, value = item.split("=", 1)
            conn.exec_driver_sql(f"ALTER SYSTEM SET {name} = '{value}'")
        conn.exec_driver_sql("SELECT pg_reload_conf()")
        time.sleep(1)
        restart = [r[0] for r in conn.exec_driver_sql(
            "SELECT name FROM pg_settings WHERE pending_restart")]
    eng.dispose()
    if restart:
        print("restarting PostgreSQL for:", ", ".join(restart), flush=True)
        subprocess.run([str(REPO / ".ci" / "postgres.sh"), "restart", str(pg_dir)], check=True)
    eng = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with eng.connect() as conn:
        shown = {n: conn.exec_driver_sql(f"SHOW {n}").scalar_one() for n in (
            "max_wal_size", "checkpoint_timeout", "shared_buffers", "wal_buffers", "fsync",
            "work_mem")}
    eng.dispose()
    print("postgresql settings:", shown, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--anchor-lines", type=int, default=1_000_000)
    ap.add_argument("--workdir", default="bulk-bench")
    ap.add_argument("--backends", default="postgresql,sqlite")
    ap.add_argument("--child", nargs=4)
    ap.add_argument("--pg-setting", action="append", default=[], metavar="NAME=VALUE",
                    help="PostgreSQL server setting for the run (ALTER SYSTEM; reloaded, or the "
                         "server restarted when the setting needs it), "
                         "e.g. max_wal_size=16GB (README: importing a national list)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="set a constant of hashwatch.store.bulk for the bulk runs (a lever)")
    ap.add_argument("--methods", default="bulk,rows")
    a = ap.parse_args()
    if a.set:
        os.environ["BULK_SET"] = json.dumps(dict(x.split("=", 1) for x in a.set))
    if a.child:
        method, db, path, lines = a.child
        child(method, db, path, int(lines))
        return
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"list-{a.lines}.txt"
    t = time.perf_counter()
    generate(path, a.lines)
    print(f"file: {a.lines:,} lines, {path.stat().st_size / 1e6:,.0f} MB "
          f"(ready in {time.perf_counter() - t:.0f} s)", flush=True)
    print("load average before:", os.getloadavg())
    results: list[tuple[str, str, int, dict]] = []
    for backend in a.backends.split(","):
        pg_dir = None
        if backend == "postgresql":
            pg_dir = work / "pg"
            env = dict(os.environ, HASHWATCH_PG_DURABLE="1")
            out = subprocess.run([str(REPO / ".ci" / "postgres.sh"), "start", str(pg_dir)],
                                 capture_output=True, text=True, check=True, env=env)
            admin = next(x.split("=", 1)[1].strip("'") for x in out.stdout.split()
                         if x.startswith("HASHWATCH_TEST_PG_URL="))
            _pg_settings(admin, a.pg_setting, pg_dir)
        try:
            for method, lines in (("bulk", a.lines), ("rows", a.anchor_lines)):
                if method not in a.methods.split(","):
                    continue
                if backend == "sqlite":
                    db = str(work / f"{method}.db")
                    for suffix in ("", "-wal", "-shm"):
                        Path(db + suffix).unlink(missing_ok=True)
                else:
                    import sqlalchemy as sa

                    name = f"bench_{method}"
                    eng = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
                    with eng.connect() as conn:
                        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
                        conn.exec_driver_sql(f"CREATE DATABASE {name}")
                    eng.dispose()
                    db = admin.rsplit("/", 1)[0] + "/" + name
                src = path if lines >= a.lines else prefix(path, lines)
                r = run_child(method, db, src, 0)
                results.append((backend, method, min(lines, a.lines), r))
                print(backend, method, json.dumps(r), flush=True)
        finally:
            if pg_dir is not None:
                subprocess.run([str(REPO / ".ci" / "postgres.sh"), "stop", str(pg_dir)],
                               check=False)
    print("load average after:", os.getloadavg())
    print(f"\n{'backend':<11}{'method':<7}{'lines':>12}{'wall s':>9}{'lines/s':>10}"
          f"{'CPU s':>8}{'PG CPU s':>9}{'added':>12}{'dups':>9}{'bad':>5}{'RSS MB':>8}"
          f"{'20M est. min':>13}")
    by = {}
    for backend, method, lines, r in results:
        rate = lines / r["wall"]
        by[(backend, method)] = rate
        est = 20_000_000 / rate / 60
        pg = f"{r['pg_cpu']:.0f}" if r["pg_cpu"] is not None else "-"
        print(f"{backend:<11}{method:<7}{lines:>12,}{r['wall']:>9.0f}{rate:>10,.0f}"
              f"{r['cpu']:>8.0f}{pg:>9}{r['added']:>12,}{r['duplicates']:>9,}{r['bad']:>5}"
              f"{r['rss_mb']:>8.0f}{est:>13.1f}")
    for backend, method, _lines, r in results:
        print(f"{backend} {method}: probe writer {r['probe_writes']} writes, slowest "
              f"{r['probe_max_s'] or 0:.2f} s, median {r['probe_p50_s'] or 0:.3f} s, "
              f"{r['probe_failures']} failed {r['probe_first_failure']}")
        if r.get("wal_peak_mb") is not None:
            print(f"{backend} {method}: WAL peak {r['wal_peak_mb']:,.0f} MB, database "
                  f"{r['db_mb']:,.0f} MB, staged after {r['staged_at'] or 0:.0f} s")
    for backend in a.backends.split(","):
        if (backend, "rows") in by:
            print(f"{backend}: bulk / row-by-row rate = "
                  f"{by[(backend, 'bulk')] / by[(backend, 'rows')]:.1f}x")


if __name__ == "__main__":
    main()
