"""Robustness benchmark: PDQ <= 31 and PDQ + dihedral (the anchors) against hashwatch's robust
matcher, one route added at a time, on ../shared/corpus.

    .venv/bin/python benchmarks/robustness.py --known 300 --seed 0 --out /tmp/robust

Prints the markdown table (recall per edit and method, false matches, extrapolated false-match
rate), writes robustness.md, robustness.png and robustness.npz into --out, and reports peak RSS.
"""

from __future__ import annotations

import argparse
import os
import pickle
import resource
import sys
import time
from pathlib import Path

# One core: the figures are per core, and BLAS/OpenMP threads would fight the other jobs.
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import cv2  # noqa: E402

from hashwatch.edits import expand_edits  # noqa: E402
from hashwatch.evaluate import EvalConfig, run_eval, write_report  # noqa: E402

cv2.setNumThreads(1)
try:
    import faiss

    faiss.omp_set_num_threads(1)
except ImportError:  # the evaluation falls back to numpy
    pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    here = Path(__file__).resolve()
    ap.add_argument("--corpus", type=Path, default=Path(os.environ.get(
        "HASHWATCH_CORPUS", here.parents[2] / "shared" / "corpus")))
    ap.add_argument("--known", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-distractors", type=int, default=None)
    ap.add_argument("--edits", default=None, help="comma-separated edit names or families, or "
                    "'single' / 'combined' (default: all)")
    ap.add_argument("--no-local", action="store_true", help="skip the ORB tier")
    ap.add_argument("--out", type=Path, default=Path("robustness-out"))
    a = ap.parse_args(argv)
    if not a.corpus.is_dir():
        print(f"corpus not found: {a.corpus}", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cfg = EvalConfig(corpus=a.corpus, n_known=a.known, seed=a.seed,
                     edits=expand_edits(a.edits) if a.edits else None,
                     max_distractors=a.max_distractors, local=not a.no_local,
                     progress=lambda s: print(f"[{time.perf_counter() - t0:7.1f}s] {s}",
                                              file=sys.stderr, flush=True))
    res = run_eval(cfg)
    res.config.progress = None  # a lambda: not picklable
    with open(a.out / "robustness.pkl", "wb") as f:
        pickle.dump(res, f)  # re-analyse without re-running: evaluate.summarise(res)
    _, md = write_report(res, a.out)
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cpu = time.process_time()
    tail = f"\n\nWall time {wall:.0f} s, CPU time {cpu:.0f} s; peak RSS {rss:.0f} MiB.\n"
    (a.out / "robustness.md").write_text(md + tail)
    print(md + tail)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
