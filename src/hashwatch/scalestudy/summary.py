"""The scale study's write-up: recall, nomination, false matches, times and sizes of one
list size (:func:`summarise_size`), the chance alignments and their tail rates, the fitted
growth laws (:func:`fit_power`, :func:`fit_affine`), the must-have edits."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hashwatch import robust as R
from hashwatch.scalestudy.measure import pct
from hashwatch.scalestudy.results import SizeResult

MUST_HAVE = ("crop0.05", "crop5o", "crop10o", "crop20o", "crop25o", "crop10c", "crop15c",
             "crop20c", "trim10side", "trim20side", "pad0.2", "border-black5",
             "border-white10", "border-colour25", "border-frame", "letterbox16:9",
             "letterbox9:16", "mirror", "flip", "rot90", "rot180", "rot270", "rotate4",
             "rotate-2", "rotate5", "rotate-5x", "screenshot-light", "screenshot-dark",
             "collage2-gutter", "side-by-side")


def fit_power(n: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """(a, b) of y = a * n^b, least squares in log-log (points with y <= 0 left out)."""
    x = np.log(np.asarray(n, float))
    v = np.asarray(y, float)
    ok = v > 0
    if ok.sum() < 2:
        return math.nan, math.nan
    b, loga = np.polyfit(x[ok], np.log(v[ok]), 1)
    return float(math.exp(loga)), float(b)


def fit_affine(n: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """(a, c) of y = a + c * n, least squares."""
    if len(n) < 2:
        return math.nan, math.nan
    c, a = np.polyfit(np.asarray(n, float), np.asarray(y, float), 1)
    return float(a), float(c)


def _is_copy(ch: np.ndarray) -> np.ndarray:
    """Rows of (inliers, sane, aligned PDQ, re-detected share) that the matcher accepted."""
    return (ch[:, 0] >= R.LOCAL_MIN_INLIERS) & (ch[:, 1] > 0) & (
        (ch[:, 2] <= R.SCENE_PDQ_MAX) | (ch[:, 3] >= R.SCENE_REDETECT_MIN))


def chance_alignments(res: SizeResult) -> np.ndarray:
    """(n, 4) verified nominees that are not the query's picture: (inliers, geometry sane,
    aligned PDQ (256: none), re-detected share). The ones the matcher accepted are left out:
    each is a match, counted in the false-match column, and every one this study met was a
    distractor whose photograph is also a source (a true copy, see
    :func:`hashwatch.scaleset.duplicate_distractors`); kept, they would make the tail fit a
    fit of true copies."""
    ch = np.array(res.chance, float).reshape(-1, 4)
    return ch[~_is_copy(ch)] if len(ch) else ch


def scene_alignments(res: SizeResult) -> np.ndarray:
    """The chance alignments the scene check ran on for every nominee (the distractors run
    with ``scene_all``) whose nominee has PDQ views (a real image): what P(scene | chance
    alignment) is measured on."""
    ch = np.array(res.chance, float).reshape(-1, 4)
    if not len(ch):
        return ch
    ran = (ch[:, 2] < 256) & ~_is_copy(ch)
    if res.chance_kind:
        ran &= np.array([k == "distractor-scene" for k in res.chance_kind])
    return ch[ran]


@dataclass
class SizeSummary:
    n_known: int
    n_real: int  # real generated scale images among them (the rest recombined)
    mean_single: float
    mean_single_hash: float
    mean_single_ref: float  # pairwise reference, the index's verification keypoints
    mean_single_full: float  # pairwise reference, every stored keypoint (the exact store)
    mean_combined: float
    min_must: tuple[str, float]
    nominated: float  # of keypoint-tier queries the pairwise reference verifies: share nominated
    false: dict[str, int]
    queries: dict[str, int]
    kp_queries: dict[str, int]
    t: dict[str, float]
    sizes: dict[str, float]
    build: dict[str, float]
    chance_rate: tuple[float, float, float]  # P(geometry >= min inliers), P(scene), per query
    candidates: dict[str, float]  # per keypoint-tier query: nominees verified, stages
    per_edit: dict[str, tuple[float, float, float]]  # edit -> (found, pairwise 128, exact)


def summarise_size(res: SizeResult, single: Sequence[str], combined: Sequence[str],
                   top: int = 8) -> SizeSummary:
    """Recall, nomination, false matches, times and sizes of one size's result.

    Per-query false-match rate of the keypoint tier (``chance_rate``): every nominee the
    search verified that is not the query's own picture (nor a collage partner) is a chance
    alignment; P(geometry) = P(inliers >= LOCAL_MIN_INLIERS with a sane transform) per
    verified nominee, from a geometric-tail fit of the inlier counts of the edited queries'
    chance alignments
    (:func:`hashwatch.evaluate.local_tail_rate`); P(scene) = P(scene check passes | a
    transform was found), measured by running the scene check on every distractor nominee
    with a transform (aligned PDQ: normal tail fit, re-detected share: exponential tail fit,
    summed); per query = (nominees verified per unmatched query) x P(geometry) x P(scene),
    the union bound over the nominees it verifies."""
    from hashwatch.evaluate import local_tail_rate, share_tail_rate, tail_rate

    def mean(d: dict[str, list[bool]], names: Sequence[str]) -> float:
        vals = [float(np.mean(d[e])) for e in names if e in d and d[e]]
        return float(np.mean(vals)) if vals else math.nan

    must = [(e, float(np.mean(res.found[e]))) for e in MUST_HAVE if e in res.found]
    ref_ok = nom_ok = 0
    for e, noms in res.nominated.items():
        for r, ok in zip(noms, res.verify_ref[e], strict=True):
            if r == -2 or not ok:
                continue
            ref_ok += 1
            nom_ok += r >= 0
    false: dict[str, int] = {}
    dup = set(res.dup_distractors)
    for f in res.false_matches:
        k = f"{f['tier']}/{'distractor' if f['query'] == 'distractor' else 'edited'}"
        if f.get("index", -1) in dup:  # its photograph is also a source: a true copy
            k += " (photograph also a source)"
        false[k] = false.get(k, 0) + 1
    ed = [i for i, k in enumerate(res.t_kind) if k == "edited"]
    di = [i for i, k in enumerate(res.t_kind) if k == "distractor"]
    tot = [res.t_search[i] + res.t_verify[i] for i in ed]
    t = {"search_p50_ms": 1000 * pct([res.t_search[i] for i in ed], 50),
         "search_p99_ms": 1000 * pct([res.t_search[i] for i in ed], 99),
         "verify_p50_ms": 1000 * pct([res.t_verify[i] for i in ed], 50),
         "verify_p99_ms": 1000 * pct([res.t_verify[i] for i in ed], 99),
         "keypoint_p50_ms": 1000 * pct(tot, 50), "keypoint_p99_ms": 1000 * pct(tot, 99),
         "search_all_p50_ms": 1000 * pct(res.t_search, 50),
         "search_all_p99_ms": 1000 * pct(res.t_search, 99),
         "extract_p50_ms": 1000 * pct(res.t_extract, 50),
         "extract_p99_ms": 1000 * pct(res.t_extract, 99),
         "hash_p50_ms": 1000 * pct(res.t_hash, 50), "hash_p99_ms": 1000 * pct(res.t_hash, 99),
         "scanned_p50": pct(res.scanned, 50) if res.scanned else math.nan}
    if res.t_cpu:
        t["cpu_p50_ms"] = 1000 * pct([res.t_cpu[i] for i in ed], 50)
        t["cpu_p99_ms"] = 1000 * pct([res.t_cpu[i] for i in ed], 99)
        t["cpu_distractor_p50_ms"] = 1000 * pct([res.t_cpu[i] for i in di], 50)
        t["cpu_distractor_p99_ms"] = 1000 * pct([res.t_cpu[i] for i in di], 99)
        t["search_distractor_p50_ms"] = 1000 * pct([res.t_search[i] for i in di], 50)
        t["search_distractor_p99_ms"] = 1000 * pct([res.t_search[i] for i in di], 99)
    # chance alignments: P(inliers >= min) per verified candidate (geometric tail), P(scene)
    ch = chance_alignments(res)
    p_geo = p_scene = math.nan
    if len(ch):
        # P(geometry) from the edited queries' wrong nominees: the distractors' include the
        # near-copies of the distractors whose photograph is also a source (16 of 2,226; a
        # run before their index was recorded cannot leave them out), which are not chance
        ed = ch
        if res.chance_kind:
            keep = ~_is_copy(np.array(res.chance, float).reshape(-1, 4))
            kinds = np.array(res.chance_kind)[keep]
            ed = ch[kinds == "edited"]
        inl = np.where(ed[:, 1] > 0, ed[:, 0], np.minimum(ed[:, 0], R.LOCAL_MIN_INLIERS - 1))
        p_geo = local_tail_rate(inl, len(inl), R.LOCAL_MIN_INLIERS)[0]
        sc = scene_alignments(res)
        if len(sc):
            p_pdq = tail_rate(np.minimum(sc[:, 2], 255).astype(np.int16), R.SCENE_PDQ_MAX)[0] \
                if len(sc) >= 1000 else math.nan
            p_rd = share_tail_rate(sc[:, 3], R.SCENE_REDETECT_MIN)
            p_scene = min(1.0, float(np.nansum([p_pdq, p_rd])))
    per_nominee = [res.candidates_checked[i] for i in di] or res.candidates_checked
    noms = float(np.mean(per_nominee)) if per_nominee else float(top)
    per_query = noms * p_geo * (p_scene if not math.isnan(p_scene) else 1.0)
    cands = {"verified_p50": pct(res.candidates_checked, 50),
             "verified_mean": float(np.mean(res.candidates_checked)) if res.candidates_checked
             else math.nan, "verified_distractor_mean": noms,
             "stages_mean": float(np.mean(res.stages)) if res.stages else math.nan,
             "filled_searches": float(sum(res.fills)),
             "chance": float(len(ch)), "copies": float(len(res.chance) - len(ch)),
             "chance_synthetic": float(sum(res.chance_synthetic)),
             "max_inliers": float(ch[:, 0].max()) if len(ch) else math.nan}
    full = res.verify_full or res.verify_ref
    per_edit = {e: (float(np.mean(res.found[e])), float(np.mean(res.verify_ref[e])),
                    float(np.mean(full.get(e, res.verify_ref[e])))) for e in res.found}
    return SizeSummary(
        res.n_scale + res.n_known, res.n_real if res.n_real >= 0 else res.n_scale,
        mean(res.found, single), mean(res.found_hash, single),
        mean(res.verify_ref, single), mean(full, single),
        mean(res.found, combined), min(must, key=lambda x: x[1]) if must else ("", math.nan),
        nom_ok / ref_ok if ref_ok else math.nan, false, res.n_queries, res.n_keypoint_queries,
        t, res.sizes, res.build, (p_geo, p_scene, per_query), cands, per_edit)
