"""vPDQ matching against a list of many known videos: hashwatch's index (``VpdqIndex``: every
usable frame in the exact Hamming index, the reference's percentages) beside the reference's
brute-force algorithm (``match_VPDQ_hash_brute``: every query frame against every frame of
every known video; here vectorised with NumPy, ``hashwatch.signals.vpdq.match_percentages``).

Synthetic vPDQ hashes (no video decoding): each known video is ``--frames`` frames at 1 frame/s,
a random scene hash every 8 s and ~6 bits changing from one frame to the next (a scene that
moves a little). Queries: ``--queries`` copies of known videos (trimmed to 60 %, every frame
with 10 random bits flipped, as re-encoding does) and as many unrelated videos. Reported: list
build (store -> index) time and memory, per-query time for both methods, found copies, false
matches (unrelated queries that matched anything).

    .venv/bin/python benchmarks/vpdq_index_bench.py --workdir DIR --videos 5000 --frames 600 \
        --prepare
    flock /work/coord/bench.lock .venv/bin/python benchmarks/vpdq_index_bench.py --workdir DIR \
        --videos 5000 --frames 600
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import time
from pathlib import Path


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def walk(rng: random.Random, n: int) -> list[int]:
    out, h = [], 0
    for i in range(n):
        if i % 8 == 0:
            h = rng.getrandbits(256)
        else:
            for b in rng.sample(range(256), 6):
                h ^= 1 << b
        out.append(h)
    return out


def main() -> None:
    from hashwatch.known import vpdq_entries
    from hashwatch.media.vpdq_index import VpdqIndex
    from hashwatch.signals.vpdq import VpdqFeature, match_percentages
    from hashwatch.store import Store

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--videos", type=int, default=2000)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--brute-queries", type=int, default=4)
    ap.add_argument("--prepare", action="store_true", help="only fill the store, then stop")
    args = ap.parse_args()
    rng = random.Random(11)
    args.workdir.mkdir(parents=True, exist_ok=True)
    db = args.workdir / f"vpdq_{args.videos}x{args.frames}.db"
    known: list[list[int]] = [walk(rng, args.frames) for _ in range(args.videos)]

    def feats(hs: list[int]) -> list[VpdqFeature]:
        return [VpdqFeature(f"{h:064x}", 100, float(i)) for i, h in enumerate(hs)]

    if not db.exists():
        t = time.perf_counter()
        with Store.open(db) as s:
            s.create_list("v")
            s.add_entries("v", (e for k, hs in enumerate(known)
                                for e in vpdq_entries(feats(hs), group_ref=f"video{k}")),
                          collect_ids=False)
        print(f"store filled: {args.videos * args.frames:,} frame entries in "
              f"{time.perf_counter() - t:.0f} s")
    if args.prepare:
        return
    print(f"load before: {os.getloadavg()}")
    with Store.open(db) as store:
        r0, t0, c0 = rss_mib(), time.perf_counter(), time.process_time()
        idx = VpdqIndex(store)
        build, build_cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"index build: {len(idx):,} frames of {idx.videos:,} videos in {build:.1f} s wall, "
              f"{build_cpu:.1f} s CPU; peak RSS {r0:.0f} -> {rss_mib():.0f} MiB")
        queries = []
        for _ in range(args.queries):
            k = rng.randrange(args.videos)
            lo = rng.randrange(0, args.frames // 5)
            hs = known[k][lo:lo + int(args.frames * 0.6)]
            noisy = []
            for h in hs:
                for b in rng.sample(range(256), 10):
                    h ^= 1 << b
                noisy.append(h)
            queries.append((f"video{k}", feats(noisy)))
        for _ in range(args.queries):
            queries.append((None, feats(walk(rng, int(args.frames * 0.6)))))
        found = false = 0
        t0, c0 = time.perf_counter(), time.process_time()
        for want, q in queries:
            hits = idx.query(q)
            groups = {idx._frame[h.entry_id][0][1] for h in hits if h.entry_id in idx._frame}
            found += want is not None and want in groups
            false += bool(groups - {want})
        per_q = (time.perf_counter() - t0) / len(queries) * 1000
        per_q_cpu = (time.process_time() - c0) / len(queries) * 1000
        print(f"index: {per_q:.1f} ms wall / {per_q_cpu:.1f} ms CPU per query video "
              f"({len(queries[0][1])} frames); copies found {found}/{args.queries}; queries with "
              f"a false match {false}/{len(queries)}")
        kf = [feats(hs) for hs in known]
        nb = min(args.brute_queries, len(queries))
        t0, c0 = time.perf_counter(), time.process_time()
        bf_found = 0
        for want, q in queries[:nb]:
            for k, f in enumerate(kf):
                qp, _cp = match_percentages(q, f)
                bf_found += qp >= 80 and want == f"video{k}"
        bq = (time.perf_counter() - t0) / nb * 1000
        bq_cpu = (time.process_time() - c0) / nb * 1000
        print(f"brute force (reference algorithm, NumPy): {bq:.0f} ms wall / {bq_cpu:.0f} ms CPU "
              f"per query video over {nb} queries (found {bf_found}); index speed-up "
              f"{bq / per_q:.0f}x wall")
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
