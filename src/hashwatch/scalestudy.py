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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hashwatch import robust as R
from hashwatch.robust.keypoint_index import KeypointIndex, KeypointParams, last_search_stats
from hashwatch.robust.local import LocalFeatures, mirrored_count, tile_count

SCALE_ID0 = 10_000_000  # scale image i has id SCALE_ID0 + i; the known images 0..n_known-1
SYNTH_ID0 = 1_000_000_000  # synthetic (recombined) keypoint set j has image id SYNTH_ID0 + j


# --- the queries, computed once ----------------------------------------------------------------


def _pack_local(f: LocalFeatures) -> dict[str, np.ndarray]:
    view = f.extra.get("view")
    # the pass counts travel with the features: the search runs the passes as stages
    passes = np.array([mirrored_count(f), tile_count(f)], np.int64)
    return {"xy": f.xy, "desc": f.desc, "angle": f.angle, "octave": f.octave,
            "size": np.array(f.size, np.int32), "passes": passes,
            "view": view if isinstance(view, np.ndarray) else np.zeros((0, 0), np.uint8)}


def _unpack_local(z: dict[str, np.ndarray]) -> LocalFeatures:
    extra: dict[str, object] = {"view": z["view"]}
    if "passes" in z:
        extra["mirrored"], extra["tiles"] = (int(v) for v in z["passes"])
    return LocalFeatures(z["xy"], z["desc"], (int(z["size"][0]), int(z["size"][1])),
                         extra, z["angle"], z["octave"])


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
                                         ("xy", "desc", "angle", "octave", "size", "view",
                                          "passes") if f"l{i}_{k}" in z})
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
    sources: list[Path] = field(default_factory=list)  # the scale set's source photographs


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
                    [R.known_local(p) for p in kpix], list(edits or edit_names()), seed,
                    list(_sources))


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
    n_real: int = -1  # of the n_scale: real generated images; the rest recombined
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
    chance_synthetic: list[bool] = field(default_factory=list)  # per chance entry
    chance_kind: list[str] = field(default_factory=list)  # per chance entry: query kind
    # distractors whose photograph is also a source (scaleset.duplicate_distractors)
    dup_distractors: list[int] = field(default_factory=list)
    t_cpu: list[float] = field(default_factory=list)  # keypoint tier, CPU s (thread), per query
    stages: list[int] = field(default_factory=list)  # search stages run, per query
    # searches per query whose vote within ht left free places that the looser radius filled
    # (KeypointIndex.search; expected ~never among 10^5+ known sets)
    fills: list[int] = field(default_factory=list)
    verify_full: dict[str, list[bool]] = field(default_factory=dict)  # pairwise, 200 stored


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


def recombine(a: LocalFeatures, b: LocalFeatures, rng: np.random.Generator) -> LocalFeatures:
    """A recombined known keypoint set (study only, for list sizes beyond the generated
    images): the left (or top) part of real set ``a`` beside the right (or bottom) part of real
    set ``b``, cut at 30-70% of each, as a two-picture collage of their keypoints would hold
    them. Descriptors, positions within each part and strength order are real; the pair is
    new. Keypoints are interleaved by their rank within their own set (strongest first)."""
    vertical = bool(rng.integers(2))
    ax, bx = (0, 1) if vertical else (1, 0)
    ca = rng.uniform(0.3, 0.7) * a.size[ax]
    cb = rng.uniform(0.3, 0.7) * b.size[ax]
    ka = np.flatnonzero(a.xy[:, ax] < ca)
    kb = np.flatnonzero(b.xy[:, ax] >= cb)
    xy_b = b.xy[kb].copy()
    xy_b[:, ax] += np.float32(ca - cb)
    w_ax = int(round(ca + b.size[ax] - cb))
    w_other = max(a.size[bx], b.size[bx])
    size = (w_ax, w_other) if vertical else (w_other, w_ax)
    rank = np.concatenate([np.arange(len(ka)) / max(1, len(ka)),
                           np.arange(len(kb)) / max(1, len(kb))])
    order = np.argsort(rank, kind="stable")

    def cat(x: np.ndarray | None, y: np.ndarray | None) -> np.ndarray | None:
        return None if x is None or y is None else np.concatenate([x[ka], y[kb]])[order]

    xy = np.concatenate([a.xy[ka], xy_b])[order].astype(np.float32)
    return LocalFeatures(xy, np.concatenate([a.desc[ka], b.desc[kb]])[order], size, {},
                         cat(a.angle, b.angle), cat(a.octave, b.octave))


def _proc_rss() -> dict[str, float]:
    """Current RSS (MiB), anonymous and file-backed, from /proc/self/status."""
    out: dict[str, float] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[k] = int(v.split()[0]) / 1024
    except OSError:
        pass
    return out


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file())


_PART_FN: Callable[[tuple[list[str], int, int, int | None]], SizeResult] | None = None


def _call_part(part: tuple[list[str], int, int, int | None]) -> SizeResult:
    assert _PART_FN is not None
    return _PART_FN(part)


def _merge(into: SizeResult, part: SizeResult) -> None:
    """Fold one query part's counts and measurements into ``into``."""
    for name in ("found", "found_hash", "verify_ref", "verify_full", "nominated"):
        getattr(into, name).update(getattr(part, name))
    for name in ("n_queries", "n_keypoint_queries"):
        d = getattr(into, name)
        for k, v in getattr(part, name).items():
            d[k] = d.get(k, 0) + v
    for name in ("false_matches", "t_kind", "t_search", "t_verify", "t_hash", "t_extract",
                 "scanned", "passed", "candidates_checked", "scene_runs", "chance",
                 "chance_synthetic", "chance_kind", "t_cpu", "stages", "fills"):
        getattr(into, name).extend(getattr(part, name))


def run_sizes(ss: StudySet, cache: QueryCache, set_dir: Path, sizes: Sequence[int], *,
              n_real: int | None = None, index_dir: Path | None = None,
              params: KeypointParams | None = None, top: int = 8, hash_views: str = "all",
              workers: int = 1, max_distractors: int | None = None,
              all_distractors_from: int | None = None, scene_every: int = 4,
              say: Callable[[str], None] = lambda s: None) -> Iterator[SizeResult]:
    """The cascade for every cached query against the known images + N scale images, for
    each N of ``sizes`` (ascending), one result per size as it is measured.

    The scale images are the first ``n_real`` generated ones (default: all of the smallest
    size), the rest recombined from them (:func:`recombine`; keypoint tier only: no hash-tier
    rows, no PDQ views for the scene check, which then has only its re-detection test). The
    keypoint index grows from one size to the next as the product's does (incremental adds,
    saved into ``index_dir``, default a folder beside ``set_dir``), and each size is searched
    as the product searches it: mapped from its folder (:meth:`KeypointIndex.load`), through
    :func:`hashwatch.robust.verify.search_in_stages` (plain, mirrored, small-picture pass),
    each nominee verified pairwise. The pairwise references (the query's own image alone,
    with its 128 kept keypoints and with all 200 stored) do not depend on N: computed at the
    first size and carried over. See the module docstring for what is counted.

    ``hash_views="core"``: the hash tier holds only the full and trimmed views.
    ``workers``: query processes forked after each build (each query on one core; times are
    the CPU time of the thread that ran it). Distractors: the first ``max_distractors``, all
    of them from size ``all_distractors_from`` on; every ``scene_every``-th one runs the scene
    check on every nominee a transform was found for (what P(scene | chance alignment) is
    measured on; its times are kept apart), the others run as the product does."""
    import shutil

    from hashwatch.index import HammingIndex
    from hashwatch.robust.vocab import default_vocabulary
    from hashwatch.scaleset import VARIANTS, duplicate_distractors, iter_shards

    sizes = sorted(int(n) for n in sizes)
    n_real = sizes[0] if n_real is None else min(n_real, sizes[0])
    dups = duplicate_distractors(ss.distractors, ss.sources) if ss.sources else []
    nk = len(ss.known)
    index_dir = Path(index_dir or Path(set_dir).parent / "kpindex-study")
    if index_dir.exists():
        shutil.rmtree(index_dir)
    core = hash_views == "core"
    # -- the real images: both tiers -----------------------------------------------------
    t0, c0 = time.perf_counter(), time.process_time()
    kp = KeypointIndex(default_vocabulary(), params)
    kp.add_many((i, f) for i, f in enumerate(ss.known_local))
    ids, codes, variants = _hash_rows(list(enumerate(ss.known_views)), core)
    row_ids, row_codes, row_var = [ids], [codes], list(variants)
    shard_pdq: list[tuple[int, np.ndarray, np.ndarray]] = []
    shards = []  # the real shards, kept for recombination
    t_kp = c_kp = 0.0
    n_done = 0
    saved_at = 0

    def add(items: Iterable[tuple[int, LocalFeatures]]) -> None:
        nonlocal t_kp, c_kp, saved_at
        tk, ck = time.perf_counter(), time.process_time()
        kp.add_many(items)
        if kp.n_slots - saved_at >= 200_000:  # records go to disk as they would in the product
            kp.save(index_dir, replace=saved_at == 0)
            saved_at = kp.n_slots
        t_kp += time.perf_counter() - tk
        c_kp += time.process_time() - ck

    for sh in iter_shards(set_dir, n_real):
        base = SCALE_ID0 + int(sh.index[0])
        add((base + j, sh.local(j)) for j in range(len(sh)))
        for j in range(len(sh)):
            i2, c2, v2 = _hash_rows([(base + j, sh.hashes(j))], core)
            row_ids.append(i2)
            row_codes.append(c2)
            row_var += v2
        shard_pdq.append((base, sh.pdq, sh.pdq_quality))
        shards.append(sh)
        n_done += len(sh)
        say(f"  built {n_done:,} (real)")
    if n_done < n_real:
        raise ValueError(f"{set_dir} holds {n_done:,} scale images, not {n_real:,}")
    th = time.perf_counter()
    hix = HammingIndex()
    all_ids = np.concatenate(row_ids)
    hix.add(np.arange(len(all_ids), dtype=np.int64), np.concatenate(row_codes), copy=False)
    row_class = np.array([R.known_class(v) for v in row_var])
    hash_build_s = time.perf_counter() - th
    starts = np.r_[0, np.cumsum([len(sh) for sh in shards])]

    def real(i: int) -> LocalFeatures:
        s = int(np.searchsorted(starts, i, side="right") - 1)
        return shards[s].local(int(i - starts[s]))

    rng = np.random.default_rng([ss.seed, 0x5CA1E])
    scale_views: dict[int, list] = {}  # only what the scene check of a nominee needs

    def views_of(image_id: int) -> list:
        if image_id < nk:
            return ss.known_views[image_id]
        if image_id not in scale_views:
            i = image_id - SCALE_ID0
            for base, pdq, qual in shard_pdq:
                if base - SCALE_ID0 <= i < base - SCALE_ID0 + len(pdq):
                    j = i - (base - SCALE_ID0)
                    scale_views[image_id] = [
                        R.KnownHash(v, pdq[j, k].tobytes(), int(qual[j, k]))
                        for k, v in enumerate(VARIANTS) if qual[j, k] >= 0]
        return scale_views.get(image_id, [])

    radius = max(R.THRESHOLDS.values())
    cur: list[SizeResult] = []
    search_ix: list[KeypointIndex] = []
    refs: dict[str, tuple[list[bool], list[bool]]] = {}

    def hash_tier(views: Sequence) -> set[int]:
        t = time.thread_time()
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
        cur[0].t_hash.append(time.thread_time() - t)
        return found

    def keypoint_tier(q: LocalFeatures, own: int | None, allowed: set[int],
                      kind: str) -> tuple[set[int], int]:
        """The product's keypoint search (stages, nomination, pairwise verification of each
        nominee); records CPU times, counts and every chance alignment."""
        r = cur[0]
        kpi = search_ix[0]
        scene_all = kind == "distractor-scene"
        t_s = t_v = 0.0
        n_c = n_st = scanned = passed = scenes = fills = 0
        rank = -1
        c_start = time.thread_time()

        def search(stage: LocalFeatures, n: int | None) -> dict[int, R.LocalVerdict]:
            nonlocal t_s, t_v, n_c, n_st, scanned, passed, scenes, rank, fills
            t = time.thread_time()
            cands = kpi.search(stage, top=n or top)
            t1 = time.thread_time()
            t_s += t1 - t
            sst = last_search_stats()
            scanned += sst.get("scanned", 0)
            passed += sst.get("passed", 0)
            fills += sst.get("filled", 0) > 0
            n_st += 1
            n_c += len(cands)
            out = {}
            for i, c in enumerate(cands):
                if c.image_id == own and rank < 0:
                    rank = i
                v = R.verify(stage, kpi.features(c.slot),
                             lambda c=c: views_of(c.image_id), scene_all=scene_all)
                scenes += v.scene is not None
                out[c.image_id] = v
                if c.image_id not in allowed:
                    sc = v.scene
                    r.chance.append((int(v.inliers), bool(v.sane), 256 if sc is None else
                                     int(sc.pdq), 0.0 if sc is None or sc.refound <
                                     R.SCENE_REFOUND_MIN else float(sc.redetect)))
                    r.chance_synthetic.append(c.image_id >= SYNTH_ID0)
                    r.chance_kind.append(kind)
            t_v += time.thread_time() - t1
            return out

        verdicts = R.search_in_stages(q, search)
        r.t_cpu.append(time.thread_time() - c_start)
        r.t_search.append(t_s)
        r.t_verify.append(t_v)
        r.scanned.append(scanned)
        r.passed.append(passed)
        r.stages.append(n_st)
        r.fills.append(fills)
        r.t_kind.append(kind)
        r.candidates_checked.append(n_c)
        r.scene_runs.append(scenes)
        return {i for i, v in verdicts.items() if v.ok}, rank

    def reference(q: LocalFeatures, known: LocalFeatures, views: list) -> bool:
        """Pairwise verification of the query's own image alone, through the same stages."""
        got = R.search_in_stages(q, lambda st, _: {0: R.verify(st, known, views)})
        return bool(got.get(0) is not None and got[0].ok)

    def run_part(part: tuple[list[str], int, int, int | None]) -> SizeResult:
        """The queries of some edits and every ``dist_step``-th of the first ``dist_max``
        distractors from ``dist_part``, into a fresh result."""
        edits, dist_part, dist_step, dist_max = part
        c_part = time.process_time()
        n_scale = cur[0].n_scale
        r = cur[0] = SizeResult(n_scale, nk, n_real)
        for en in edits:
            qs = cache.load(en)
            found, found_h, ref, ref_full, nom = [], [], [], [], []
            known_ref = refs.get(en)
            for q in qs:
                allowed = {q.known, *q.partners}
                hits = hash_tier(q.views)
                r.n_queries["edited"] = r.n_queries.get("edited", 0) + 1
                if hits:
                    ok = q.known in hits
                    found_h.append(ok)
                    found.append(ok)
                    nom.append(-2)  # found by the hash tier
                    ref.append(ok)
                    ref_full.append(ok)
                    bad = hits - allowed
                    if bad:
                        r.false_matches.append({"query": en, "known": q.known,
                                                "tier": "hash", "images": sorted(bad)})
                    continue
                found_h.append(False)
                r.n_keypoint_queries["edited"] = r.n_keypoint_queries.get("edited", 0) + 1
                assert q.local is not None, "a hash-tier miss without keypoints in the cache"
                r.t_extract.append(q.t_local)
                matched, rank = keypoint_tier(q.local, q.known, allowed, "edited")
                found.append(q.known in matched)
                nom.append(rank)
                # references: pairwise verification of the true image, whatever the
                # nomination, with the index's verification keypoints and with all stored
                if known_ref is None:
                    ref.append(reference(q.local, search_ix[0].features(int(q.known)),
                                         ss.known_views[q.known]))
                    ref_full.append(reference(q.local, ss.known_local[q.known],
                                              ss.known_views[q.known]))
                bad = matched - allowed
                if bad:
                    r.false_matches.append({"query": en, "known": q.known,
                                            "tier": "keypoint", "images": sorted(bad)})
            if known_ref is not None:
                ref, ref_full = known_ref
            r.found[en], r.found_hash[en], r.verify_ref[en] = found, found_h, ref
            r.verify_full[en] = ref_full
            r.nominated[en] = nom
            say(f"  {n_scale:,} {en}: {100 * np.mean(found):.1f}% (hash "
                f"{100 * np.mean(found_h):.1f}%, pairwise {100 * np.mean(ref):.1f}%)")
        dq = cache.load("distractors")[:dist_max] if dist_step else []
        for i in range(dist_part, len(dq), dist_step or 1):
            q = dq[i]
            r.n_queries["distractor"] = r.n_queries.get("distractor", 0) + 1
            hits = hash_tier(q.views)
            if hits:
                r.false_matches.append({"query": "distractor", "known": -1, "index": i,
                                        "tier": "hash", "images": sorted(hits)})
                continue
            r.n_keypoint_queries["distractor"] = \
                r.n_keypoint_queries.get("distractor", 0) + 1
            assert q.local is not None
            r.t_extract.append(q.t_local)
            kind = "distractor-scene" if i % scene_every == 0 else "distractor"
            matched, _ = keypoint_tier(q.local, None, set(), kind)
            if matched:
                r.false_matches.append({"query": "distractor", "known": -1, "index": i,
                                        "tier": "keypoint", "images": sorted(matched)})
        r.build["part_cpu_s"] = time.process_time() - c_part
        r.sizes.update({f"part_{k}": v for k, v in _proc_rss().items()})
        return r

    # -- each size: grow the index, save, map, query --------------------------------------
    build_prev = time.perf_counter() - t0, time.process_time() - c0
    for n_scale in sizes:
        t1, c1 = time.perf_counter(), time.process_time()
        while n_done < n_scale:
            m = min(5_000, n_scale - n_done)
            pairs = rng.integers(0, n_real, size=(m, 2))
            add((SYNTH_ID0 + n_done - n_real + j, recombine(real(a), real(b), rng))
                for j, (a, b) in enumerate(pairs))
            n_done += m
            if n_done % 50_000 < 5_000:
                say(f"  built {n_done:,}/{n_scale:,} (recombined beyond {n_real:,})")
        kp.save(index_dir, replace=saved_at == 0)
        saved_at = kp.n_slots
        res = SizeResult(n_scale, nk, n_real, dup_distractors=dups)
        res.build.update({"hash_views_core": float(core), "keypoint_add_s": t_kp,
                          "keypoint_add_cpu_s": c_kp, "hash_build_s": hash_build_s,
                          "wall_s": build_prev[0] + time.perf_counter() - t1,
                          "cpu_s": build_prev[1] + time.process_time() - c1})
        build_prev = (0.0, 0.0)
        # the index as the product holds it: mapped from its folder
        rss0 = _proc_rss()
        search_ix[:] = [KeypointIndex.load(index_dir, mmap=True, params=kp.params)]
        st = search_ix[0].stats()
        fixed = sum((index_dir / f).stat().st_size for f in ("vocab.npz", "df.npy"))
        res.sizes = {**{k: float(v) for k, v in st.items()},
                     "hash_rows": float(len(all_ids)),
                     "hash_bytes": float(hix.stats()["bytes"]),
                     "index_dir_bytes": float(_folder_bytes(index_dir)),
                     "index_fixed_bytes": float(fixed),
                     "ram_bytes": float(st["posting_bytes"] + st["offset_bytes"]
                                        + st["slot_bytes"] + kp.vocab.n_words * 8),
                     "rss_before_load_mib": rss0.get("VmRSS", math.nan),
                     "rss_after_load_mib": _proc_rss().get("VmRSS", math.nan)}
        say(f"  {n_scale:,}: {st['postings']:,} postings, {len(all_ids):,} hash rows, "
            f"{res.sizes['index_dir_bytes'] / 2**20:,.0f} MiB on disk")
        full_d = all_distractors_from is not None and n_scale >= all_distractors_from
        dmax = None if full_d else max_distractors
        parts = [(ss.edits[w::workers], w, workers, dmax) for w in range(workers)]
        t_q = time.perf_counter()
        cur[:] = [res]
        if workers == 1:
            got = [run_part(parts[0])]
        else:
            import multiprocessing

            global _PART_FN
            _PART_FN = run_part
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                got = pool.map(_call_part, parts, chunksize=1)
            _PART_FN = None
        for g in got:
            _merge(res, g)
        for en in res.found:
            refs.setdefault(en, (res.verify_ref[en], res.verify_full[en]))
        res.build["queries_wall_s"] = time.perf_counter() - t_q
        res.build["queries_cpu_s"] = sum(g.build.get("part_cpu_s", 0.0) for g in got)
        res.build["distractors_max"] = float(dmax or -1)
        res.sizes["rss_mib"] = _rss_mib()
        for k in ("VmRSS", "RssAnon", "RssFile"):
            res.sizes[f"query_{k}_mib"] = max(g.sizes.get(f"part_{k}", 0.0) for g in got)
        say(f"  {n_scale:,}: {res.n_queries}")
        search_ix.clear()
        yield res


def run_size(ss: StudySet, cache: QueryCache, set_dir: Path, n_scale: int,
             **kw: object) -> SizeResult:
    """:func:`run_sizes` at one size."""
    return next(run_sizes(ss, cache, set_dir, [n_scale], **kw))  # type: ignore[arg-type]


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


# --- index-only nomination at 2*10^7 ---------------------------------------------------------



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


# --- adding a month of known images --------------------------------------------------------


def add_month(index_dir: Path, set_dir: Path, n_real: int, n_add: int, queries: Sequence[
        LocalFeatures], *, chunk: int = 5_000, save_every: int = 50_000, seed: int = 1,
              pause: float = 0.05, say: Callable[[str], None] = lambda s: None) -> dict:
    """Add ``n_add`` keypoint sets to the index saved in ``index_dir`` while a second thread
    keeps searching it, as a service worker would while ``lists add`` runs: the sets are
    recombined (:func:`recombine`) from the first ``n_real`` generated images, added
    ``chunk`` at a time, and the index is saved incrementally every ``save_every`` (new
    segments and appended records only). Returns the writer's wall and CPU seconds (records
    encoding, word assignment, sealing, merging, saving), the searcher's latencies during the
    additions (one search every ``pause`` seconds), and whether any search failed or saw fewer
    sets than were added before it."""
    import threading

    from hashwatch.scaleset import iter_shards

    kp = KeypointIndex.load(index_dir, mmap=True)
    n0 = kp.n_slots
    shards = list(iter_shards(set_dir, n_real))
    sizes = np.array([len(sh) for sh in shards])
    starts = np.r_[0, np.cumsum(sizes)]

    def real(i: int) -> LocalFeatures:
        s = int(np.searchsorted(starts, i, side="right") - 1)
        return shards[s].local(int(i - starts[s]))

    rng = np.random.default_rng([seed, 0xADD])
    stop = threading.Event()
    lat: list[float] = []
    errors: list[str] = []
    regress = [0]

    def searcher() -> None:
        i = 0
        seen = 0
        while not stop.is_set():
            q = queries[i % len(queries)]
            i += 1
            t = time.perf_counter()
            try:
                now = kp.n_slots
                kp.search(q, top=8)
                if now < seen:
                    regress[0] += 1
                seen = now
            except Exception as exc:  # noqa: BLE001 - counted and reported, never hidden
                errors.append(repr(exc))
            lat.append(time.perf_counter() - t)
            stop.wait(pause)  # a steady query stream, not a busy loop holding the GIL

    th = threading.Thread(target=searcher, daemon=True)
    th.start()
    t0, c0 = time.perf_counter(), time.thread_time()
    done = 0
    saves = 0
    while done < n_add:
        m = min(chunk, n_add - done)
        pairs = rng.integers(0, n_real, size=(m, 2))
        base = 2 * SYNTH_ID0 + done
        kp.add_many((base + j, recombine(real(a), real(b), rng))
                    for j, (a, b) in enumerate(pairs))
        done += m
        if done % save_every == 0 or done == n_add:
            if not kp.save(index_dir):
                raise RuntimeError(f"{index_dir} was saved by another process meanwhile")
            saves += 1
            say(f"  added {done:,}/{n_add:,} ({time.perf_counter() - t0:.0f} s)")
    wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
    stop.set()
    th.join()
    return {"n_before": n0, "n_after": kp.n_slots, "n_add": n_add, "wall_s": wall,
            "writer_cpu_s": cpu, "saves": saves, "searches": len(lat),
            "search_p50_ms": 1000 * pct(lat, 50), "search_p99_ms": 1000 * pct(lat, 99),
            "search_max_ms": 1000 * max(lat) if lat else math.nan, "search_errors": errors[:5],
            "n_search_errors": len(errors), "slot_count_regressions": regress[0],
            "index_dir_bytes": _folder_bytes(index_dir), "rss_mib": _rss_mib()}


def _describe_file(path: Path) -> tuple[float, float]:
    """(CPU s to decode, CPU s for every stored signal) of one file, as ``lists add`` does."""
    from hashwatch.evaluate import load_pixels
    from hashwatch.scaleset import describe

    c0 = time.process_time()
    px = load_pixels(path)
    c1 = time.process_time()
    describe(px)
    return c1 - c0, time.process_time() - c1


def feature_rate(paths: Sequence[Path], workers: int = 2) -> dict:
    """Known-image features (decode, PDQ views, ORB keypoints) of ``paths`` on ``workers``
    processes: wall and CPU seconds, per image."""
    from concurrent.futures import ProcessPoolExecutor

    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers) as ex:
        got = list(ex.map(_describe_file, paths, chunksize=16))
    wall = time.perf_counter() - t0
    dec = float(sum(g[0] for g in got))
    feat = float(sum(g[1] for g in got))
    return {"images": len(paths), "workers": workers, "wall_s": wall, "decode_cpu_s": dec,
            "features_cpu_s": feat, "wall_ms_per_image": 1000 * wall / len(paths),
            "cpu_ms_per_image": 1000 * (dec + feat) / len(paths)}
