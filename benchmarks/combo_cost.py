"""Query-time cost of the keypoint tier's checks for edits in combination (issue 11), per step,
against the tier as it was (plain pass, similarity fit), in one run.

    .venv/bin/python benchmarks/combo_cost.py --known 60 --queries 20

The known images go into the keypoint index exactly as the matcher holds them
(:class:`hashwatch.robust.keypoint_index.KeypointIndex`). For each query kind (an unmatched
distractor, a mirrored crop, a stretched crop, a keystoned copy, a 3x3 grid, a picture at 30% of
a photograph) it times, in CPU milliseconds on one core (``time.process_time``: other load on
the machine does not count), decode excluded:

* features: regions, the plain pass (whole picture + regions: what the tier computed before),
  the mirrored pass (computed in the hashing worker for every query reaching the tier);
* the stages of :func:`hashwatch.robust.verify.search_in_stages`, each a nomination by the
  keypoint index plus verification of the nominees (similarity, homography when tried, scene
  check): stage 1 plain pass, stage 2 mirrored pass (only when stage 1 matched nothing), stage
  3 small-picture pass (only when stages 1-2 matched nothing; its features, computed from the
  query's view, timed apart), stage 4 the mirrored small-picture pass (only when stages 1-3
  matched nothing; its features timed apart; absent on code before issue 11's mirrored
  small-picture pass, which this script also runs on: a before/after in two runs);
* the anchor: stage 1 with the similarity fit alone (the tier as it was).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from hashwatch import robust as R  # noqa: E402
from hashwatch.edits import EDITS, apply_edit  # noqa: E402
from hashwatch.evaluate import corpus_files, load_pixels, split_eval  # noqa: E402
from hashwatch.robust import geometry as G  # noqa: E402
from hashwatch.robust import local as L  # noqa: E402

cv2.setNumThreads(1)
KINDS = ["distractor", "mirror+crop", "stretch1.5+crop10", "perspective12", "grid3x3",
         "pip30-photo", "mirror+grid3x3", "mirror+pip30-photo"]


def _cpu(f, *a, **k):  # type: ignore[no-untyped-def]
    t = time.process_time()
    out = f(*a, **k)
    return out, 1000 * (time.process_time() - t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    here = Path(__file__).resolve()
    ap.add_argument("--corpus", type=Path, default=Path(os.environ.get(
        "HASHWATCH_CORPUS", here.parents[2] / "shared" / "corpus")))
    ap.add_argument("--known", type=int, default=60)
    ap.add_argument("--queries", type=int, default=30, help="per kind")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    known, fillers, distractors = split_eval(corpus_files(a.corpus), a.known, a.seed)
    kpix = [load_pixels(p) for p in known]
    fpix = [load_pixels(p) for p in fillers]
    from hashwatch.matcher import KEYPOINT_CANDIDATES
    from hashwatch.robust.keypoint_index import KeypointIndex
    from hashwatch.robust.vocab import default_vocabulary

    kp = KeypointIndex(default_vocabulary())
    hashes = [R.known_signals(p) for p in kpix]
    kp.add_many((i, R.known_local(p)) for i, p in enumerate(kpix))
    timing: list[float] = []
    # the small-picture passes' features, timed where search_in_stages computes them: (searches
    # done before, mirrored, CPU ms) per call
    feats: list[tuple[int, bool, float]] = []
    V = sys.modules["hashwatch.robust.verify"]  # the module (robust.verify is its function)
    small_pass = V.small_pass

    def timed_small_pass(q: L.LocalFeatures, **kw: bool) -> L.LocalFeatures:
        out, ms = _cpu(small_pass, q, **kw)
        feats.append((len(timing), bool(kw.get("mirror")), ms))
        return out

    V.small_pass = timed_small_pass

    def search(stage: L.LocalFeatures, top: int | None) -> dict[int, R.LocalVerdict]:
        t0 = time.process_time()
        out = {c.image_id: R.verify(stage, kp.features(c.slot), hashes[c.image_id])
               for c in kp.search(stage, top=top or KEYPOINT_CANDIDATES)}
        timing.append(1000 * (time.process_time() - t0))
        return out

    rng = np.random.default_rng(a.seed)
    print(f"{len(known)} known, {a.queries} queries per kind; CPU ms per query, 1 core, "
          "decode excluded", file=sys.stderr)
    rows = []
    for kind in KINDS:
        acc: dict[str, list[float]] = {}
        found = 0
        for j in range(a.queries):
            if kind == "distractor":
                img = load_pixels(distractors[int(rng.integers(len(distractors)))])
            else:
                ki = j % len(kpix)
                fid = rng.choice(len(fpix), EDITS[kind].fillers, replace=False)
                img = apply_edit(kind, kpix[ki], seed=a.seed, key=ki,
                                 fillers=[fpix[int(x)] for x in fid])
            boxes, t_reg = _cpu(R.query_regions, img)
            plain, t_plain = _cpu(L._query_pass, img, boxes, 4)
            w = img.shape[1]
            mb = [(y0, y1, w - x1, w - x0) for y0, y1, x0, x1 in boxes]
            _, t_mirror = _cpu(L._query_pass, np.ascontiguousarray(img[:, ::-1]), mb, 4)
            q = R.query_local(img, boxes)
            timing.clear()
            feats.clear()
            v = R.search_in_stages(q, search)
            # the searches in call order: stage 1, stage 2 when the query has a mirrored
            # pass, then stage 3's (its boxes together, then boxes alone while nothing
            # matched), then stage 4's (the mirrored small-picture pass, the same way)
            a_, b_ = L.mirrored_rows(q)
            n12 = 2 if b_ > a_ else 1
            at4 = next((i for i, m, _ in feats if m), len(timing))
            st = [timing[0] if timing else 0.0,
                  timing[1] if n12 == 2 and len(timing) > 1 else 0.0,
                  float(sum(timing[n12:at4])), float(sum(timing[at4:]))]
            t_small = sum(ms for _, m, ms in feats if not m)
            t_msmall = sum(ms for _, m, ms in feats if m)
            keep = G.LOCAL_MIN_INLIERS_HOMOGRAPHY, G.LOCAL_MIN_INLIERS_AFFINE
            G.LOCAL_MIN_INLIERS_HOMOGRAPHY = G.LOCAL_MIN_INLIERS_AFFINE = 10**9
            try:
                timing.clear()
                search(plain, None)
                t_anchor = timing[0]
            finally:
                G.LOCAL_MIN_INLIERS_HOMOGRAPHY, G.LOCAL_MIN_INLIERS_AFFINE = keep
            found += kind != "distractor" and (j % len(kpix)) in {k for k, x in v.items() if x.ok}
            for name, val in (("regions", t_reg), ("plain pass", t_plain),
                              ("mirrored pass", t_mirror), ("stage 1 (plain)", st[0]),
                              ("stage 2 (mirrored)", st[1]), ("small-pass features", t_small),
                              ("stage 3 (small)", st[2]),
                              ("mirrored small-pass features", t_msmall),
                              ("stage 4 (mirrored small)", st[3]),
                              ("anchor stage", t_anchor)):
                acc.setdefault(name, []).append(val)
        rows.append((kind, {k: float(np.mean(x)) for k, x in acc.items()}, found))
    names = list(rows[0][1])
    print("| query kind | " + " | ".join(names) + " | new total | anchor total | ratio | found |")
    print("|---|" + "---:|" * (len(names) + 4))
    for kind, m, found in rows:
        new = sum(m[k] for k in names if k != "anchor stage")
        old = m["regions"] + m["plain pass"] + m["anchor stage"]
        print(f"| {kind} | " + " | ".join(f"{m[k]:.1f}" for k in names)
              + f" | {new:.1f} | {old:.1f} | {new / max(old, 1e-9):.2f}x | "
              + ("-" if kind == "distractor" else f"{found}/{a.queries}") + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
