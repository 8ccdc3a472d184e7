"""Streaming list import: a 1,000,000-line hash-per-line file into SQLite.

Prints time, rate, peak RSS (the file is never loaded whole) and re-import time
(everything a duplicate). The anchor is loading the same file whole into memory first
(what a naive importer does), to show the memory the streaming path saves.

    .venv/bin/python benchmarks/import_bench.py --lines 1000000
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(mode: str, db: str, path: str) -> None:
    from hashwatch.lists import import_stream
    from hashwatch.store import Store

    with Store.open(db) as store:
        store.create_list("bench") if mode != "reimport" else None
        t = time.perf_counter()
        if mode == "naive":
            data = Path(path).read_text().splitlines()  # the whole file in memory
            import io

            res = import_stream(
                store, "bench", io.StringIO("\n".join(data)), "hashlines", signal="pdq"
            )
        else:
            with open(path, encoding="utf-8") as fh:
                res = import_stream(store, "bench", fh, "hashlines", signal="pdq")
        dt = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{mode}\t{dt:.1f}\t{res.added}\t{res.duplicates}\t{rss:.0f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--child", nargs=3)
    a = ap.parse_args()
    if a.child:
        child(*a.child)
        return
    import numpy as np

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "list.txt"
        rng = np.random.default_rng(1)
        with open(path, "w") as fh:
            for start in range(0, a.lines, 100_000):
                block = rng.integers(0, 256, (min(100_000, a.lines - start), 32), dtype=np.uint8)
                fh.write("\n".join(bytes(r).hex() for r in block) + "\n")
        size = path.stat().st_size / 1e6
        print(f"file: {a.lines:,} lines, {size:.0f} MB")
        results = {}
        for mode, db in (("stream", "a.db"), ("reimport", "a.db"), ("naive", "b.db")):
            out = subprocess.run(
                [sys.executable, __file__, "--child", mode, str(Path(d) / db), str(path)],
                capture_output=True,
                text=True,
                check=True,
            )
            name, dt, added, dup, rss = out.stdout.strip().split("\t")
            results[name] = (float(dt), int(added), int(dup), float(rss))
        print(
            f"{'mode':<22}{'seconds':>9}{'lines/s':>11}{'added':>10}{'dups':>10}{'peak RSS MB':>13}"
        )
        for name, label in (
            ("naive", "anchor: load whole"),
            ("stream", "hashwatch stream"),
            ("reimport", "hashwatch re-import"),
        ):
            dt, added, dup, rss = results[name]
            print(f"{label:<22}{dt:>9.1f}{a.lines / dt:>11,.0f}{added:>10,}{dup:>10,}{rss:>13,.0f}")
        print(f"peak RSS ratio naive/stream: {results['naive'][3] / results['stream'][3]:.2f}x")


if __name__ == "__main__":
    main()
