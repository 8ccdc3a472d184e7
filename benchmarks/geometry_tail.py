"""False-match tail of the keypoint tier's geometric check, per model (issues 10 and 11).

    # against the evaluation's known images (the exact keypoint store, ``hashwatch eval``'s
    # seeded distractor sample)
    .venv/bin/python benchmarks/geometry_tail.py --known 60 --distractors 300

    # against a saved scale-study keypoint index (``benchmarks/scale_study.py``), with the
    # study's query cache (every distractor; edited queries of --edits): resumable, one file
    # per unit of work in --out, split over processes with --part/--parts
    .venv/bin/python benchmarks/geometry_tail.py scale --index IDX1M --queries Q \\
        --set SET --real 75000 --edits EDITS --out OUT --part 0 --parts 2
    # the tables and the per-query rate extrapolated to 2*10^7 (one OUT per list size)
    .venv/bin/python benchmarks/geometry_tail.py report OUT1M [OUT200K]
    # many more chance pairs: every stage's nominees ranked 1..32 measured (--deep), the
    # matcher's own screened homography, scene checks on every chance fit; then its report
    .venv/bin/python benchmarks/geometry_tail.py scale ... --deep 32 --scene-every 1 --out D1M
    .venv/bin/python benchmarks/geometry_tail.py deep-report D1M [D200K]

Every query is put to the keypoint tier exactly as the matcher runs it (keypoint nomination, all
stages of :func:`hashwatch.robust.verify.search_in_stages`, each nominee verified by
:func:`hashwatch.robust.verify.verify`); for every (stage, nominee) pair it also records the
inliers each geometric model reaches on the pair's tentative matches:

* ``auto``: :func:`hashwatch.robust.geometry.fit_local` as the matcher calls it (a count only
  when the fit is sane; a richer model only counts once it reaches its minimum);
* ``similarity`` / ``affine`` / ``homography``: each model alone, as the scene check's second
  try calls it;
* ``affine_raw`` / ``homography_raw``: the plain RANSAC fit of that model with the same limits
  (:func:`~hashwatch.robust.geometry.homography_sane`, cover) but no inlier minimum: the tail
  the minimum cuts, so that it can be fitted (no pre-screen, so an upper bound for the
  homography).

Per model: the most inliers seen, the survival-function tail fit P(inliers >= need) per pair
(:func:`hashwatch.evaluate.local_tail_rate`: geometric tail, log S(k) linear in k), CPU ms per
pair (``time.process_time``). In ``scale`` mode, every ``--scene-every``-th distractor also runs
the scene check (:func:`hashwatch.robust.scene.scene_check`) on every sane chance fit of each
model (similarity, affine_raw, homography_raw; a recombined nominee has no PDQ views, so its
check is re-detection alone, as in the product): P(scene | chance alignment) (aligned PDQ: normal
tail fit, :func:`hashwatch.evaluate.tail_rate`; re-detected share: exponential tail fit,
:func:`hashwatch.evaluate.share_tail_rate`; summed). Per query, per model = nominees verified
per unmatched distractor x P(geometry) x P(scene), summed over the models (the union bound over
the nominees a query verifies), read two ways: issue 10's method (P(scene) pooled over every
chance fit) and a bound (each model's own P(scene), at least 3 / its fits). ``report`` with
several OUT folders (one per list size) fits the per-pair tails and nominee counts as power
laws in N; the nominee count at ``--target`` is :func:`hashwatch.robust.verify.nominee_ceiling`.

``--deep N`` (issue 10, the screened homography's own tail): chance pairs are what the tails
are fitted on, and the product's 8 nominees per stage give ~37,000 at 10^6, through which the
homography's tail (a dozen sane chance fits) cannot be fitted. Every stage's nominees ranked
1..N are measured by :func:`measure_chance` (nomination only adds the ranks the product does
not verify): the similarity, the affine map with no minimum, the matcher's own homography on the
groups it fits one on (>= 15 tentative pairs), with and without its screen, and the scene check
of every sane fit. ``deep-report`` fits each accepting model's tail per pair at its own minimum
on the ranks the product verifies (1-8) and on all ranks (more points; a less similar
population, so a lower tail: both are printed), P(scene) per model, and the per-query rate =
nominee_ceiling x tail x P(scene), summed over the models (the union bound), with the tails'
power law in N when two sizes are given.

A distractor's match is false unless its photograph is also a scale-set source
(:func:`hashwatch.scaleset.duplicate_distractors`: the same photograph under another name, a
true copy; reported apart); an edited query's match on any image but its own and its collage
partners is false.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

import hashwatch.robust as R  # noqa: E402
from hashwatch import evaluate as E  # noqa: E402
from hashwatch.matcher import KEYPOINT_CANDIDATES  # noqa: E402
from hashwatch.robust import geometry as G  # noqa: E402
from hashwatch.robust.local import mirrored_rows  # noqa: E402
from hashwatch.robust.verify import candidate_pairs  # noqa: E402

NAMES = ("auto", *G.MODELS, "affine_raw", "homography_raw")
SCENE_MODELS = ("similarity", "affine_raw", "homography_raw")  # chance fits scene-checked


def _raw(m: str, src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray | None, ...]:
    if m == "affine_raw":
        return cv2.estimateAffine2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=4.0,
                                    maxIters=500, confidence=0.99, refineIters=5)
    return cv2.findHomography(src, dst, cv2.RANSAC, 4.0, maxIters=1000, confidence=0.995)


def _pair_groups(stage: R.LocalFeatures, k: R.LocalFeatures) -> tuple:
    """(pairs, known points, query points, mirrored-pass mask, query width, the mirror map):
    the query's plain and mirrored keypoints are fitted apart, the mirrored ones in the
    mirrored frame (as fit_local does: no reflection to model)."""
    pairs = candidate_pairs(stage, k)
    lo, hi = mirrored_rows(stage)
    qw = stage.size[0]
    return (pairs, k.xy[pairs[:, 1]], stage.xy[pairs[:, 0]],
            (pairs[:, 0] >= lo) & (pairs[:, 0] < hi), qw,
            np.array([[-1.0, 0.0, qw - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))


def _sane_raw(m: str, src: np.ndarray, dst: np.ndarray, k: R.LocalFeatures,
              stage: R.LocalFeatures, cpu: dict[str, float], key: str
              ) -> tuple[int, np.ndarray]:
    """(inliers, 3x3 transform) of the plain RANSAC fit ``m`` (:func:`_raw`) when it passes the
    matcher's limits (``homography_sane``, cover), else (0, identity); CPU into cpu[key]."""
    t = time.process_time()
    tr, inl = _raw(m, src, dst)
    cpu[key] += time.process_time() - t
    if tr is None or inl is None or not G.homography_sane(G._as3(tr), k.size):
        return 0, np.eye(3)
    ok = inl.ravel().astype(bool)
    if not G.spread_ok(src[ok], dst[ok], k, stage.size):
        return 0, np.eye(3)
    return int(ok.sum()), G._as3(tr)


def measure_pair(stage: R.LocalFeatures, k: R.LocalFeatures, cpu: dict[str, float],
                 views: Callable[[], Sequence] | None = None, raw_homography: bool = True
                 ) -> tuple[list[int], dict]:
    """Inliers of every model in NAMES on one (query stage, nominee) pair (0: no sane fit;
    a model's count below its sanity is capped at 2), CPU seconds added to ``cpu``; with
    ``views`` (the nominee's stored PDQ views, a callable; none for a recombined set) the
    scene check of each sane chance fit in SCENE_MODELS: model -> [aligned PDQ (256: no view),
    re-detected share (0 when too few refound), passed, inliers]. ``raw_homography=False``
    skips the unscreened homography (~2 ms a pair; its column then reads 0)."""
    pairs, src, dst, in_mirror, qw, flip = _pair_groups(stage, k)
    got: dict[str, int] = {}
    fits: dict[str, np.ndarray] = {}
    for m in ("affine_raw", "homography_raw"):
        got[m] = 0
        if m == "homography_raw" and not raw_homography:
            continue
        for mirrored in (False, True):
            sel = in_mirror if mirrored else ~in_mirror
            if sel.sum() < 4:
                continue
            s_, d_ = src[sel], dst[sel].copy()
            if mirrored:
                d_[:, 0] = (qw - 1) - d_[:, 0]
            c, tr = _sane_raw(m, s_, d_, k, stage, cpu, m)
            if c > got[m]:
                got[m] = c
                fits[m] = flip @ tr if mirrored else tr
    for m in ("auto", *G.MODELS):
        t = time.process_time()
        n, sane, tr = G.fit_local(stage, k, pairs, model=m)
        cpu[m] += time.process_time() - t
        got[m] = n if sane and tr is not None else min(n, 2)
        if sane and tr is not None:
            fits[m] = tr
    scene: dict[str, list] = {}
    if views is not None:
        hashes = views()  # none for a recombined set: its scene check is re-detection alone
        for m in SCENE_MODELS:
            if m in fits:
                sc = R.scene_check(stage, k, fits[m], hashes)
                share = float(sc.redetect) if sc.refound >= R.SCENE_REFOUND_MIN else 0.0
                scene[m] = [int(sc.pdq), share, bool(sc.ok), got[m]]
    return [got[m] for m in NAMES], scene


# the columns of measure_chance's record (after image id, synthetic?, chance?)
DEEP = ("rank", "tentative", "screen", "similarity", "affine_raw", "homography_gated",
        "homography_screened")


def measure_chance(stage: R.LocalFeatures, k: R.LocalFeatures, rank: int, cpu: dict[str, float],
                   views: Callable[[], Sequence] | None = None) -> tuple[list[int], dict]:
    """The geometry the matcher runs on one (query stage, nominee) pair, measured without the
    inlier minimums, cheaply enough for many more chance pairs than the product verifies
    (``--deep``): DEEP's columns, ``rank`` the nominee's place in the stage's nomination (1 =
    best voted) and ``tentative`` the tentative pairs of the larger of the query's two groups
    (plain, mirrored: fitted apart, the mirrored one in the mirrored frame, as
    :func:`hashwatch.robust.geometry.fit_local` does). ``homography_gated``: the matcher's own
    RANSAC homography (the same OpenCV call, whose sampler is seeded: the same fit) on the
    groups the matcher fits one on (at least LOCAL_MIN_INLIERS_HOMOGRAPHY tentative pairs),
    sane (``homography_sane``, cover), without the screen; ``homography_screened``: the same
    where the screen (``_homography_possible``: PROSAC or uniform USAC >= HOMOGRAPHY_SCREEN)
    also passes, i.e. what the matcher's homography gathers before its minimum (0 elsewhere);
    ``screen``: the screen's larger inlier count. With ``views``, the scene check of each sane
    fit (similarity, affine_raw, homography_gated), as :func:`measure_pair` records it."""
    pairs, src, dst, in_mirror, qw, flip = _pair_groups(stage, k)
    got = dict.fromkeys(("screen", "affine_raw", "homography_gated", "homography_screened"), 0)
    tentative = 0
    fits: dict[str, np.ndarray] = {}
    for mirrored in (False, True):
        sel = in_mirror if mirrored else ~in_mirror
        n_sel = int(sel.sum())
        tentative = max(tentative, n_sel)
        if n_sel < 4:
            continue
        s_, d_ = src[sel], dst[sel].copy()
        if mirrored:
            d_[:, 0] = (qw - 1) - d_[:, 0]
        models = ["affine_raw"]
        if n_sel >= G.LOCAL_MIN_INLIERS_HOMOGRAPHY:
            models.append("homography_gated")
            t = time.process_time()
            scr = 0
            for method in (cv2.USAC_PROSAC, cv2.USAC_DEFAULT):
                _, inl = cv2.findHomography(s_, d_, method, 4.0, maxIters=1000, confidence=0.995)
                scr = max(scr, 0 if inl is None else int(inl.sum()))
            cpu["screen"] += time.process_time() - t
            got["screen"] = max(got["screen"], scr)
        for m in models:
            c, tr = _sane_raw("affine_raw" if m == "affine_raw" else "homography_raw", s_, d_,
                              k, stage, cpu, m)
            if c > got[m]:
                got[m] = c
                fits[m] = flip @ tr if mirrored else tr
            if m == "homography_gated" and scr >= G.HOMOGRAPHY_SCREEN:
                got["homography_screened"] = max(got["homography_screened"], c)
    t = time.process_time()
    n, sane, tr = G.fit_local(stage, k, pairs, model="similarity")
    cpu["similarity"] += time.process_time() - t
    got["similarity"] = n if sane and tr is not None else min(n, 2)
    if sane and tr is not None:
        fits["similarity"] = tr
    got.update(rank=rank, tentative=tentative)
    scene: dict[str, list] = {}
    if views is not None:
        hashes = views()
        for m in ("similarity", "affine_raw", "homography_gated"):
            if m in fits:
                t = time.process_time()
                sc = R.scene_check(stage, k, fits[m], hashes)
                cpu["scene"] += time.process_time() - t
                share = float(sc.redetect) if sc.refound >= R.SCENE_REFOUND_MIN else 0.0
                scene[m] = [int(sc.pdq), share, bool(sc.ok), got[m]]
    return [got[c] for c in DEEP], scene


# --- against the evaluation's known images ------------------------------------------------------


def cmd_eval(a: argparse.Namespace) -> int:
    known, _, distractors = E.split_eval(E.corpus_files(E.resolve_corpus(None)), a.known,
                                         a.seed, a.distractors)  # the evaluation's sample
    ks = E.KnownSet([E.prepare_known(E.load_pixels(p), True) for p in known])
    rec: list[list[int]] = []
    cpu = dict.fromkeys(NAMES, 0.0)
    scene_pass = dict.fromkeys(G.MODELS, 0)

    def search(stage: R.LocalFeatures, top: int | None) -> dict[int, R.LocalVerdict]:
        out = {}
        for c in ks.local.search(stage, top=top or KEYPOINT_CANDIDATES):
            k = ks.local.features(c.slot)
            row, _ = measure_pair(stage, k, cpu)
            rec.append(row)
            for m in G.MODELS:  # the single model passed geometry: does its scene check pass?
                n, sane, tr = G.fit_local(stage, k, candidate_pairs(stage, k), model=m)
                if sane and tr is not None and n >= R.LOCAL_MIN_INLIERS:
                    scene_pass[m] += R.scene_check(stage, k, tr,
                                                   ks.known_hashes[c.image_id]).ok
            out[c.image_id] = R.verify(stage, k, ks.known_hashes[c.image_id])
        return out

    for p in distractors:
        R.search_in_stages(E.prepare_query(E.load_pixels(p), True).local, search)
    n = len(rec)
    print(f"{len(distractors)} distractors x {a.known} known; (stage, nominee) pairs put to the "
          f"geometric check: {n} ({n / max(1, len(distractors)):.1f} per distractor)")
    v = np.array(rec, np.int64).reshape(-1, len(NAMES))
    _tail_table({m: v[:, j] for j, m in enumerate(NAMES)}, cpu, n, (R.LOCAL_MIN_INLIERS,))
    print(f"scene check passed among pairs whose single model passed geometry: {scene_pass}")
    return 0


def _tail_table(cols: dict[str, np.ndarray], cpu: dict[str, float] | None, n: int,
                needs: Sequence[int]) -> dict[str, dict[int, float]]:
    """Print the per-model tail table; return model -> need -> P(inliers >= need) per pair."""
    head = " | ".join(f"P(>= {k}) per pair" for k in needs)
    print(f"| model | most inliers | pairs >= {min(needs)} | {head} | decay per inlier | "
          f"CPU ms per pair | pairs at 3..max inliers |")
    print("|---|---:|---:|" + "---:|" * len(needs) + "---:|---:|---|")
    out: dict[str, dict[int, float]] = {}
    for m, v in cols.items():
        rates = {k: E.local_tail_rate(v, len(v), k)[0] for k in needs}
        decay = E.local_tail_rate(v, len(v), needs[0])[1]
        out[m] = rates
        hist = ", ".join(str(int((v == i).sum())) for i in range(3, int(v.max()) + 1))
        c = f"{1000 * cpu[m] / max(1, n):.2f}" if cpu else "-"
        r = " | ".join(f"{rates[k]:.2g}" for k in needs)
        print(f"| {m} | {v.max()} | {(v >= min(needs)).sum()} | {r} | {decay:.2f} | {c} | "
              f"{hist} |")
    return out


# --- against a saved scale-study index -----------------------------------------------------------


def _units(cache, edits: Sequence[str], chunk: int, most: int | None
           ) -> list[tuple[str, int, int]]:
    """(cache name, first, end) units of work: the (first ``most``) distractors in chunks,
    then each edit."""
    n_d = min(len(cache.load("distractors")), 10**9 if most is None else most)
    units = [("distractors", i, min(n_d, i + chunk)) for i in range(0, n_d, chunk)]
    return units + [(e, 0, 10**9) for e in edits]


def _scale_query(ix, q: R.LocalFeatures, allowed: set[int],
                 views_of: Callable[[int], list], scene: bool, raw_homography: bool,
                 deep: int = 0) -> dict:
    """One query through the product's keypoint search on ``ix`` (``views_of``: a nominee's
    stored PDQ views), every (stage, nominee) pair measured (:func:`measure_pair`; with
    ``scene``, the scene check of each chance fit too). With ``deep`` > 0, every chance pair
    of the stage's nominees ranked 1..``deep`` (the product verifies the first
    KEYPOINT_CANDIDATES) is also measured by :func:`measure_chance` (``deep`` rows; with
    ``scene``, its scene checks, in ``scene_deep``), the product's pairs too."""
    from hashwatch.scalestudy import SYNTH_ID0

    cpu = dict.fromkeys((*NAMES, "screen", "homography_gated", "scene"), 0.0)
    pairs: list[list] = []
    scenes: list[dict] = []
    deep_rows: list[list] = []
    deep_scenes: list[dict] = []
    t_prod = 0.0

    def search(stage: R.LocalFeatures, top: int | None) -> dict[int, R.LocalVerdict]:
        nonlocal t_prod
        t = time.thread_time()
        cands = ix.search(stage, top=top or KEYPOINT_CANDIDATES)
        out = {c.image_id: R.verify(stage, ix.features(c.slot),
                                    lambda c=c: views_of(c.image_id)) for c in cands}
        t_prod += time.thread_time() - t
        for c in cands:  # the measurement, after the product's own work
            v = out[c.image_id]
            chance = c.image_id not in allowed
            row, sc = measure_pair(
                stage, ix.features(c.slot), cpu,
                (lambda c=c: views_of(c.image_id)) if scene and chance and not deep else None,
                raw_homography)
            pairs.append([c.image_id, int(c.image_id >= SYNTH_ID0), int(chance),
                          int(v.inliers), int(v.ok), *row])
            if sc:
                scenes.append(sc)
        if deep:
            # measurement only: the nominees the product would verify if it verified ``deep``
            for r, c in enumerate(ix.search(stage, top=deep), 1):
                if c.image_id in allowed:
                    continue
                row2, sc2 = measure_chance(stage, ix.features(c.slot), r, cpu,
                                           (lambda c=c: views_of(c.image_id)) if scene else None)
                deep_rows.append([c.image_id, int(c.image_id >= SYNTH_ID0), 1, *row2])
                if sc2:
                    deep_scenes.append(sc2)
        return out

    got = R.search_in_stages(q, search)
    ok = sorted(i for i, v in got.items() if v.ok)
    return {"matched": ok, "false": [x for x in ok if x not in allowed],
            "verified": len(pairs), "cpu_product": t_prod, "pairs": pairs, "scene": scenes,
            "cpu_models": cpu, "deep": deep_rows, "scene_deep": deep_scenes}


def cmd_scale(a: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from hashwatch.robust.keypoint_index import KeypointIndex
    from hashwatch.scalestudy import QueryCache

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from keypoint_cost import _study_views

    cv2.setNumThreads(1)
    cache = QueryCache(a.queries)
    edits = [e for e in (a.edits.split(",") if a.edits else []) if e]
    missing = [e for e in edits if not cache.has(e)]
    if missing:
        raise SystemExit(f"not in the query cache {a.queries}: {', '.join(missing)}")
    units = _units(cache, edits, a.chunk, a.distractors)[a.part::a.parts]
    a.out.mkdir(parents=True, exist_ok=True)
    todo = [u for u in units if not (a.out / f"{u[0]}-{u[1]}.json").exists()]
    print(f"part {a.part}/{a.parts}: {len(units)} units, {len(todo)} to do", file=sys.stderr)
    if not todo:
        return 0
    views_of = _study_views(a.corpus, a.set, a.real, a.known, a.seed)

    ix = KeypointIndex.load(a.index, mmap=True)
    t0 = time.perf_counter()
    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), transient=False) as prog:
        task = prog.add_task("units", total=len(todo))
        for name, lo, hi in todo:
            qs = cache.load(name)[lo:hi]
            rows = []
            c_unit = time.process_time()
            qtask = prog.add_task(f"{name}[{lo}:]", total=len(qs))
            for j, q in enumerate(qs):
                prog.advance(qtask)
                i = lo + j
                if q.local is None or (name != "distractors" and q.hash_own):
                    continue  # the hash tier found its own image: no keypoint search
                scene = name == "distractors" and i % a.scene_every == 0
                allowed = {q.known, *q.partners} if name != "distractors" else set()
                row = _scale_query(ix, q.local, allowed, views_of, scene, a.raw_homography,
                                   a.deep)
                if a.deep:
                    row["scene_deep_on"] = scene
                row.update({"i": i, "known": q.known, "found": q.known in row["matched"]})
                rows.append(row)
            prog.remove_task(qtask)
            doc = {"unit": [name, lo, hi], "index": str(a.index), "slots": ix.n_slots,
                   "hash_own": [bool(q.hash_own) for q in qs], "rows": rows,
                   "columns": ["image_id", "synthetic", "chance", "inliers", "ok", *NAMES],
                   "cpu_s": time.process_time() - c_unit, "load": os.getloadavg(),
                   "finished": time.strftime("%H:%M:%S", time.gmtime())}
            tmp = a.out / f".{name}-{lo}.json.tmp"
            tmp.write_text(json.dumps(doc))
            os.replace(tmp, a.out / f"{name}-{lo}.json")
            prog.advance(task)
    print(f"part {a.part}: {time.perf_counter() - t0:.0f} s wall, "
          f"{time.process_time():.0f} s CPU", file=sys.stderr)
    return 0


def _duplicates(out: Path, corpus: Path | None, n_known: int, seed: int) -> set[int]:
    """Distractor indices whose photograph is also a scale-set source (cached in out)."""
    from hashwatch.scaleset import duplicate_distractors, study_split

    f = out / "duplicate_distractors.json"
    if not f.exists():
        _, dis, src = study_split(E.corpus_files(E.resolve_corpus(corpus)), n_known, seed)
        f.write_text(json.dumps(duplicate_distractors(dis, src)))
    return set(json.loads(f.read_text()))


def _summary(out: Path, a: argparse.Namespace) -> dict:
    docs = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))
            if p.name != "duplicate_distractors.json"]
    if not docs:
        raise SystemExit(f"{out}: no results")
    dups = _duplicates(out, a.corpus, a.known, a.seed)
    slots = docs[0]["slots"]
    dist = [r for d in docs if d["unit"][0] == "distractors" for r in d["rows"]]
    clean = [r for r in dist if r["i"] not in dups]
    edited: dict[str, list] = {}
    hash_own: dict[str, int] = {}
    for d in docs:
        if d["unit"][0] != "distractors":
            edited[d["unit"][0]] = d["rows"]
            hash_own[d["unit"][0]] = sum(d["hash_own"])
    # chance pairs: every distractor nominee (not of a duplicate distractor) and every wrong
    # nominee of an edited query; the accepted ones are listed as matches, not fitted
    rows = [p for r in clean for p in r["pairs"]] + \
        [p for rs in edited.values() for r in rs for p in r["pairs"] if p[2]]
    v = np.array(rows, np.int64).reshape(-1, 5 + len(NAMES))
    cols = {m: v[:, 5 + j] for j, m in enumerate(NAMES)}
    unmatched = [r for r in clean if not r["matched"]]
    scenes = [s for r in clean for s in r["scene"]]
    return {"slots": slots, "dist": dist, "clean": clean, "dups": dups, "edited": edited,
            "hash_own": hash_own, "cols": cols, "n_pairs": len(v),
            "synthetic_share": float(v[:, 1].mean()) if len(v) else math.nan,
            "unmatched": unmatched, "scenes": scenes,
            "cpu_models": {m: sum(r["cpu_models"][m] for r in clean) for m in NAMES},
            "n_dist_pairs": sum(len(r["pairs"]) for r in clean)}


def _scene_rate(scenes: list[dict], m: str) -> tuple[int, int, float, int, float]:
    """(fits scene-checked, passed, P(scene) fitted, lowest aligned PDQ, highest share)."""
    x = np.array([s[m][:3] for s in scenes if m in s], np.float64).reshape(-1, 3)
    if not len(x):
        return 0, 0, math.nan, 256, 0.0
    pdq = x[x[:, 0] < 256, 0]  # fits whose nominee has PDQ views
    p_pdq = E.tail_rate(pdq.astype(np.int16), R.SCENE_PDQ_MAX)[0] * len(pdq) / len(x) \
        if len(pdq) >= 1000 else math.nan
    p_rd = E.share_tail_rate(x[:, 1], R.SCENE_REDETECT_MIN)
    p = min(1.0, float(np.nansum([p_pdq, p_rd])))  # issue 10's method: the fits, summed
    return len(x), int(x[:, 2].sum()), p, int(x[:, 0].min()), float(x[:, 1].max())


def cmd_report(a: argparse.Namespace) -> int:
    needs = tuple(int(x) for x in a.needs.split(","))
    sums = [_summary(Path(o), a) for o in a.outs]
    noms: dict[int, float] = {}
    tails: dict[int, dict[str, dict[int, float]]] = {}
    scene_p: dict[int, dict[str, dict[str, float]]] = {}
    for s in sums:
        n_sl = s["slots"]
        print(f"\n### {n_sl:,} keypoint sets ({', '.join(map(str, a.outs))})\n")
        dist, clean = s["dist"], s["clean"]
        ver = np.array([r["verified"] for r in s["unmatched"]], float)
        noms[n_sl] = float(ver.mean())
        cpu = np.array([r["cpu_product"] for r in s["unmatched"]], float) * 1000
        print(f"- distractors run: {len(dist):,} ({len(dist) - len(clean)} whose photograph "
              f"is also a scale-set source, reported apart); unmatched: {len(s['unmatched']):,}")
        print(f"- nominees verified per unmatched distractor: mean {ver.mean():.2f}, p50 "
              f"{np.percentile(ver, 50):.0f}, max {ver.max():.0f}; product CPU per unmatched "
              f"distractor (nomination + verification, one core) p50 {np.percentile(cpu, 50):.1f}"
              f" / p99 {np.percentile(cpu, 99):.1f} ms")
        fm = [(r["i"], r["false"]) for r in clean if r["false"]]
        dm = [(r["i"], r["matched"]) for r in dist if r["i"] in s["dups"] and r["matched"]]
        print(f"- **false matches, distractors: {len(fm)}** {fm if fm else ''}; matches of the "
              f"duplicate-photograph distractors (true copies): {len(dm)} {dm}")
        fe = {e: sum(bool(r["false"]) for r in rs) for e, rs in s["edited"].items()}
        print(f"- edited queries that reached the keypoint tier: "
              f"{sum(len(r) for r in s['edited'].values()):,} of {len(s['edited'])} edits; "
              f"false matches among them: {sum(fe.values())}")
        hi = [(r["i"], p[0], dict(zip(NAMES, p[5:], strict=True)), bool(p[4]))
              for r in clean for p in r["pairs"] if max(p[5:]) >= needs[0]]
        print(f"- chance pairs of distractors with >= {needs[0]} inliers under some model: "
              f"{len(hi)} (distractor, nominee, per-model inliers, accepted): {hi}")
        print(f"- chance (stage, nominee) pairs fitted: {s['n_pairs']:,} "
              f"({s['n_dist_pairs']:,} of distractors; recombined nominees "
              f"{100 * s['synthetic_share']:.0f}%)\n")
        # the best chance alignment per query, per model
        best = {m: np.array([max([p[5 + j] for p in r["pairs"]] or [0]) for r in clean])
                for j, m in enumerate(NAMES)}
        print("| model | best chance alignment per distractor: p50 / p99 / max inliers |")
        print("|---|---:|")
        for m in NAMES:
            b = best[m]
            print(f"| {m} | {np.percentile(b, 50):.0f} / {np.percentile(b, 99):.0f} / "
                  f"{b.max()} |")
        print()
        rates = _tail_table(s["cols"], s["cpu_models"], s["n_dist_pairs"], needs)
        print("\n| model (scene-checked chance fits) | fits | passed | P(scene), tail fits | "
              "empirical bound (3 / fits) | lowest aligned PDQ | highest re-detected share |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        p_scene: dict[str, float] = {}
        bound: dict[str, float] = {}
        pooled = [{"any": v} for sc in s["scenes"] for v in sc.values()]
        for m, rows_m in [*((m, s["scenes"]) for m in SCENE_MODELS), ("any", pooled)]:
            n, ok, p, lo, hi = _scene_rate(rows_m, m)
            p_scene[m] = p if n >= 100 else math.nan
            print(f"| {m if m != 'any' else 'all models, pooled'} | {n:,} | {ok} | {p:.2g} | "
                  f"{3 / max(1, n):.2g} | {lo} | {hi:.3f} |")
            bound[m] = 3 / max(1, n)
        for m in SCENE_MODELS:  # under 100 fits of a model to fit its own: the pooled rate
            if math.isnan(p_scene[m]):
                p_scene[m] = p_scene["any"]
        # per query: nominees x P(geometry >= need) x P(scene), per model and summed; the
        # homography's geometry from its unscreened fit when measured (an upper bound: the
        # matcher's screened fit gathers no more), else the screened fit's
        hom = "homography_raw" if s["cols"]["homography_raw"].any() else "homography"
        geo = {"similarity": "similarity", "affine": "affine_raw", "homography": hom}
        own = {"similarity": "similarity", "affine": "affine_raw",
               "homography": "homography_raw"}
        # issue 10's method: P(scene) pooled over every chance fit (tail fits); the bound:
        # each model's own fits, the larger of its tail fit and 3 / fits (pooled when < 100)
        ps_method = dict.fromkeys(geo, p_scene["any"])
        ps_bound = {m: max(p_scene[own[m]], bound[own[m]])
                    if bound[own[m]] <= 0.03 else bound["any"] for m in geo}
        tails[n_sl] = {m: {k: rates[geo[m]][k] for k in needs} for m in geo}
        scene_p[n_sl] = {"method": ps_method, "bound": ps_bound}
        for label, ps in (("method (pooled P(scene))", ps_method),
                          ("bound (each model's own P(scene), at least 3 / fits)", ps_bound)):
            pq = {m: noms[n_sl] * rates[geo[m]][needs[0]] * ps[m] for m in geo}
            print(f"\nper query at {n_sl:,}, {label}: nominees {noms[n_sl]:.2f} x P(geometry >= "
                  f"{needs[0]}) x P(scene): " + ", ".join(
                      f"{m} {v:.2g} (x {ps[m]:.2g})" for m, v in pq.items())
                  + f"; **sum {sum(pq.values()):.2g}**")
            for k in needs[1:]:
                aff = noms[n_sl] * rates["affine_raw"][k] * ps["affine"]
                print(f"  the affine's minimum {k}: affine {aff:.2g}, sum "
                      f"{sum(pq.values()) - pq['affine'] + aff:.2g}")
    if len(sums) > 1:  # P(scene) does not depend on N: every size's chance fits, pooled
        allsc = [sc for sm in sums for sc in sm["scenes"]]
        pooled = [{"any": v} for sc in allsc for v in sc.values()]
        ps = {m: _scene_rate(allsc, m) for m in SCENE_MODELS}
        anyr = _scene_rate(pooled, "any")
        own = {"similarity": "similarity", "affine": "affine_raw",
               "homography": "homography_raw"}
        b_any = 3 / max(1, anyr[0])
        bound_all = {m: max(ps[own[m]][2], 3 / max(1, ps[own[m]][0]))
                     if ps[own[m]][0] >= 100 else max(anyr[2], b_any) for m in own}
        print(f"\nP(scene), every size pooled: {anyr[0]:,} chance fits, {anyr[1]} passed; tail "
              f"fits {anyr[2]:.2g}; per model (fits, passed, bound): " + ", ".join(
                  f"{m} ({ps[own[m]][0]:,}, {ps[own[m]][1]}, {bound_all[m]:.2g})" for m in own))
        scene_p[max(noms)] = {"method": dict.fromkeys(own, anyr[2]), "bound": bound_all}
    _extrapolate(noms, tails, scene_p, needs, a.target)
    return 0


def _extrapolate(noms: dict[int, float], tails: dict[int, dict[str, dict[int, float]]],
                 scene_p: dict[int, dict[str, dict[str, float]]], needs: Sequence[int],
                 target: int) -> None:
    """Per-query rate at ``target`` known images: nominees per unmatched query and each
    model's per-pair tail as power laws in N through the measured sizes (flat from one size;
    nominees at their ceiling, ``nominee_ceiling``; a falling law is held flat at the
    largest size), times P(scene) of every size's chance fits pooled (a per-pair test on the
    aligned pixels, assumed not to change with N)."""
    sizes = sorted(noms)
    if not sizes:
        return

    def law(y: list[float]) -> tuple[float, float]:
        if len(sizes) < 2 or min(y) <= 0:
            return y[-1], 0.0
        b, c = np.polyfit(np.log(sizes), np.log(y), 1)
        if b < 0:  # a tail does not shrink as the nominees get more alike: held flat
            return max(y[-1], float(math.exp(c + b * math.log(sizes[-1])))), float(b)
        return float(math.exp(c + b * math.log(target))), float(b)

    nom_t, nom_b = law([noms[n] for n in sizes])
    cap = R.nominee_ceiling(KEYPOINT_CANDIDATES)
    print(f"\n### Extrapolated to {target:,} known images (sizes {sizes})\n")
    print(f"- nominees verified per unmatched query: {[round(noms[n], 2) for n in sizes]} -> "
          f"{nom_t:.2f} (power law exponent {nom_b:.3f}); at most {cap} (nominee_ceiling: 3 "
          f"stages x {KEYPOINT_CANDIDATES}, the small-picture boxes alone and the mirrored "
          f"small-picture stage), the figure used "
          f"below")
    last = scene_p[sizes[-1]]
    for k in needs:
        tot = {"method": 0.0, "bound": 0.0}
        parts = []
        for m in tails[sizes[-1]]:
            y = [tails[n][m][k if m == "affine" else needs[0]] for n in sizes]
            p_t, b = law(y)
            for r in tot:
                tot[r] += cap * p_t * last[r][m]
            parts.append(f"{m} {', '.join(f'{v:.2g}' for v in y)} -> {p_t:.2g} (exponent "
                         f"{b:.3f}{', held flat' if b < 0 else ''}) x P(scene) "
                         f"{last['method'][m]:.2g} / bound {last['bound'][m]:.2g}")
        print(f"- minimum {k} (the affine's; similarity and homography at "
              f"{needs[0]}): " if k != needs[0] else f"- minimum {k}: ", end="")
        print(f"P(geometry) per pair {'; '.join(parts)}; **per query: method {tot['method']:.2g}, "
              f"bound {tot['bound']:.2g}**")


def _deep_summary(out: Path, a: argparse.Namespace) -> dict:
    """The ``--deep`` records of one scale run: chance pairs of the clean distractors (DEEP's
    columns after image id, synthetic?, chance?) and their scene checks."""
    docs = [json.loads(p.read_text()) for p in sorted(out.glob("distractors-*.json"))]
    if not docs or "deep" not in docs[0]["rows"][0]:
        raise SystemExit(f"{out}: no --deep records")
    dups = _duplicates(out, a.corpus, a.known, a.seed)
    clean = [r for d in docs for r in d["rows"] if r["i"] not in dups]
    v = np.array([p for r in clean for p in r["deep"]], np.int64).reshape(-1, 3 + len(DEEP))
    cols = {c: v[:, 3 + j] for j, c in enumerate(DEEP)}
    scenes = [s for r in clean for s in r["scene_deep"]]
    cpu: dict[str, float] = {}
    for r in clean:
        for k, x in r["cpu_models"].items():
            cpu[k] = cpu.get(k, 0.0) + x
    unmatched = [r["verified"] for r in clean if not r["matched"]]
    return {"slots": docs[0]["slots"], "clean": clean, "cols": cols, "n": len(v),
            "nominees": float(np.mean(unmatched)) if unmatched else math.nan,
            "synthetic": float(v[:, 1].mean()) if len(v) else math.nan, "scenes": scenes,
            "cpu": cpu, "queries": len(clean),
            "scene_queries": sum(bool(r.get("scene_deep_on")) for r in clean)}


# the scene check's chance fits per accepting model (measure_chance's columns)
SCENE_OF = {"similarity": "similarity", "affine": "affine_raw", "homography": "homography_gated"}


def _tail(x: np.ndarray, n: int, need: int) -> float:
    return E.local_tail_rate(x, n, need)[0]


def cmd_deep_report(a: argparse.Namespace) -> int:
    """Per-pair tails of the models the matcher accepts by, from the ``--deep`` chance pairs,
    P(scene) per model, and the per-query rate (nominee_ceiling x tail x P(scene), summed over
    the models: the union bound), per list size and at ``--target``.

    The homography's own sane chance fits are too few to fit (a few per 10^4 pairs), so its
    tail is bounded through the screen: on every pair with a sane homography, its inliers
    exceeded the screen's count by at most ``excess`` (measured, printed), so P(homography >=
    M) <= P(screen >= M - excess), the screen's count being fitted on every gated pair; the
    sanity check's further cut is not credited."""
    ceiling = R.nominee_ceiling(KEYPOINT_CANDIDATES)
    needs = {"similarity": R.LOCAL_MIN_INLIERS, "affine": G.LOCAL_MIN_INLIERS_AFFINE,
             "homography": G.LOCAL_MIN_INLIERS_HOMOGRAPHY}
    h_mins = [int(x) for x in a.homography_mins.split(",")]
    a_mins = [int(x) for x in a.affine_mins.split(",")]
    sums = [_deep_summary(Path(o), a) for o in a.outs]
    # a sane homography's inliers over the screen's count, the most at any size
    excess = max([int((s["cols"]["homography_gated"] - s["cols"]["screen"])[
        s["cols"]["homography_gated"] > 0].max()) for s in sums
        if (s["cols"]["homography_gated"] > 0).any()] or [0])
    per: dict[int, dict] = {}
    for s in sums:
        n_sl, cols = s["slots"], s["cols"]
        rank = cols["rank"]
        print(f"\n### {n_sl:,} keypoint sets: {s['n']:,} chance (stage, nominee) pairs of "
              f"{s['queries']:,} distractors, nominee ranks 1-{rank.max()} of every stage "
              f"(recombined nominees {100 * s['synthetic']:.0f}%)\n")
        gated = cols["tentative"] >= G.LOCAL_MIN_INLIERS_HOMOGRAPHY
        hg, scr = cols["homography_gated"], cols["screen"]
        past = scr >= G.HOMOGRAPHY_SCREEN
        sane_share = float((hg[past] > 0).mean()) if past.any() else 1.0
        print(f"- pairs whose larger group has >= {G.LOCAL_MIN_INLIERS_HOMOGRAPHY} tentative "
              f"pairs (the only ones the matcher fits a homography on): {gated.sum():,} "
              f"({100 * gated.mean():.1f}%); screen >= {G.HOMOGRAPHY_SCREEN}: "
              f"{(scr >= G.HOMOGRAPHY_SCREEN).sum():,}; sane homographies: "
              f"{(hg > 0).sum():,} (inliers {sorted(hg[hg > 0].tolist())}), past the screen "
              f"too: {(cols['homography_screened'] > 0).sum():,}; a sane homography's inliers "
              f"minus the screen's count: at most "
              f"{int((hg - scr)[hg > 0].max()) if (hg > 0).any() else 0}")
        for lo_, hi_ in ((5, 7), (8, 9), (10, 12), (13, 99)):
            sel = (scr >= lo_) & (scr <= hi_)
            print(f"  - screen {lo_}-{hi_}: {sel.sum():,} pairs, sane homography on "
                  f"{(sel & (hg > 0)).sum()}")
        n_pairs = max(1, s["n"])
        print("- CPU ms per pair: " + ", ".join(
            f"{k} {1000 * x / n_pairs:.2f}" for k, x in sorted(s["cpu"].items())
            if k in ("similarity", "affine_raw", "screen", "homography_gated", "scene")))
        ks = sorted({15, 17, *a_mins, *h_mins, *(m - excess for m in h_mins)})
        print("\n| column | ranks | pairs | most | " + " | ".join(f"P(>= {k})" for k in ks)
              + " | decay | pairs at 3..most |")
        print("|---|---|---:|---:|" + "---:|" * len(ks) + "---:|---|")
        tails: dict[tuple[str, str], dict[int, float]] = {}
        for c in ("similarity", "affine_raw", "homography_screened", "screen"):
            for label, sel in (("1-8", rank <= KEYPOINT_CANDIDATES),
                               (f"9-{rank.max()}", rank > KEYPOINT_CANDIDATES),
                               ("all", np.ones(len(rank), bool))):
                x = cols[c][sel]
                if not len(x):
                    continue
                t = {k: _tail(x, len(x), k) for k in ks}
                tails[(c, label.split("-")[0])] = t
                dec = E.local_tail_rate(x, len(x), 15)[1]
                hist = ", ".join(str(int((x == i).sum())) for i in range(3, int(x.max()) + 1))
                print(f"| {c} | {label} | {len(x):,} | {x.max()} | " +
                      " | ".join(f"{t[k]:.2g}" for k in ks) + f" | {dec:.2f} | {hist} |")
        print("\n| model (scene-checked chance fits) | fits | passed | P(scene), tail fits | "
              "3 / fits | lowest aligned PDQ | highest re-detected share | inliers of the "
              "passes |")
        print("|---|---:|---:|---:|---:|---:|---:|---|")
        pooled = [{"any": x} for sc in s["scenes"] for x in sc.values()]
        for m, rows_m in [*((m, s["scenes"]) for m in SCENE_OF.values()), ("any", pooled)]:
            n, ok, p, lo, hi = _scene_rate(rows_m, m)
            inl = sorted(int(r[m][3]) for r in rows_m if m in r and r[m][2])
            print(f"| {m if m != 'any' else 'all, pooled'} | {n:,} | {ok} | {p:.2g} | "
                  f"{3 / max(1, n):.2g} | {lo} | {hi:.3f} | {inl} |")
        print(f"\n(scene checks on the chance fits of {s['scene_queries']:,} distractors)")
        print(f"- nominees verified per unmatched distractor (the product's, as run): mean "
              f"{s['nominees']:.2f}; a sane homography among the pairs past the screen: "
              f"{sane_share:.3g}")
        per[n_sl] = {"tails": tails, "sane": sane_share,
                     "nominees": s["nominees"]}
    sizes = sorted(per)
    allsc = [sc for s in sums for sc in s["scenes"]]
    pooled = [{"any": x} for sc in allsc for x in sc.values()]
    any_n, any_ok, any_p, _, _ = _scene_rate(pooled, "any")
    any_b = max(any_p, 3 / max(1, any_n))
    own = {m: _scene_rate(allsc, SCENE_OF[m]) for m in needs}
    p_method = dict.fromkeys(needs, any_p)
    p_bound = {m: max(own[m][2], 3 / own[m][0]) if own[m][0] >= 100 else any_b for m in needs}
    print(f"\nP(scene | chance fit), every size pooled: {any_n:,} fits, {any_ok} passed, tail "
          f"fits {any_p:.2g} (issue 10's method); bound per model (the larger of its own tail "
          f"fit and 3 / fits; the pooled one under 100 fits): " + ", ".join(
              f"{m} ({own[m][0]:,} fits, {own[m][1]} passed: {p_bound[m]:.2g})" for m in needs))
    sane = per[sizes[-1]]["sane"]
    mean_nom = per[sizes[-1]]["nominees"]

    def at(c: str, pop: str, k: int) -> tuple[list[float], float, float]:
        y = [per[n]["tails"][(c, pop)][k] for n in sizes]
        if len(sizes) >= 2 and min(y) > 0:
            b = float(np.polyfit(np.log(sizes), np.log(y), 1)[0])
        else:
            b = a.exponent  # one size: the growth law given (--exponent)
        b = max(b, 0.0)  # a tail does not shrink as the nominees get more alike
        return y, b, y[-1] * (a.target / sizes[-1]) ** b

    for pop, which in (("1", "ranks 1-8 (the nominees verified)"),
                       ("all", "ranks 1-32 (every nominee measured)")):
        print(f"\n#### Per query, per-pair tails from {which}; {ceiling} nominees "
              f"(nominee_ceiling); the homography through the screen: P(screen >= minimum - "
              f"{excess}), in the method's reading times the share of sane homographies past "
              f"the screen ({sane:.3g}), in the bound's not\n")
        print("| model (minimum) | P(>= minimum) per pair at " + " / ".join(
            f"{n:,}" for n in sizes) + f" | exponent in N | at {a.target:,} | per query at "
            f"{sizes[-1]:,}, method / bound | per query at {a.target:,}, method / bound |")
        print("|---|---:|---:|---:|---:|---:|")
        terms: dict[str, tuple[float, ...]] = {}
        rows = [("similarity", "similarity", needs["similarity"])] + \
            [("affine", "affine_raw", m) for m in sorted({needs["affine"], *a_mins})] + \
            [("homography", "screen", m) for m in h_mins]
        for m, c, k in rows:
            y, b, p_t = at(c, pop, k - (excess if m == "homography" else 0))
            f = sane if m == "homography" else 1.0
            v = (ceiling * y[-1] * p_method[m] * f, ceiling * y[-1] * p_bound[m],
                 ceiling * p_t * p_method[m] * f, ceiling * p_t * p_bound[m])
            terms[f"{m}{k}"] = v
            print(f"| {m} ({k}) | " + " / ".join(f"{x:.2g}" for x in y) + f" | {b:.2f} | "
                  f"{p_t:.2g} | {v[0]:.2g} / {v[1]:.2g} | {v[2]:.2g} / {v[3]:.2g} |")
        # each homography minimum with the matcher's affine one, then each affine minimum
        # with the matcher's homography one
        combos = [(needs["affine"], hm) for hm in h_mins] + \
            [(am, needs["homography"]) for am in a_mins if am != needs["affine"]]
        for am, hm in combos:
            tot = [terms[f"similarity{needs['similarity']}"][i]
                   + terms[f"affine{am}"][i] + terms[f"homography{hm}"][i]
                   for i in range(4)]
            mark = " (the matcher's)" if (am, hm) == (needs["affine"],
                                                    needs["homography"]) else ""
            print(f"| **keypoint tier, affine at {am}, homography at {hm}{mark}** | | | | "
                  f"**{tot[0]:.2g}** / "
                  f"{tot[1]:.2g} | **{tot[2]:.2g}** / {tot[3]:.2g} |")
            print(f"| the same with the mean nominees per unmatched distractor "
                  f"({mean_nom:.2f}) instead of the ceiling | | | | "
                  f"{tot[0] * mean_nom / ceiling:.2g} / {tot[1] * mean_nom / ceiling:.2g} | "
                  f"{tot[2] * mean_nom / ceiling:.2g} / {tot[3] * mean_nom / ceiling:.2g} |")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("eval", "scale", "report", "deep-report", "-h", "--help"):
        argv.insert(0, "eval")  # the first form of this script: no sub-command
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    ev = sub.add_parser("eval", help="against the evaluation's known images (default)")
    ev.add_argument("--known", type=int, default=60)
    ev.add_argument("--distractors", type=int, default=300)
    ev.add_argument("--seed", type=int, default=0)
    ev.set_defaults(fn=cmd_eval)
    sc = sub.add_parser("scale", help="against a saved scale-study keypoint index")
    sc.add_argument("--index", type=Path, required=True)
    sc.add_argument("--queries", type=Path, required=True, help="scale_study.py query cache")
    sc.add_argument("--set", type=Path, required=True, help="the generated scale set")
    sc.add_argument("--real", type=int, default=75_000)
    sc.add_argument("--edits", default="", help="edited queries too (comma-separated)")
    sc.add_argument("--out", type=Path, required=True)
    sc.add_argument("--part", type=int, default=0)
    sc.add_argument("--parts", type=int, default=1)
    sc.add_argument("--chunk", type=int, default=250, help="distractors per unit of work")
    sc.add_argument("--distractors", type=int, default=None, help="only the first N")
    sc.add_argument("--scene-every", type=int, default=2)
    sc.add_argument("--deep", type=int, default=0,
                    help="also measure (measure_chance) every chance nominee ranked 1..N of "
                         "each stage; the scene checks then run on those (not measure_pair's)")
    sc.add_argument("--raw-homography", action="store_true",
                    help="also the unscreened RANSAC homography per pair (~2 ms each)")
    sc.add_argument("--known", type=int, default=200)
    sc.add_argument("--seed", type=int, default=0)
    sc.add_argument("--corpus", type=Path, default=None)
    sc.set_defaults(fn=cmd_scale)
    for name, text, fn in (("report", "tables and per-query rates of scale runs", cmd_report),
                           ("deep-report", "tails and per-query rates of --deep scale runs",
                            cmd_deep_report)):
        rp = sub.add_parser(name, help=text)
        rp.add_argument("outs", nargs="+", type=Path)
        rp.add_argument("--target", type=int, default=20_000_000,
                        help="list size to extrapolate to")
        rp.add_argument("--known", type=int, default=200)
        rp.add_argument("--seed", type=int, default=0)
        rp.add_argument("--corpus", type=Path, default=None)
        rp.set_defaults(fn=fn)
        if name == "report":
            rp.add_argument("--needs", default="15,16,17,18", help="inlier minimums to evaluate")
        else:
            rp.add_argument("--exponent", type=float, default=0.62,
                            help="with one size: the per-pair tails' power law in N (default: "
                                 "the largest measured, the affine's at 17 from 2*10^5 to 10^6)")
            rp.add_argument("--homography-mins", default="15,18,20,22",
                            help="homography minimums to evaluate")
            rp.add_argument("--affine-mins", default="17,18,19,20",
                            help="affine minimums to evaluate (with the matcher's homography "
                                 "minimum)")
    a = ap.parse_args(argv)
    if a.cmd == "eval":
        cv2.setNumThreads(1)
    return a.fn(a)


if __name__ == "__main__":
    raise SystemExit(main())
