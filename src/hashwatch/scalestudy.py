"""The scale study: the robust matcher with the evaluation's known images placed among 10^5 to
10^6 generated known images (:mod:`hashwatch.scaleset`), as ``benchmarks/scale_study.py``
runs it.

Queries are exactly those of ``hashwatch eval`` (:func:`hashwatch.evaluate.make_query`: every
known image under every edit, the collage partners and fillers drawn the same way) plus every
distractor of :func:`hashwatch.scaleset.study_split` (photographs disjoint from the known images
and from the scale set's sources). They are computed once (:func:`build_queries`, resumable):
the hash-tier views of each query and, when its own known image is not found by the hash tier,
its keypoints and grey working picture for the keypoint tier.

At each list size N (:func:`run_size`) the known set is the evaluation's known images plus the
first N scale images; the matcher's two tiers are built as the product builds them (the PDQ
views in :class:`hashwatch.index.HammingIndex`, the keypoint sets in
:class:`hashwatch.robust.keypoint_index.KeypointIndex`) and every query runs the cascade (hash
tier; keypoint tier only when no hash route matched; each nominee verified pairwise with the
geometric and scene checks, :func:`hashwatch.robust.verify.verify`).

What counts: a query is *found* when its own known image matches. Any other match is a false
match, except a collage partner the query shows (neither true nor false, as in the evaluation).
Scale images are made only from source photographs, so no scale image shows a query's picture:
every match of a query on a scale image is false, and every match of a distractor is false.
"""

from __future__ import annotations

import json
import math
import os
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hashwatch import robust as R
from hashwatch.robust.keypoint_index import KeypointIndex, KeypointParams, last_search_stats
from hashwatch.robust.local import LocalFeatures

SCALE_ID0 = 10_000_000  # scale image i has id SCALE_ID0 + i; the known images 0..n_known-1


# --- the queries, computed once ----------------------------------------------------------------


def _pack_local(f: LocalFeatures) -> dict[str, np.ndarray]:
    view = f.extra.get("view")
    return {"xy": f.xy, "desc": f.desc, "angle": f.angle, "octave": f.octave,
            "size": np.array(f.size, np.int32),
            "view": view if isinstance(view, np.ndarray) else np.zeros((0, 0), np.uint8)}


def _unpack_local(z: dict[str, np.ndarray]) -> LocalFeatures:
    return LocalFeatures(z["xy"], z["desc"], (int(z["size"][0]), int(z["size"][1])),
                         {"view": z["view"]}, z["angle"], z["octave"])


@dataclass
class Query:
    """One query: which edit of which known image (or distractor ``-1``), its hash-tier views,
    its collage partners, whether the hash tier found its own known image among the known
    images, and (when not) its keypoints; CPU seconds of its feature extraction."""

    edit: str
    known: int
    partners: list[int]
    views: list  # QueryHash
    hash_own: bool
    local: LocalFeatures | None
    t_views: float
    t_local: float


class QueryCache:
    """Queries saved one file per edit (``<edit>.npz``) and one for the distractors."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, name: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "+-._" else "_" for c in name)
        return self.folder / f"{safe}.npz"

    def save(self, name: str, qs: Sequence[Query]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        meta = []
        for i, q in enumerate(qs):
            meta.append({"edit": q.edit, "known": q.known, "partners": q.partners,
                         "variants": [v.variant for v in q.views],
                         "quality": [v.quality for v in q.views], "hash_own": q.hash_own,
                         "t_views": q.t_views, "t_local": q.t_local,
                         "local": q.local is not None})
            arrays[f"c{i}"] = np.frombuffer(b"".join(v.code for v in q.views),
                                            np.uint8).reshape(-1, 32)
            if q.local is not None:
                for k, v in _pack_local(q.local).items():
                    arrays[f"l{i}_{k}"] = np.asarray(v)
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        tmp = self.path(name).with_suffix(".tmp.npz")
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        os.replace(tmp, self.path(name))

    def has(self, name: str) -> bool:
        return self.path(name).exists()

    def load(self, name: str) -> list[Query]:
        with np.load(self.path(name)) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            out = []
            for i, m in enumerate(meta):
                codes = z[f"c{i}"]
                views = [R.QueryHash(v, codes[j].tobytes(), int(qq))
                         for j, (v, qq) in enumerate(zip(m["variants"], m["quality"],
                                                         strict=True))]
                loc = None
                if m["local"]:
                    loc = _unpack_local({k: z[f"l{i}_{k}"] for k in
                                         ("xy", "desc", "angle", "octave", "size", "view")})
                out.append(Query(m["edit"], m["known"], m["partners"], views, m["hash_own"],
                                 loc, m["t_views"], m["t_local"]))
        return out


def describe_query(img: np.ndarray, own: Sequence | None) -> tuple[list, bool, LocalFeatures | None,
                                                                   float, float]:
    """(views, hash tier finds ``own``, keypoints, CPU s views, CPU s keypoints) of one query
    picture; ``own``: its known image's stored views (None for a distractor). Keypoints are
    computed unless the full and trimmed views alone already find ``own`` (so the cache
    serves a hash tier holding every view as well as one holding only those two)."""
    c0 = time.process_time()
    boxes = R.query_regions(img)
    views = R.query_signals(img, boxes=boxes)
    c1 = time.process_time()
    hit = own is not None and R.hash_match(views, own) is not None
    core = [h for h in own or () if h.variant in ("full", "trim")]
    hit_core = bool(core) and R.hash_match(views, core) is not None
    loc = None if hit_core else R.query_local(img, boxes)
    return views, hit, loc, c1 - c0, time.process_time() - c1


@dataclass
class StudySet:
    """The corpus side of the study: known images (pixels and stored views), fillers,
    distractor paths, edits (in the evaluation's order)."""

    known: list[Path]
    distractors: list[Path]
    kpix: list[np.ndarray]
    fpix: list[np.ndarray]
    known_views: list[list]
    known_local: list[LocalFeatures]
    edits: list[str]
    seed: int


def load_study_set(corpus: Path, n_known: int = 200, seed: int = 0,
                   edits: Sequence[str] | None = None) -> StudySet:
    from hashwatch.edits import edit_names
    from hashwatch.evaluate import corpus_files, load_pixels, split_fillers, split_known
    from hashwatch.scaleset import study_split

    files = corpus_files(corpus)
    known, distractors, _sources = study_split(files, n_known, seed)
    _, rest = split_known(files, n_known, seed)
    fillers, _ = split_fillers(rest, seed)
    kpix = [load_pixels(p) for p in known]
    fpix = [load_pixels(p) for p in fillers]
    return StudySet(known, distractors, kpix, fpix, [R.known_signals(p) for p in kpix],
                    [R.known_local(p) for p in kpix], list(edits or edit_names()), seed)


def build_queries(ss: StudySet, cache: QueryCache,
                  say: Callable[[str], None] = lambda s: None) -> None:
    """Compute and save every query not yet in ``cache`` (resumable per edit)."""
    from hashwatch.edits import edit_names
    from hashwatch.evaluate import load_pixels, make_query

    order = {e: i for i, e in enumerate(edit_names())}
    for en in ss.edits:
        if cache.has(en):
            continue
        qs = []
        for ki in range(len(ss.kpix)):
            img, pidx = make_query(en, order[en], ki, ss.kpix, ss.fpix, ss.seed)
            views, hit, loc, tv, tl = describe_query(img, ss.known_views[ki])
            qs.append(Query(en, ki, pidx, views, hit, loc, tv, tl))
        cache.save(en, qs)
        say(f"queries: {en} ({sum(not q.hash_own for q in qs)} for the keypoint tier)")
    if not cache.has("distractors"):
        qs = []
        for p in ss.distractors:
            views, _, loc, tv, tl = describe_query(load_pixels(p), None)
            qs.append(Query("distractor", -1, [], views, False, loc, tv, tl))
        cache.save("distractors", qs)
        say(f"queries: {len(qs)} distractors")


# --- one list size -------------------------------------------------------------------------------


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class SizeResult:
    """Everything measured at one list size (see :func:`run_size`)."""

    n_scale: int
    n_known: int
    build: dict[str, float] = field(default_factory=dict)
    sizes: dict[str, float] = field(default_factory=dict)
    found: dict[str, list[bool]] = field(default_factory=dict)  # edit -> per known image
    found_hash: dict[str, list[bool]] = field(default_factory=dict)
    verify_ref: dict[str, list[bool]] = field(default_factory=dict)  # pairwise, own image
    nominated: dict[str, list[int]] = field(default_factory=dict)  # rank of own (-1: not)
    false_matches: list[dict] = field(default_factory=list)
    n_queries: dict[str, int] = field(default_factory=dict)  # by kind: edited, distractor
    n_keypoint_queries: dict[str, int] = field(default_factory=dict)
    t_kind: list[str] = field(default_factory=list)  # "edited" / "distractor", per entry below
    t_search: list[float] = field(default_factory=list)  # keypoint tier: nomination, s
    t_verify: list[float] = field(default_factory=list)  # keypoint tier: verification, s
    t_hash: list[float] = field(default_factory=list)  # hash tier search, s
    t_extract: list[float] = field(default_factory=list)  # query keypoints, CPU s
    scanned: list[int] = field(default_factory=list)
    passed: list[int] = field(default_factory=list)
    candidates_checked: list[int] = field(default_factory=list)
    scene_runs: list[int] = field(default_factory=list)
    # every verified candidate that is not the query's own picture (nor a collage partner):
    # (inliers, geometry sane, aligned PDQ (256: scene check not run), re-detected share)
    chance: list[tuple[int, bool, int, float]] = field(default_factory=list)


def _hash_rows(views_per_image: Sequence[tuple[int, Sequence]], core: bool = False
               ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    ids, codes, variants = [], [], []
    for image_id, views in views_per_image:
        for v in views:
            if v.variant != "full" and v.quality < R.MIN_QUALITY:
                continue
            if core and v.variant not in ("full", "trim"):
                continue
            ids.append(image_id)
            codes.append(v.code)
            variants.append(v.variant)
    return (np.array(ids, np.int64),
            np.frombuffer(b"".join(codes), np.uint8).reshape(-1, 32), variants)


def run_size(ss: StudySet, cache: QueryCache, set_dir: Path, n_scale: int, *,
             params: KeypointParams | None = None, top: int = 8, hash_views: str = "all",
             say: Callable[[str], None] = lambda s: None) -> SizeResult:
    """The cascade for every cached query against the known images + the first ``n_scale``
    scale images. See the module docstring for what is counted. ``hash_views="core"``: the
    hash tier holds only the full and trimmed views (what a custodian with the keypoint tier
    keeps in memory; the other views are exported for partners)."""
    from hashwatch.index import HammingIndex
    from hashwatch.robust.vocab import default_vocabulary
    from hashwatch.scaleset import iter_shards

    res = SizeResult(n_scale, len(ss.known))
    nk = len(ss.known)
    # -- build both tiers ----------------------------------------------------------------
    t0, c0 = time.perf_counter(), time.process_time()
    kp = KeypointIndex(default_vocabulary(), params)
    kp.add_many((i, f) for i, f in enumerate(ss.known_local))
    core = hash_views == "core"
    res.build["hash_views_core"] = float(core)
    ids, codes, variants = _hash_rows(list(enumerate(ss.known_views)), core)
    row_ids, row_codes, row_var = [ids], [codes], list(variants)
    scale_views: dict[int, list] = {}  # only what the scene check of a nominee needs
    shard_pdq: list[tuple[int, np.ndarray, np.ndarray]] = []
    t_kp = 0.0
    n_done = 0
    for sh in iter_shards(set_dir, n_scale):
        base = SCALE_ID0 + int(sh.index[0])
        tk = time.perf_counter()
        kp.add_many((base + j, sh.local(j)) for j in range(len(sh)))
        t_kp += time.perf_counter() - tk
        for j in range(len(sh)):
            hs = sh.hashes(j)
            i2, c2, v2 = _hash_rows([(base + j, hs)], core)
            row_ids.append(i2)
            row_codes.append(c2)
            row_var += v2
        shard_pdq.append((base, sh.pdq, sh.pdq_quality))
        n_done += len(sh)
        say(f"  built {n_done:,}/{n_scale:,}")
    res.build["keypoint_add_s"] = t_kp
    th = time.perf_counter()
    hix = HammingIndex()
    all_ids = np.concatenate(row_ids)
    rows = np.arange(len(all_ids), dtype=np.int64)
    hix.add(rows, np.concatenate(row_codes), copy=False)
    res.build["hash_build_s"] = time.perf_counter() - th
    res.build["wall_s"] = time.perf_counter() - t0
    res.build["cpu_s"] = time.process_time() - c0
    row_class = np.array([R.known_class(v) for v in row_var])
    st = kp.stats()
    res.sizes = {**{k: float(v) for k, v in st.items()},
                 "hash_rows": float(len(all_ids)), "hash_bytes": float(hix.stats()["bytes"]),
                 "rss_mib": _rss_mib()}
    say(f"  index: {st['postings']:,} postings, {len(all_ids):,} hash rows")

    def views_of(image_id: int) -> list:
        if image_id < nk:
            return ss.known_views[image_id]
        if image_id not in scale_views:
            i = image_id - SCALE_ID0
            for base, pdq, qual in shard_pdq:
                if base - SCALE_ID0 <= i < base - SCALE_ID0 + len(pdq):
                    from hashwatch.scaleset import VARIANTS

                    j = i - (base - SCALE_ID0)
                    scale_views[image_id] = [
                        R.KnownHash(v, pdq[j, k].tobytes(), int(qual[j, k]))
                        for k, v in enumerate(VARIANTS) if qual[j, k] >= 0]
        return scale_views.get(image_id, [])

    radius = max(R.THRESHOLDS.values())

    def hash_tier(views: Sequence) -> set[int]:
        t = time.perf_counter()
        qc = np.frombuffer(b"".join(v.code for v in views), np.uint8).reshape(-1, 32)
        found: set[int] = set()
        for v, hits in zip(views, hix.search_many(qc, radius), strict=True):
            qcls = R.query_class(v.variant)
            for row, dist in hits:
                kcls = str(row_class[row])
                limit = R.THRESHOLDS.get((qcls, kcls))
                if limit is None or dist > limit:
                    continue
                if (qcls, kcls) != ("full", "full") and v.quality < R.MIN_QUALITY:
                    continue
                found.add(int(all_ids[row]))
        res.t_hash.append(time.perf_counter() - t)
        return found

    def keypoint_tier(q: LocalFeatures, own: int | None, allowed: set[int],
                      scene_all: bool = False) -> tuple[set[int], int, bool | None]:
        t = time.perf_counter()
        cands = kp.search(q, top=top)
        t1 = time.perf_counter()
        res.t_search.append(t1 - t)
        st = last_search_stats()
        res.scanned.append(st.get("scanned", 0))
        res.passed.append(st.get("passed", 0))
        matched: set[int] = set()
        scenes = 0
        rank = -1
        for r, c in enumerate(cands):
            if c.image_id == own:
                rank = r
            v = R.verify(q, kp.features(c.slot), lambda c=c: views_of(c.image_id),
                         scene_all=scene_all)
            scenes += v.scene is not None
            if v.ok:
                matched.add(c.image_id)
            if c.image_id not in allowed:
                sc = v.scene
                res.chance.append((int(v.inliers), bool(v.sane), 256 if sc is None else
                                   int(sc.pdq), 0.0 if sc is None or sc.refound <
                                   R.SCENE_REFOUND_MIN else float(sc.redetect)))
        res.t_verify.append(time.perf_counter() - t1)
        res.t_kind.append("distractor" if scene_all else "edited")
        res.candidates_checked.append(len(cands))
        res.scene_runs.append(scenes)
        return matched, rank, None

    # -- edited queries --------------------------------------------------------------------
    for en in ss.edits:
        qs = cache.load(en)
        found, found_h, ref, nom = [], [], [], []
        for q in qs:
            allowed = {q.known, *q.partners}
            hits = hash_tier(q.views)
            kind = "edited"
            res.n_queries[kind] = res.n_queries.get(kind, 0) + 1
            if hits:
                ok = q.known in hits
                found_h.append(ok)
                found.append(ok)
                nom.append(-2)  # found by the hash tier
                ref.append(ok)
                bad = hits - allowed
                if bad:
                    res.false_matches.append({"query": en, "known": q.known, "tier": "hash",
                                              "images": sorted(bad)})
                continue
            found_h.append(False)
            res.n_keypoint_queries[kind] = res.n_keypoint_queries.get(kind, 0) + 1
            assert q.local is not None, "a hash-tier miss without keypoints in the cache"
            res.t_extract.append(q.t_local)
            matched, rank, _ = keypoint_tier(q.local, q.known, allowed)
            found.append(q.known in matched)
            nom.append(rank)
            # reference: pairwise verification of the true image, whatever the nomination
            vref = R.verify(q.local, kp.features(int(q.known)), ss.known_views[q.known])
            ref.append(vref.ok)
            bad = matched - allowed
            if bad:
                res.false_matches.append({"query": en, "known": q.known, "tier": "keypoint",
                                          "images": sorted(bad)})
        res.found[en], res.found_hash[en], res.verify_ref[en] = found, found_h, ref
        res.nominated[en] = nom
        say(f"  {en}: {100 * np.mean(found):.1f}% (hash {100 * np.mean(found_h):.1f}%)")
    # -- distractors -----------------------------------------------------------------------
    for q in cache.load("distractors"):
        res.n_queries["distractor"] = res.n_queries.get("distractor", 0) + 1
        hits = hash_tier(q.views)
        if hits:
            res.false_matches.append({"query": "distractor", "known": -1, "tier": "hash",
                                      "images": sorted(hits)})
            continue
        res.n_keypoint_queries["distractor"] = res.n_keypoint_queries.get("distractor", 0) + 1
        assert q.local is not None
        res.t_extract.append(q.t_local)
        # scene check on every chance alignment with a transform: measures P(scene | chance)
        matched, _, _ = keypoint_tier(q.local, None, set(), scene_all=True)
        if matched:
            res.false_matches.append({"query": "distractor", "known": -1, "tier": "keypoint",
                                      "images": sorted(matched)})
    res.sizes["rss_mib"] = _rss_mib()
    return res


def save_result(res: SizeResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(res)))


def load_result(path: Path) -> SizeResult:
    return SizeResult(**json.loads(path.read_text()))


def pct(values: Sequence[float], p: float) -> float:
    return float(np.percentile(values, p)) if len(values) else math.nan


# --- the write-up ---------------------------------------------------------------------------

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


@dataclass
class SizeSummary:
    n_known: int
    mean_single: float
    mean_single_hash: float
    mean_single_ref: float
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


def summarise_size(res: SizeResult, single: Sequence[str], combined: Sequence[str],
                   top: int = 8) -> SizeSummary:
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
    for f in res.false_matches:
        k = f"{f['tier']}/{'distractor' if f['query'] == 'distractor' else 'edited'}"
        false[k] = false.get(k, 0) + 1
    ed = [i for i, k in enumerate(res.t_kind) if k == "edited"]
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
    # chance alignments: P(inliers >= min) per verified candidate (geometric tail), P(scene)
    ch = np.array(res.chance, float).reshape(-1, 4)
    p_geo = p_scene = math.nan
    if len(ch):
        inl = np.where(ch[:, 1] > 0, ch[:, 0], np.minimum(ch[:, 0], R.LOCAL_MIN_INLIERS - 1))
        p_geo = local_tail_rate(inl, len(inl), R.LOCAL_MIN_INLIERS)[0]
        sc = ch[ch[:, 2] < 256]
        if len(sc):
            p_pdq = tail_rate(np.minimum(sc[:, 2], 255).astype(np.int16), R.SCENE_PDQ_MAX)[0] \
                if len(sc) >= 1000 else math.nan
            p_rd = share_tail_rate(sc[:, 3], R.SCENE_REDETECT_MIN)
            p_scene = min(1.0, float(np.nansum([p_pdq, p_rd])))
    per_query = top * p_geo * (p_scene if not math.isnan(p_scene) else 1.0)
    return SizeSummary(
        res.n_scale + res.n_known, mean(res.found, single), mean(res.found_hash, single),
        mean(res.verify_ref, single),
        mean(res.found, combined), min(must, key=lambda x: x[1]) if must else ("", math.nan),
        nom_ok / ref_ok if ref_ok else math.nan, false, res.n_queries, res.n_keypoint_queries,
        t, res.sizes, res.build, (p_geo, p_scene, per_query))


# --- index-only nomination at 2*10^7 ---------------------------------------------------------

SYNTH_ID0 = 1_000_000_000  # synthetic keypoint set j has image id SYNTH_ID0 + j


def add_synthetic(kp: KeypointIndex, n: int, *, seed: int = 0, chunk: int = 1_000_000,
                  say: Callable[[str], None] = lambda s: None) -> None:
    """Add ``n`` synthetic keypoint sets to ``kp`` (study only): each holds ``n_index``
    postings drawn at random from the postings already in the index, i.e. real ORB
    descriptors of real scale images (their words and signatures) recombined into sets that
    belong to no picture. They weigh on the inverted file exactly as real sets do (list
    lengths, document frequencies, chance votes) but have no verification record: a nominee
    among them is counted as nominated, never verified."""
    from hashwatch.robust.keypoint_index import _Segment

    segs = kp._segments_now()
    pool_w = np.concatenate([np.repeat(np.arange(len(s.offsets) - 1, dtype=np.int32),
                                       np.diff(s.offsets).astype(np.int64)) for s in segs])
    pool_s = np.concatenate([np.asarray(s.sigs) for s in segs])
    rng = np.random.default_rng([seed, 0x5E7])
    per = kp.params.n_index
    kp._seal()
    done = 0
    while done < n:
        m = min(chunk, n - done)
        lo = kp._n_slots
        pick = rng.integers(0, len(pool_w), size=m * per)
        words = pool_w[pick]
        seg = _Segment.build(kp.vocab.n_words, words, pool_s[pick],
                             np.repeat(np.arange(lo, lo + m, dtype=np.uint32), per), lo, lo + m)
        del pick
        kp._segments.append(seg)
        kp._df += np.bincount(words, minlength=kp.vocab.n_words)
        kp._slots.append(SYNTH_ID0 + np.arange(done, done + m, dtype=np.int64))
        kp._dead.append(np.zeros(m, bool))
        kp._n_slots += m
        kp._n_live += m
        kp._pending_lo = kp._n_slots
        kp._n_images = None
        done += m
        say(f"  synthetic {done:,}/{n:,}")


def nominate(ss: StudySet, cache: QueryCache, set_dir: Path, n_real: int, n_total: int, *,
             params: KeypointParams | None = None, top: int = 8,
             say: Callable[[str], None] = lambda s: None) -> dict:
    """Nomination with the known images among ``n_real`` real scale images and synthetic
    sets up to ``n_total`` (:func:`add_synthetic`): for each keypoint-tier query whose own
    picture the pairwise reference verifies, whether the index nominates it among ``top``;
    search time and postings scanned per query; index memory."""
    from hashwatch.robust.vocab import default_vocabulary
    from hashwatch.scaleset import iter_shards

    t0, c0 = time.perf_counter(), time.process_time()
    kp = KeypointIndex(default_vocabulary(), params)
    for sh in iter_shards(set_dir, n_real):
        base = SCALE_ID0 + int(sh.index[0])
        kp.add_many((base + j, sh.local(j)) for j in range(len(sh)))
        say(f"  real {int(sh.index[-1]) + 1:,}/{n_real:,}")
    # synthetic sets are drawn from the scale images' postings only, then the known images
    add_synthetic(kp, n_total - len(ss.known) - n_real, say=say)
    kp.add_many((i, f) for i, f in enumerate(ss.known_local))
    build = {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}
    st = kp.stats()
    out: dict = {"n_real": n_real, "n_total": kp.n_slots, "build": build,
                 "sizes": {**st, "rss_mib": _rss_mib()}, "edits": {}, "t_search": [],
                 "scanned": [], "passed": [], "distractor_t_search": []}
    for en in ss.edits:
        ranks = []
        for q in cache.load(en):
            if q.hash_own or q.local is None:
                continue
            ref = R.verify(q.local, ss.known_local[q.known], ss.known_views[q.known])
            t = time.perf_counter()
            cands = kp.search(q.local, top=top)
            out["t_search"].append(time.perf_counter() - t)
            s = last_search_stats()
            out["scanned"].append(s.get("scanned", 0))
            out["passed"].append(s.get("passed", 0))
            r = next((i for i, c in enumerate(cands) if c.image_id == q.known), -1)
            ranks.append((r, bool(ref.ok)))
        out["edits"][en] = ranks
        say(f"  {en}: nominated {sum(r >= 0 for r, ok in ranks if ok)}/"
            f"{sum(ok for _, ok in ranks)} verifiable")
    for q in cache.load("distractors"):
        if q.local is None:
            continue
        t = time.perf_counter()
        kp.search(q.local, top=top)
        out["distractor_t_search"].append(time.perf_counter() - t)
    out["sizes"]["rss_mib"] = _rss_mib()
    return out
