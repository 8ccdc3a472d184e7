"""Several processes serving one saved index: read into each process vs mapped and shared.

The service runs one index per worker process. Read (the anchor, what workers did before), each
worker holds a private copy; mapped (``HammingIndex.load(mmap=True)``), the immutable arrays
are the page cache, shared by every worker. Prints, per mode, load time, each worker's private
and proportional memory (/proc/<pid>/smaps_rollup) after answering the same queries, and query
latency, side by side.

    python benchmarks/index_share.py INDEX_FILE QUERIES.npy [--workers 2]

QUERIES.npy: (n, 32) uint8 PDQ codes (e.g. the index benchmark's queries.npy).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np

from hashwatch.index import HammingIndex


def _smaps() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        k, v = line.split(":", 1)
        out[k] = int(v.split()[0])  # kB
    return out


def _worker(path: str, queries: str, mmap: bool, start: mp.Barrier, q: mp.Queue) -> None:
    start.wait()
    t0 = time.perf_counter()
    idx = HammingIndex.load(path, mmap=mmap)
    load = time.perf_counter() - t0
    codes = np.load(queries)
    lat = []
    for c in codes:
        t = time.perf_counter()
        idx.search(c, 31)
        lat.append(time.perf_counter() - t)
    m = _smaps()
    q.put({"load_s": load, "private_mb": (m["Private_Clean"] + m["Private_Dirty"]) / 1024,
           "pss_mb": m["Pss"] / 1024, "rss_mb": m["Rss"] / 1024,
           "p50_ms": 1000 * float(np.percentile(lat, 50)),
           "p99_ms": 1000 * float(np.percentile(lat, 99)), "n": len(idx)})


def run(path: str, queries: str, mmap: bool, workers: int) -> list[dict]:
    ctx = mp.get_context("spawn")
    start, q = ctx.Barrier(workers), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(path, queries, mmap, start, q))
             for _ in range(workers)]
    for p in procs:
        p.start()
    res = [q.get() for _ in procs]
    for p in procs:
        p.join()
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("index")
    ap.add_argument("queries")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    rows = {}
    for name, mmap in (("read (anchor)", False), ("mapped (hashwatch)", True)):
        r = run(a.index, a.queries, mmap, a.workers)
        rows[name] = r
        print(f"{name:20s} entries {r[0]['n']:,}  " + "  |  ".join(
            f"worker {i}: load {x['load_s']:.2f} s, private {x['private_mb']:,.0f} MB, "
            f"PSS {x['pss_mb']:,.0f} MB, RSS {x['rss_mb']:,.0f} MB, p50 {x['p50_ms']:.2f} ms, "
            f"p99 {x['p99_ms']:.2f} ms" for i, x in enumerate(r)), flush=True)
    anchor, ours = rows["read (anchor)"], rows["mapped (hashwatch)"]
    tot_a = sum(x["pss_mb"] for x in anchor)
    tot_o = sum(x["pss_mb"] for x in ours)
    print(f"total memory of {a.workers} workers (sum of PSS): anchor {tot_a:,.0f} MB, "
          f"hashwatch {tot_o:,.0f} MB, ratio {tot_a / tot_o:.2f}x less; load "
          f"{np.mean([x['load_s'] for x in anchor]):.2f} s vs "
          f"{np.mean([x['load_s'] for x in ours]):.2f} s; p50 "
          f"{np.mean([x['p50_ms'] for x in anchor]):.2f} vs "
          f"{np.mean([x['p50_ms'] for x in ours]):.2f} ms")


if __name__ == "__main__":
    main()
