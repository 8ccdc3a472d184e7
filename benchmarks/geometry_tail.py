"""False-match tail of the keypoint tier's geometric check, per model (issue 11).

    .venv/bin/python benchmarks/geometry_tail.py --known 60 --distractors 300

Every distractor (the evaluation's seeded sample, ``hashwatch eval --max-distractors``) is put
to the keypoint tier exactly as the matcher runs it (keypoint index nomination, all stages of
:func:`hashwatch.robust.verify.search_in_stages`); for every (stage, nominee) pair it records the
inliers each geometric model reaches on the pair's tentative matches:

* ``auto``: :func:`hashwatch.robust.geometry.fit_local` as the matcher calls it (a count only
  when the fit is sane; a richer model only counts once it reaches its minimum);
* ``similarity`` / ``affine`` / ``homography``: each model alone, as the scene check's second
  try calls it;
* ``affine_raw`` / ``homography_raw``: the plain RANSAC fit of that model with the same limits
  (:func:`~hashwatch.robust.geometry.homography_sane`, cover) but no inlier minimum: the tail
  the minimum cuts, so that it can be fitted (no pre-screen, so an upper bound for the
  homography).

Per model: the most inliers seen, the survival-function tail fit P(inliers >= 15) per pair
(:func:`hashwatch.evaluate.local_tail_rate`), CPU ms per pair (``time.process_time``), and how
many pairs with a passing model also passed the scene check.
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

import hashwatch.robust as R
from hashwatch import evaluate as E
from hashwatch.matcher import KEYPOINT_CANDIDATES
from hashwatch.robust import geometry as G
from hashwatch.robust.verify import candidate_pairs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--known", type=int, default=60)
    ap.add_argument("--distractors", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    cv2.setNumThreads(1)
    known, _, distractors = E.split_eval(E.corpus_files(E.resolve_corpus(None)), a.known,
                                         a.seed, a.distractors)  # the evaluation's sample
    ks = E.KnownSet([E.prepare_known(E.load_pixels(p), True) for p in known])
    names = ("auto", *G.MODELS, "affine_raw", "homography_raw")
    rec: dict[str, list[int]] = {m: [] for m in names}
    cpu = dict.fromkeys(names, 0.0)
    scene_pass = dict.fromkeys(G.MODELS, 0)

    def raw(m: str, src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray | None, ...]:
        if m == "affine_raw":
            return cv2.estimateAffine2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=4.0,
                                        maxIters=500, confidence=0.99, refineIters=5)
        return cv2.findHomography(src, dst, cv2.RANSAC, 4.0, maxIters=1000, confidence=0.995)

    def search(stage: R.LocalFeatures) -> dict[int, R.LocalVerdict]:
        out = {}
        for c in ks.local.search(stage, top=KEYPOINT_CANDIDATES):
            k = ks.local.features(c.slot)
            pairs = candidate_pairs(stage, k)
            src, dst = k.xy[pairs[:, 1]], stage.xy[pairs[:, 0]]
            for m in ("affine_raw", "homography_raw"):
                t = time.process_time()
                tr, inl = raw(m, src, dst) if len(pairs) >= 4 else (None, None)
                cpu[m] += time.process_time() - t
                ok = tr is not None and inl is not None and G.homography_sane(G._as3(tr), k.size)
                if ok:
                    sel = inl.ravel().astype(bool)
                    ok = G._cover(src[sel], dst[sel], k.size, stage.size) >= R.LOCAL_MIN_COVER
                rec[m].append(int(inl.sum()) if ok else 0)
            for m in ("auto", *G.MODELS):
                t = time.process_time()
                n, sane, tr = G.fit_local(stage, k, pairs, model=m)
                cpu[m] += time.process_time() - t
                rec[m].append(n if sane and tr is not None else min(n, 2))
                if m != "auto" and sane and tr is not None and n >= R.LOCAL_MIN_INLIERS:
                    scene_pass[m] += R.scene_check(stage, k, tr,
                                                   ks.known_hashes[c.image_id]).ok
            out[c.image_id] = R.verify(stage, k, ks.known_hashes[c.image_id])
        return out

    for p in distractors:
        R.search_in_stages(E.prepare_query(E.load_pixels(p), True).local, search)
    n = len(rec["auto"])
    print(f"{len(distractors)} distractors x {a.known} known; (stage, nominee) pairs put to the "
          f"geometric check: {n} ({n / max(1, len(distractors)):.1f} per distractor)")
    print("| model | most inliers | pairs >= 15 | P(inliers >= 15) per pair (fit) | decay | "
          "CPU ms per pair | counts 3..max |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for m in names:
        v = np.array(rec[m])
        rate, decay = E.local_tail_rate(v, len(v), R.LOCAL_MIN_INLIERS)
        hist = ", ".join(str(int((v == i).sum())) for i in range(3, int(v.max()) + 1))
        print(f"| {m} | {v.max()} | {(v >= 15).sum()} | {rate:.2g} | {decay:.2f} | "
              f"{1000 * cpu[m] / max(1, n):.2f} | {hist} |")
    print(f"scene check passed among pairs whose single model passed geometry: {scene_pass}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
