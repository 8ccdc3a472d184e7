"""Query-time cost of the region proposals for pictures that fill a small part of the frame
(issue 11: grid cells, pasted-picture rectangles), against the same steps without them, in one
run.

    .venv/bin/python benchmarks/region_cost.py --known 30 --edits jpeg50,grid3x3,pip30-photo

For unmatched distractors (the larger photographs, where proposals are most often found) and
the queries of each edit, CPU milliseconds per query on one core (``time.process_time``: other
load on the machine does not count), decode excluded:

* the proposals themselves (``query_cells`` + ``query_rectangles``, as the hash tier calls them);
* the hash tier's query views (``query_signals``: PDQ of every view, proposals included) with
  and without the new views, and how many PDQ views each gives (each one is one more probe of
  the hash index, i.e. one more chance of a false match at the route's threshold);
* the small-picture pass's features (``small_pass``, run only when the keypoint stages before it
  matched nothing) with and without the proposals (without: collage leaves and tiles as before);
* the small-picture pass's keypoint searches (the known images' keypoint index nominates
  ``KEYPOINT_CANDIDATES``, each is verified: geometric and scene check), every part of
  :func:`hashwatch.robust.local.small_stages` (an unmatched upload runs them all) against its
  first part alone (the boxes together: the search before the box-by-box parts).

*Anchor* = the same functions with ``query_cells`` and ``query_rectangles`` returning nothing.
"""

from __future__ import annotations

import argparse
import os
import time
from contextlib import contextmanager
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from hashwatch import robust as R  # noqa: E402
from hashwatch.edits import edit_names  # noqa: E402
from hashwatch.evaluate import (  # noqa: E402
    corpus_files,
    load_pixels,
    make_query,
    split_eval,
)
from hashwatch.robust import local as L  # noqa: E402
from hashwatch.robust import regions as G  # noqa: E402
from hashwatch.robust import views as V  # noqa: E402

cv2.setNumThreads(1)


@contextmanager
def _without_proposals():  # type: ignore[no-untyped-def]
    saved = (V.query_cells, V.query_rectangles, L.query_cells, L.query_rectangles)
    V.query_cells = V.query_rectangles = L.query_cells = L.query_rectangles = (
        lambda *a, **k: [])
    try:
        yield
    finally:
        V.query_cells, V.query_rectangles, L.query_cells, L.query_rectangles = saved


def _cpu(f, *a, **k):  # type: ignore[no-untyped-def]
    t = time.process_time()
    out = f(*a, **k)
    return out, 1000 * (time.process_time() - t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    here = Path(__file__).resolve()
    ap.add_argument("--corpus", type=Path, default=Path(os.environ.get(
        "HASHWATCH_CORPUS", here.parents[2] / "shared" / "corpus")))
    ap.add_argument("--known", type=int, default=30, help="queries per kind, too")
    ap.add_argument("--edits", default="jpeg50,grid3x3,grid4x4,pip30-photo,pip45-generated")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    known, fillers, distractors = split_eval(corpus_files(a.corpus), a.known, a.seed)
    kpix = [load_pixels(p) for p in known]
    from hashwatch.evaluate import KnownSet, prepare_known
    from hashwatch.matcher import KEYPOINT_CANDIDATES

    ks = KnownSet([prepare_known(p, True) for p in kpix])

    def search(stage: R.LocalFeatures) -> int:
        found = ks.local.search(stage, top=KEYPOINT_CANDIDATES)
        for c in found:
            R.verify(stage, ks.local.features(c.slot), ks.known_hashes[c.image_id])
        return len(found)

    def stage3(sp: R.LocalFeatures) -> list[R.LocalFeatures]:
        # main before the box-by-box parts has no small_stages: the pass is one search
        return L.small_stages(sp) if hasattr(L, "small_stages") else [sp]

    fpix = [load_pixels(p) for p in fillers]
    names = edit_names()
    sets = {"distractor (larger photos)": [
        load_pixels(p) for p in [d for d in distractors if "flowers" not in str(d)][:a.known]]}
    for e in a.edits.split(","):
        sets[e] = [make_query(e, names.index(e), k, kpix, fpix, a.seed)[0]
                   for k in range(len(kpix))]
    print(f"{a.known} queries per kind; CPU ms per query, 1 core, decode excluded")
    print("| query kind | proposals | hash views | anchor hash views | PDQ views (anchor) "
          "| small-pass features | anchor small-pass features | ratio (views + small pass) "
          "| small-pass searches | their CPU | first search alone |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind, imgs in sets.items():
        acc = np.zeros(7)
        nv = nv0 = nparts = 0
        for img in imgs:
            boxes = R.query_regions(img)
            _, t_cells = _cpu(G.query_cells, img, boxes)
            _, t_rects = _cpu(G.query_rectangles, img, boxes)
            t_prop = t_cells + t_rects
            views, t_views = _cpu(R.query_signals, img, boxes=boxes)
            q = R.query_local(img, boxes)
            sp, t_small = _cpu(L.small_pass, q)
            parts = stage3(sp)
            _, t_search = _cpu(lambda ps: [search(p) for p in ps], parts)
            _, t_first = _cpu(search, parts[0]) if parts else (0, 0.0)
            nparts += len(parts)
            with _without_proposals():
                views0, t_views0 = _cpu(R.query_signals, img, boxes=boxes)
                q0 = R.LocalFeatures(q.xy, q.desc, q.size, {**q.extra, "rects": []},
                                     q.angle, q.octave)
                _, t_small0 = _cpu(L.small_pass, q0)
            acc += [t_prop, t_views, t_views0, t_small, t_small0, t_search, t_first]
            nv += len(views)
            nv0 += len(views0)
        m = acc / len(imgs)
        print(f"| {kind} | {m[0]:.1f} | {m[1]:.1f} | {m[2]:.1f} | {nv / len(imgs):.1f} "
              f"({nv0 / len(imgs):.1f}) | {m[3]:.1f} | {m[4]:.1f} | "
              f"{(m[1] + m[3]) / max(m[2] + m[4], 1e-9):.2f}x | {nparts / len(imgs):.1f} "
              f"| {m[5]:.1f} | {m[6]:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
