"""Benchmark `hashwatch serve` on PostgreSQL with a 20,000,000-entry PDQ list.

    python benchmarks/service_bench.py build  [--dir D] [--entries N]   # once: DB + index
    python benchmarks/service_bench.py run    [--dir D] [--seconds S]   # the figures

``build`` starts (or reuses) a PostgreSQL 15 cluster kept in ``D/pg`` with PostgreSQL's
default durability (fsync on), bulk-loads N synthetic PDQ entries with COPY (indexes
dropped during the load and rebuilt after: the set-up, not what is measured), and builds the
service's PDQ index file once (``D/bench.pdq.idx``) the way a worker would.

``run`` starts two service workers (two uvicorn processes on the same database and index
file: "every worker" for freshness), and drives them from this separate process over
loopback with a small keep-alive HTTP/1.1 client (asyncio, raw sockets: low client
overhead on the shared 2 cores):

* match-by-hash, batched (1,000 hashes per request) -> hashes/s;
* match-by-hash, one hash per request -> requests/s, p50/p99 latency;
* hash-and-match of uploaded 12-MP JPEGs (corpus photos upscaled to 4032x3024 + noise, q90,
  generated once into D/jpegs) -> images/s;
* freshness: entry added (through worker A's API, or by another process writing the
  store) -> matchable on both workers.

Query mix: 2% near-duplicates of list entries (a few bits flipped: real hits, with store
look-ups), 98% random codes (misses). Every request is authenticated and audited.

Anchor: HMA cannot be run here (no network to fetch and deploy it), so its published
figures are printed beside ours: ~4,000 images/s on a fleet (hash lookups through its
matcher API) and ~35 ms per radius-31 query for its matcher configuration at 20M on one core.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DIR = Path(os.environ.get("HASHWATCH_BENCH_DIR", "/work/helpers/service/bench"))
HMA_FLEET_IMAGES_S = 4000.0
HMA_QUERY_MS = 35.0
SEED = 20_000_000


# -- PostgreSQL --------------------------------------------------------------------------
def pg_start(d: Path) -> str:
    env = dict(os.environ, HASHWATCH_PG_DURABLE="1")
    out = subprocess.run([str(REPO / ".ci" / "postgres.sh"), "start", str(d / "pg")], env=env,
                         check=True, capture_output=True, text=True).stdout
    url = [ln.split("=", 1)[1].strip("'") for ln in out.splitlines()
           if ln.startswith("export HASHWATCH_TEST_PG_URL=")][0]
    return url


def pg_stop(d: Path) -> None:
    subprocess.run([str(REPO / ".ci" / "postgres.sh"), "stop", str(d / "pg"), "--keep"],
                   check=False, capture_output=True)


def bench_db(admin_url: str) -> str:
    import sqlalchemy as sa

    eng = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with eng.connect() as conn:
        if not conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname='hwbench'")).first():
            conn.execute(sa.text("CREATE DATABASE hwbench"))
    eng.dispose()
    return admin_url.rsplit("/", 1)[0] + "/hwbench"


_HEX = np.array([ord(c) for c in "0123456789abcdef"], dtype=np.uint8)


def to_hex_rows(codes: np.ndarray) -> list[str]:
    out = np.empty((codes.shape[0], 64), dtype=np.uint8)
    out[:, 0::2] = _HEX[codes >> 4]
    out[:, 1::2] = _HEX[codes & 15]
    raw = out.tobytes().decode("ascii")
    return [raw[i : i + 64] for i in range(0, len(raw), 64)]


def build(args: argparse.Namespace) -> None:
    import psycopg

    from hashwatch.matcher import Matcher
    from hashwatch.store import Store, StoreError

    d: Path = args.dir
    d.mkdir(parents=True, exist_ok=True)
    url = bench_db(pg_start(d))
    print(f"database: {url.split('@')[1]}")
    store = Store.open(url)
    with contextlib.suppress(StoreError):
        store.create_list("bench", source="synthetic", category_scheme="uk")
    have = store.get_list("bench").entry_count or 0
    n = args.entries
    if have < n:
        t0 = time.perf_counter()
        list_id = store.get_list("bench").id
        now = "2026-01-01T00:00:00.000000Z"
        dsn = url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SET maintenance_work_mem = '1GB'")
            conn.execute("DROP INDEX IF EXISTS ix_entries_signal_value")
            conn.execute("ALTER TABLE entries DROP CONSTRAINT IF EXISTS uq_entries_identity")
            conn.execute("DELETE FROM entries WHERE list_id = %s", (list_id,))
            chunk = 1_000_000
            cats = ("A", "B", "C")
            with conn.cursor() as cur, cur.copy(
                "COPY entries (list_id, signal_type, value, category_scheme, category_code, "
                "labels, source_ref, group_ref, variant, added_at, added_by) FROM STDIN"
            ) as cp:
                for start in range(0, n, chunk):
                    rows = to_hex_rows(_chunk_codes(n, start, min(chunk, n - start)))
                    buf = io.StringIO()
                    for i, v in enumerate(rows, start):
                        buf.write(f"{list_id}\tpdq\t{v}\tuk\t{cats[i % 3]}\t\ts{i}\t\t\t{now}"
                                  "\tbench\n")
                    cp.write(buf.getvalue())
                    print(f"  copied {start + len(rows):,} rows "
                          f"({time.perf_counter() - t0:.0f}s)", flush=True)
            print("  rebuilding indexes", flush=True)
            conn.execute("ALTER TABLE entries ADD CONSTRAINT uq_entries_identity UNIQUE "
                         "(list_id, signal_type, value, category_scheme, category_code, variant)")
            conn.execute("CREATE INDEX ix_entries_signal_value ON entries (signal_type, value)")
            conn.execute("ANALYZE entries")
        print(f"loaded {n:,} entries in {time.perf_counter() - t0:.0f}s")
    idx = d / "bench.pdq.idx"
    if not idx.exists():
        t0 = time.perf_counter()
        m = Matcher(store, index_path=idx)
        m.index.compact()  # one segment, as the background merges leave a long-running index
        m.save()
        print(f"built and saved the PDQ index ({len(m.index):,} codes) in "
              f"{time.perf_counter() - t0:.0f}s")
    store.close()
    pg_stop(d)


def _chunk_codes(n: int, start: int, count: int) -> np.ndarray:
    # deterministic per chunk, so the run phase can regenerate any entry's code
    return np.random.default_rng([SEED, start // 1_000_000]).integers(
        0, 256, size=(count, 32), dtype=np.uint8)


def entry_codes(ids: list[int]) -> list[np.ndarray]:
    """The codes of entries ``ids`` (0-based load order), regenerated chunk by chunk."""
    out: dict[int, np.ndarray] = {}
    for start in sorted({(i // 1_000_000) * 1_000_000 for i in ids}):
        chunk = _chunk_codes(0, start, 1_000_000)
        for i in ids:
            if start <= i < start + 1_000_000:
                out[i] = chunk[i - start].copy()  # a copy: a view would pin the whole chunk
    return [out[i] for i in ids]


# -- load client -----------------------------------------------------------------------
class Conn:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.r: asyncio.StreamReader | None = None
        self.w: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.r, self.w = await asyncio.open_connection(self.host, self.port)
        sock = self.w.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        assert self.r is not None and self.w is not None
        self.w.write(raw)
        head = await self.r.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await self.r.readexactly(length) if length else b""
        return status, body


def post_json(path: str, body: dict, key: str, host: str) -> bytes:
    data = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
            ).encode() + data


def post_file(path: str, name: str, data: bytes, key: str, host: str) -> bytes:
    b = "hwbench" + os.urandom(8).hex()
    body = (f"--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{b}--\r\n".encode()
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: multipart/form-data; boundary={b}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def drive(ports: list[int], per_port: int, seconds: float, make) -> dict:  # type: ignore[no-untyped-def]
    lat: list[float] = []
    errors = 0
    done = 0
    stop_at = time.perf_counter() + seconds

    async def worker(port: int) -> None:
        nonlocal errors, done
        c = Conn("127.0.0.1", port)
        await c.open()
        while time.perf_counter() < stop_at:
            raw, units = make(port)
            t = time.perf_counter()
            status, _ = await c.request(raw)
            lat.append(time.perf_counter() - t)
            if status != 200:
                errors += 1
            else:
                done += units

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(p) for p in ports for _ in range(per_port)))
    wall = time.perf_counter() - t0
    lat.sort()
    return {"units_per_s": done / wall, "requests_per_s": len(lat) / wall, "wall_s": wall,
            "p50_ms": 1000 * lat[len(lat) // 2], "p99_ms": 1000 * lat[int(len(lat) * 0.99)],
            "errors": errors, "requests": len(lat)}


# -- run -------------------------------------------------------------------------------
def make_jpegs(d: Path, count: int) -> list[Path]:
    from PIL import Image

    out = d / "jpegs"
    out.mkdir(exist_ok=True)
    have = sorted(out.glob("*.jpg"))
    if len(have) >= count:
        return have[:count]
    corpus = Path(os.environ.get("HASHWATCH_CORPUS", REPO.parent / "shared" / "corpus"))
    srcs = sorted(corpus.rglob("*.jpg"))[::97][:count]
    rng = np.random.default_rng(7)
    for i, p in enumerate(srcs):
        im = Image.open(p).convert("RGB").resize((4032, 3024), Image.Resampling.BICUBIC)
        a = np.asarray(im, dtype=np.int16) + rng.integers(-6, 7, (3024, 4032, 3), dtype=np.int16)
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(out / f"{i:03d}.jpg",
                                                                   quality=90)
    return sorted(out.glob("*.jpg"))[:count]


def _die_with_parent() -> None:
    """Child processes get SIGTERM when this script dies, even if it is killed outright."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_worker(url: str, idx: Path, port: int, logf: Path) -> subprocess.Popen:
    env = dict(os.environ, HASHWATCH_DB=url, HASHWATCH_INDEX_PATH=str(idx),
               HASHWATCH_REFRESH_INTERVAL="1.0", HASHWATCH_MAX_UPLOAD_BYTES=str(64 << 20))
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "hashwatch.service.app:app_from_env", "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
         "--no-access-log"],
        env=env, stdout=open(logf, "ab"), stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, timeout: float = 900) -> float:
    import httpx

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health/ready", timeout=2).status_code == 200:
                return time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"worker on {port} not ready")


PG_DIR: list[Path] = []


def _pg_pids() -> list[int]:
    """The bench cluster's postmaster and its children (backends, WAL writer, ...)."""
    if not PG_DIR:
        return []
    try:
        master = int((PG_DIR[0] / "data" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError):
        return []
    kids = subprocess.run(["ps", "--ppid", str(master), "-o", "pid="], capture_output=True,
                          text=True).stdout.split()
    return [master, *map(int, kids)]


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User+system CPU time per process (all threads), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / tick
    return out


def phase(name: str, pids: list[int], fn) -> dict:  # type: ignore[no-untyped-def]
    """Run a load phase; add the CPU the workers and this client spent per unit of work,
    which does not depend on what else the shared machine is running."""
    pg0 = _pg_pids()
    s0, g0, c0 = cpu_seconds(pids), cpu_seconds(pg0), time.process_time()
    r = fn()
    s1, g1, c1 = cpu_seconds(pids), cpu_seconds(pg0), time.process_time()
    units = r["units_per_s"] * r["wall_s"]
    r["server_cpu_ms"] = 1000 * sum(s1[p] - s0[p] for p in s1 if p in s0) / max(units, 1)
    r["pg_cpu_ms"] = 1000 * sum(g1[p] - g0[p] for p in g1 if p in g0) / max(units, 1)
    r["client_cpu_ms"] = 1000 * (c1 - c0) / max(units, 1)
    r["dedicated_2core_per_s"] = 2000 / (r["server_cpu_ms"] + r["pg_cpu_ms"]
                                         + r["client_cpu_ms"])
    print(name, {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()},
          flush=True)
    return r


def vm_hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def near(code: np.ndarray, rng: random.Random, flips: int = 6) -> str:
    c = code.copy()
    for b in rng.sample(range(256), flips):
        c[b // 8] ^= 1 << (b % 8)
    return c.tobytes().hex()


def run(args: argparse.Namespace) -> None:
    import resource

    import httpx

    from hashwatch.service.auth import create_key
    from hashwatch.store import EntryIn, Store

    d: Path = args.dir
    idx = d / "bench.pdq.idx"
    if not idx.exists():
        sys.exit("run `build` first")
    url = bench_db(pg_start(d))
    PG_DIR[:] = [d / "pg"]
    procs: list[subprocess.Popen] = []
    try:
        with Store.open(url) as s:
            n_entries = s.get_list("bench").entry_count or 0
            key = create_key(s, f"bench-{os.getpid()}-{int(time.time())}", "admin",
                             rate_limit=0)
            with contextlib.suppress(Exception):
                s.create_list("fresh")
        ports = [free_port(), free_port()]
        t0 = time.perf_counter()
        procs = [start_worker(url, idx, p, d / f"worker{i}.log") for i, p in enumerate(ports)]
        load_s = max(wait_ready(p) for p in ports)
        print(f"2 workers ready in {load_s:.1f}s (index {idx.stat().st_size / 2**30:.2f} GiB, "
              f"{n_entries:,} entries)", flush=True)
        rng = random.Random(1)
        sample_ids = [rng.randrange(n_entries) for _ in range(2000)]
        sample_codes = entry_codes(sample_ids)
        host = "127.0.0.1"

        def q_hash() -> dict:
            if rng.random() < 0.02:
                return {"signal_type": "pdq", "value": near(rng.choice(sample_codes), rng)}
            return {"signal_type": "pdq", "value": os.urandom(32).hex()}

        results: dict[str, dict] = {}
        uptime_before = os.getloadavg()

        def batch(_port: int) -> tuple[bytes, int]:
            return post_json("/v1/match/hashes", {"hashes": [q_hash() for _ in range(1000)]},
                             key, host), 1000

        def single(_port: int) -> tuple[bytes, int]:
            return post_json("/v1/match/hashes", {"hashes": [q_hash()]}, key, host), 1

        # warm-up (page in the index)
        asyncio.run(drive(ports, 2, 5, batch))
        pids = [p.pid for p in procs]
        results["batched"] = phase("batched", pids,
                                   lambda: asyncio.run(drive(ports, 2, args.seconds, batch)))
        results["single"] = phase("single", pids, lambda: asyncio.run(
            drive(ports, args.single_conc, args.seconds, single)))
        # hits really come back: check one near-duplicate
        r = httpx.post(f"http://127.0.0.1:{ports[0]}/v1/match/hashes", headers={
            "Authorization": f"Bearer {key}"}, json={"hashes": [
                {"signal_type": "pdq", "value": near(sample_codes[0], rng)}]}).json()
        hit_ok = bool(r["results"][0]["matches"])

        jpegs = make_jpegs(d, args.jpegs)
        blobs = [p.read_bytes() for p in jpegs]
        counter = iter(range(10**9))

        def upload(_port: int) -> tuple[bytes, int]:
            i = next(counter)
            return post_file("/v1/match/upload", f"{i}.jpg", blobs[i % len(blobs)], key,
                             host), 1

        results["upload"] = phase("upload", pids,
                                  lambda: asyncio.run(drive(ports, 2, args.seconds, upload)))

        # freshness
        def matchable(port: int, value: str) -> bool:
            r = httpx.post(f"http://127.0.0.1:{port}/v1/match/hashes",
                           headers={"Authorization": f"Bearer {key}"},
                           json={"hashes": [{"signal_type": "pdq", "value": value}],
                                 "notify": False}).json()
            return bool(r["results"][0]["matches"])

        def until_all(value: str, t_added: float) -> float:
            pending = set(ports)
            while pending:
                for p in list(pending):
                    if matchable(p, value):
                        pending.discard(p)
                if time.perf_counter() - t_added > 30:
                    return float("inf")
            return time.perf_counter() - t_added

        fresh_api, fresh_proc = [], []
        with Store.open(url) as s:
            for _trial in range(args.fresh_trials):
                v = os.urandom(32).hex()
                t = time.perf_counter()
                httpx.post(f"http://127.0.0.1:{ports[0]}/v1/lists/fresh/entries",
                           headers={"Authorization": f"Bearer {key}"},
                           json={"entries": [{"signal_type": "pdq", "value": v}]}, timeout=30)
                fresh_api.append(until_all(v, t))
                v = os.urandom(32).hex()
                t = time.perf_counter()
                s.add_entries("fresh", [EntryIn("pdq", v)], actor="bench-other-process")
                fresh_proc.append(until_all(v, t))
                time.sleep(rng.random())  # de-phase from the 1 s poll
        results["fresh"] = {"api": fresh_api, "process": fresh_proc}
        rss = [vm_hwm_mb(p.pid) for p in procs]
        client_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        load_after = os.getloadavg()
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        pg_stop(d)

    b, s1, up = results["batched"], results["single"], results["upload"]
    fa, fp = results["fresh"]["api"], results["fresh"]["process"]
    print()
    print(f"== hashwatch serve, PostgreSQL 15 (fsync on), {n_entries:,} PDQ entries, "
          f"2 workers + load client on {os.cpu_count()} cores ==")
    print(f"load average before/after: {uptime_before[0]:.2f} / {load_after[0]:.2f}")
    print("CPU per unit (workers + load client; independent of other load on the machine) "
          "and the rate that implies on 2 dedicated cores:")
    for name, unit in (("batched", "hash"), ("single", "request"), ("upload", "image")):
        r = results[name]
        print(f"  {name:8} workers {r['server_cpu_ms']:7.3f} + PostgreSQL {r['pg_cpu_ms']:6.3f}"
              f" + client {r['client_cpu_ms']:6.3f} ms/{unit} -> "
              f"{r['dedicated_2core_per_s']:8,.0f} {unit}s/s")
    print(f"{'measure (as measured, shared machine)':44} {'hashwatch':>14} "
          f"{'HMA (published)':>17} {'ratio':>7}")
    print(f"{'match-by-hash, batched 1000/request (hash/s)':44} {b['units_per_s']:14,.0f} "
          f"{HMA_FLEET_IMAGES_S:17,.0f} {b['units_per_s'] / HMA_FLEET_IMAGES_S:7.2f}")
    print(f"{'  batched request p50 / p99 (ms)':44} {b['p50_ms']:6.1f} / {b['p99_ms']:5.1f}")
    print(f"{'match-by-hash, single (requests/s)':44} {s1['requests_per_s']:14,.0f}")
    print(f"{'  single p50 / p99 latency (ms)':44} {s1['p50_ms']:6.1f} / {s1['p99_ms']:5.1f} "
          f"{HMA_QUERY_MS:17.1f} {HMA_QUERY_MS / s1['p99_ms']:7.2f}  (HMA per-query matcher "
          "time vs our p99 end-to-end)")
    print(f"{'hash+match 12-MP JPEG uploads (images/s)':44} {up['units_per_s']:14,.2f}"
          f"   (upload p50 {up['p50_ms']:.0f} ms, p99 {up['p99_ms']:.0f} ms)")
    print(f"{'freshness via API, to both workers (s)':44} median {statistics.median(fa):.2f}"
          f"  max {max(fa):.2f}")
    print(f"{'freshness from another process (s)':44} median {statistics.median(fp):.2f}"
          f"  max {max(fp):.2f}")
    print(f"errors: batched {b['errors']}, single {s1['errors']}, upload {up['errors']}; "
          f"near-duplicate hit returned: {hit_ok}")
    print(f"peak RSS: workers {rss[0]:.0f} MB / {rss[1]:.0f} MB, load client "
          f"{client_rss:.0f} MB; worker start (index load) {load_s:.1f}s; "
          f"total {time.perf_counter() - t0:.0f}s")
    print("anchor: HMA not runnable here; published figures (fleet images/s; 35 ms/query "
          "matcher at 20M, one core)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("phase", choices=["build", "run"])
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--entries", type=int, default=20_000_000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--single-conc", type=int, default=8, help="connections per worker")
    ap.add_argument("--jpegs", type=int, default=24)
    ap.add_argument("--fresh-trials", type=int, default=5)
    args = ap.parse_args()
    build(args) if args.phase == "build" else run(args)


if __name__ == "__main__":
    main()
