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
laws in N; the nominee count at ``--target`` is the 3-stage ceiling (3 x KEYPOINT_CANDIDATES).

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


def measure_pair(stage: R.LocalFeatures, k: R.LocalFeatures, cpu: dict[str, float],
                 views: Callable[[], Sequence] | None = None, raw_homography: bool = True
                 ) -> tuple[list[int], dict]:
    """Inliers of every model in NAMES on one (query stage, nominee) pair (0: no sane fit;
    a model's count below its sanity is capped at 2), CPU seconds added to ``cpu``; with
    ``views`` (the nominee's stored PDQ views, a callable; none for a recombined set) the
    scene check of each sane chance fit in SCENE_MODELS: model -> [aligned PDQ (256: no view),
    re-detected share (0 when too few refound), passed, inliers]. ``raw_homography=False``
    skips the unscreened homography (~2 ms a pair; its column then reads 0)."""
    pairs = candidate_pairs(stage, k)
    src, dst = k.xy[pairs[:, 1]], stage.xy[pairs[:, 0]]
    # the query's plain and mirrored keypoints are fitted apart, the mirrored ones in the
    # mirrored frame (as fit_local does: no reflection to model)
    lo, hi = mirrored_rows(stage)
    in_mirror = (pairs[:, 0] >= lo) & (pairs[:, 0] < hi)
    qw = stage.size[0]
    flip = np.array([[-1.0, 0.0, qw - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
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
            t = time.process_time()
            tr, inl = _raw(m, s_, d_)
            cpu[m] += time.process_time() - t
            if tr is None or inl is None or not G.homography_sane(G._as3(tr), k.size):
                continue
            ok = inl.ravel().astype(bool)
            if G._cover(s_[ok], d_[ok], k.size, stage.size) < R.LOCAL_MIN_COVER:
                continue
            if int(ok.sum()) > got[m]:
                got[m] = int(ok.sum())
                fits[m] = flip @ G._as3(tr) if mirrored else G._as3(tr)
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


# --- against the evaluation's known images ------------------------------------------------------


def cmd_eval(a: argparse.Namespace) -> int:
    known, _, distractors = E.split_eval(E.corpus_files(E.resolve_corpus(None)), a.known,
                                         a.seed, a.distractors)  # the evaluation's sample
    ks = E.KnownSet([E.prepare_known(E.load_pixels(p), True) for p in known])
    rec: list[list[int]] = []
    cpu = dict.fromkeys(NAMES, 0.0)
    scene_pass = dict.fromkeys(G.MODELS, 0)

    def search(stage: R.LocalFeatures) -> dict[int, R.LocalVerdict]:
        out = {}
        for c in ks.local.search(stage, top=KEYPOINT_CANDIDATES):
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
                 views_of: Callable[[int], list], scene: bool, raw_homography: bool) -> dict:
    """One query through the product's keypoint search on ``ix`` (``views_of``: a nominee's
    stored PDQ views), every (stage, nominee) pair measured (:func:`measure_pair`; with
    ``scene``, the scene check of each chance fit too)."""
    from hashwatch.scalestudy import SYNTH_ID0

    cpu = dict.fromkeys(NAMES, 0.0)
    pairs: list[list] = []
    scenes: list[dict] = []
    t_prod = 0.0

    def search(stage: R.LocalFeatures) -> dict[int, R.LocalVerdict]:
        nonlocal t_prod
        t = time.thread_time()
        cands = ix.search(stage, top=KEYPOINT_CANDIDATES)
        out = {c.image_id: R.verify(stage, ix.features(c.slot),
                                    lambda c=c: views_of(c.image_id)) for c in cands}
        t_prod += time.thread_time() - t
        for c in cands:  # the measurement, after the product's own work
            v = out[c.image_id]
            chance = c.image_id not in allowed
            row, sc = measure_pair(
                stage, ix.features(c.slot), cpu,
                (lambda c=c: views_of(c.image_id)) if scene and chance else None,
                raw_homography)
            pairs.append([c.image_id, int(c.image_id >= SYNTH_ID0), int(chance),
                          int(v.inliers), int(v.ok), *row])
            if sc:
                scenes.append(sc)
        return out

    got = R.search_in_stages(q, search)
    ok = sorted(i for i, v in got.items() if v.ok)
    return {"matched": ok, "false": [x for x in ok if x not in allowed],
            "verified": len(pairs), "cpu_product": t_prod, "pairs": pairs, "scene": scenes,
            "cpu_models": cpu}


def cmd_scale(a: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from hashwatch.robust.keypoint_index import KeypointIndex
    from hashwatch.scalestudy import QueryCache

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from keypoint_cost import _scale_views

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
    # the known images' stored views (the scene check of a known nominee): computed as
    # `lists add` stores them
    known, _, _ = __import__("hashwatch.scaleset", fromlist=["study_split"]).study_split(
        E.corpus_files(E.resolve_corpus(a.corpus)), a.known, a.seed)
    known_views = [R.known_signals(E.load_pixels(p)) for p in known]
    scale_views = _scale_views(a.set, a.real)

    def views_of(image_id: int) -> list:
        return known_views[image_id] if image_id < len(known_views) else scale_views(image_id)

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
                row = _scale_query(ix, q.local, allowed, views_of, scene, a.raw_homography)
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
    nominees capped at 3 stages of KEYPOINT_CANDIDATES; a falling law is held flat at the
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
    cap = 3 * KEYPOINT_CANDIDATES
    print(f"\n### Extrapolated to {target:,} known images (sizes {sizes})\n")
    print(f"- nominees verified per unmatched query: {[round(noms[n], 2) for n in sizes]} -> "
          f"{nom_t:.2f} (power law exponent {nom_b:.3f}); at most {cap} (3 stages x "
          f"{KEYPOINT_CANDIDATES}), the figure used below")
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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("eval", "scale", "report", "-h", "--help"):
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
    sc.add_argument("--raw-homography", action="store_true",
                    help="also the unscreened RANSAC homography per pair (~2 ms each)")
    sc.add_argument("--known", type=int, default=200)
    sc.add_argument("--seed", type=int, default=0)
    sc.add_argument("--corpus", type=Path, default=None)
    sc.set_defaults(fn=cmd_scale)
    rp = sub.add_parser("report", help="tables and per-query rates of scale runs")
    rp.add_argument("outs", nargs="+", type=Path)
    rp.add_argument("--needs", default="15,16,17,18", help="inlier minimums to evaluate")
    rp.add_argument("--target", type=int, default=20_000_000, help="list size to extrapolate to")
    rp.add_argument("--known", type=int, default=200)
    rp.add_argument("--seed", type=int, default=0)
    rp.add_argument("--corpus", type=Path, default=None)
    rp.set_defaults(fn=cmd_report)
    a = ap.parse_args(argv)
    if a.cmd == "eval":
        cv2.setNumThreads(1)
    return a.fn(a)


if __name__ == "__main__":
    raise SystemExit(main())
