"""How often the keypoint index's fill of a small list's free nominee places runs at list size
(:meth:`hashwatch.robust.keypoint_index.KeypointIndex.search`, ``last_search_stats()["filled"]``).

Every search a distractor makes is run: ``search_in_stages`` with no verdict ever passing, so
every stage and every box alone searches, as for an upload that matches nothing; nomination
only (no verification). At 60 known images the fill ran in 626 of 633 distractor searches
(BENCHMARKS.md, issue 11, "Filling the nominees of a small list"); at 10^5 and more it should
not run at all. Reads a saved scale-study index and the study's query cache
(``benchmarks/scale_study.py``):

    .venv/bin/python benchmarks/fill_count.py --index DIR/idx1m --queries DIR/queries --n 150
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from hashwatch.robust.keypoint_index import KeypointIndex, last_search_stats
    from hashwatch.robust.verify import search_in_stages
    from hashwatch.scalestudy import QueryCache

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--queries", type=Path, required=True)
    ap.add_argument("--n", type=int, default=150, help="the first N distractors")
    a = ap.parse_args(argv)
    ix = KeypointIndex.load(a.index, mmap=True)
    qs = [q for q in QueryCache(a.queries).load("distractors")[: a.n] if q.local is not None]
    count = {"searches": 0, "filled": 0}

    def search(stage, n):  # nominate only; no verdict, so every later stage runs too
        ix.search(stage, top=n or 8)
        count["searches"] += 1
        count["filled"] += last_search_stats().get("filled", 0) > 0
        return {}

    t0 = time.process_time()
    for q in qs:
        search_in_stages(q.local, search)
    print(f"{ix.n_slots:,} keypoint sets: {len(qs)} distractors, {count['searches']} searches, "
          f"{count['filled']} ran the fill; {time.process_time() - t0:.1f} s CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
