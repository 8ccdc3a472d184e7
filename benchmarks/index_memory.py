"""A worker's PDQ index under the soak's list writes, in one process, without the service.

    .venv/bin/python benchmarks/index_memory.py --adds 45000 --step 5000

A ``--base``-entry index (built in one add, as a worker's rebuild does), then entries added
1-5 at a time and earlier additions removed (``--remove-frac`` removals per entry added)
from ``--threads`` threads, one write at a time (a worker's refresh lock), each thread also
searching ``--q`` random codes per write (radius 31). Every ``--step`` entries added: the
index (live entries, segments, entries in the small segments, ``data_bytes``), the
process's RSS by kind of mapping (as benchmarks/soak.py reads it) and glibc's malloc figures
(``mallinfo2``). glibc's mmap threshold is fixed at ``--threshold`` bytes as a worker does
(0: glibc's dynamic threshold); ``--trim`` calls ``malloc_trim(0)`` before each report.

What it tells: RSS less the index's arrays stays flat while entries are added, or it does not
(malloc keeping the freed arrays of merged segments, Python objects). The harness itself
holds a Python list of the live additions (~40 bytes an entry). Not a timed benchmark.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import random
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hashwatch.index import HammingIndex  # noqa: E402
from hashwatch.service import allocator  # noqa: E402
from soak import rss_mb, rss_parts  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", type=int, default=200_000)
    ap.add_argument("--adds", type=int, default=45_000, help="entries added in total")
    ap.add_argument("--remove-frac", type=float, default=0.25)
    ap.add_argument("--threads", type=int, default=6)
    ap.add_argument("--step", type=int, default=5_000)
    ap.add_argument("--q", type=int, default=10, help="codes searched per write")
    ap.add_argument("--threshold", type=int, default=128 * 1024)
    ap.add_argument("--trim", action="store_true")
    a = ap.parse_args()
    if a.threshold:
        print("mmap threshold fixed:", allocator.tune_allocator(a.threshold))
    pid = os.getpid()
    libc = ctypes.CDLL(None)
    rng = np.random.default_rng(1)
    idx = HammingIndex()
    idx.add(np.arange(1, a.base + 1, dtype=np.int64),
            rng.integers(0, 256, (a.base, 32), dtype=np.uint8), copy=False)
    state = {"next": a.base + 1, "added": 0}
    live: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def report(tag: str) -> None:
        if a.trim:
            libc.malloc_trim(0)
        p = rss_parts(pid)
        m = allocator.malloc_figures() or {}
        st = idx.stats()
        small = sum(s["n"] for s in st["segments"][1:])
        # code before data_bytes: its "bytes" (no spare room below 1M entries here)
        data = st.get("data_bytes", st["bytes"]) / 2**20
        rss = rss_mb(pid)
        print(f"{tag:>6} live {st['live']:>7,} segs {len(st['segments']):>2} small {small:>6,} "
              f"index MB {data:5.1f} | RSS {rss:5.1f} less index {rss - data:5.1f} | heap "
              f"{p['heap']:4.1f} arenas {p['arenas']:4.1f} anon {p['anon']:5.1f} | malloc "
              f"arena {m.get('arena_bytes', 0) / 2**20:5.1f} free "
              f"{m.get('arena_free_bytes', 0) / 2**20:4.1f} mmapped "
              f"{m.get('mmapped_bytes', 0) / 2**20:5.1f}", flush=True)

    def writer(k: int) -> None:
        r = random.Random(k)
        while not stop.is_set():
            with lock:  # one refresh at a time, as a worker's matcher lock
                if r.random() < a.remove_frac / (1 + a.remove_frac):
                    if live:
                        idx.remove(np.array([live.pop(r.randrange(len(live)))]))
                    continue
                n = r.randint(1, 5)
                new = np.arange(state["next"], state["next"] + n, dtype=np.int64)
                state["next"] += n
                idx.add(new, np.frombuffer(r.randbytes(32 * n), np.uint8).reshape(n, 32))
                live.extend(new.tolist())
                state["added"] += n
            idx.search_many(np.frombuffer(r.randbytes(32 * a.q), np.uint8).reshape(a.q, 32), 31)

    report("start")
    threads = [threading.Thread(target=writer, args=(k,)) for k in range(a.threads)]
    t0, cpu0 = time.monotonic(), time.process_time()
    for t in threads:
        t.start()
    nxt = a.step
    while state["added"] < a.adds:
        time.sleep(0.05)
        if state["added"] >= nxt:
            report(str(nxt))
            nxt += a.step
    stop.set()
    for t in threads:
        t.join()
    idx.wait()
    report("end")
    print(f"wall {time.monotonic() - t0:.1f} s, CPU {time.process_time() - cpu0:.1f} s")


if __name__ == "__main__":
    main()
