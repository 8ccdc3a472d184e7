"""One evaluation pass: each known image and each edited query prepared once (hash variants, local
features), every method's routes scored, the keypoint tier run as the matcher runs it, and
partner mode (a CSV export imported into a fresh database)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hashwatch import robust as R
from hashwatch.edits import EDITS, apply_edit, edit_names
from hashwatch.evaluate.corpus import (
    corpus_files,
    load_pixels,
    split_eval,
)
from hashwatch.evaluate.rates import BIG
from hashwatch.robust.regions import query_rectangles

# Routes of the hash tier, in the order they are added (method name, routes added).
ROUTE_STEPS: list[tuple[str, list[tuple[str, str]]]] = [
    ("pdq", [("full", "full")]),
    ("+dihedral", [("dihedral", "full")]),
    ("+trim", [("trim", "full"), ("trim", "trim"), ("full", "trim"), ("dihedral", "trim")]),
    ("+regions", [("region", "full"), ("region", "trim")]),
    ("+derotate", [("derot", "full"), ("derot", "trim")]),
    ("+crops", [("full", "crop"), ("trim", "crop"), ("region", "crop"), ("dihedral", "crop"),
                ("derot", "crop")]),
    ("+qcrops", [("qcrop", "full"), ("qcrop", "trim"), ("qcrop", "crop"), ("qrot", "full"),
                 ("qrot", "trim"), ("qrot", "crop")]),
]
ROUTES: list[tuple[str, str]] = [r for _, rs in ROUTE_STEPS for r in rs]


def _thr(route: tuple[str, str]) -> int:
    return R.THRESHOLDS[route]



# --- per-image processing ------------------------------------------------------------------


@dataclass
class Prepared:
    """What the harness computes per image."""

    hashes: list  # KnownHash or QueryHash
    local: R.LocalFeatures | None


def _bits(codes: list[bytes]) -> np.ndarray:
    a = np.frombuffer(b"".join(codes), np.uint8).reshape(-1, 32)
    return np.unpackbits(a, axis=1).astype(np.float32) * 2 - 1


class KnownSet:
    """Known images' hash variants and local features, laid out for fast comparison."""

    def __init__(self, prepared: list[Prepared]) -> None:
        self.n = len(prepared)
        codes, owner, kcls, qual = [], [], [], []
        for i, p in enumerate(prepared):
            for h in p.hashes:
                codes.append(h.code)
                owner.append(i)
                kcls.append(R.known_class(h.variant))
                qual.append(h.quality)
        self.bits = _bits(codes)
        self.owner = np.array(owner)
        self.kcls = np.array(kcls)
        self.ok = np.array(qual) >= R.MIN_QUALITY
        self.n_hashes = len(codes)
        # the keypoint tier exactly as the matcher runs it: the keypoint index nominates,
        # each nominee is verified pairwise
        from hashwatch.robust.keypoint_index import KeypointIndex
        from hashwatch.robust.vocab import default_vocabulary

        self.local = KeypointIndex(default_vocabulary())
        self.known_hashes = [p.hashes for p in prepared]
        self.local.add_many((i, p.local) for i, p in enumerate(prepared) if p.local is not None)

    def route_distances(self, query: list) -> np.ndarray:
        """(n_known, len(ROUTES)) min distance per route (BIG where the route has no pair)."""
        out = np.full((self.n, len(ROUTES)), BIG, np.int16)
        if not query:
            return out
        qb = _bits([h.code for h in query])
        d = np.rint((256 - qb @ self.bits.T) / 2).astype(np.int16)  # (m, n_hashes)
        qcls = np.array([R.query_class(h.variant) for h in query])
        qok = np.array([h.quality >= R.MIN_QUALITY for h in query])
        for r, (qc, kc) in enumerate(ROUTES):
            rows = qcls == qc
            if (qc, kc) != ("full", "full"):
                rows &= qok
            cols = self.kcls == kc
            if (qc, kc) != ("full", "full"):
                cols &= self.ok
            if not rows.any() or not cols.any():
                continue
            v = d[rows][:, cols].min(axis=0)
            np.minimum.at(out[:, r], self.owner[cols], v)
        return out

    def local_verdicts(self, q: R.LocalFeatures | None, scene_all: bool = True
                       ) -> dict[int, R.LocalVerdict]:
        """The keypoint tier's verdicts for the candidates the keypoint index nominated (the
        matcher's :data:`~hashwatch.matcher.KEYPOINT_CANDIDATES`), each verified pairwise; with
        ``scene_all`` the scene check runs for every candidate that got a transform (to measure
        it on non-matches)."""
        from hashwatch.matcher import KEYPOINT_CANDIDATES

        if q is None:
            return {}
        def search(stage: R.LocalFeatures, top: int | None) -> dict[int, R.LocalVerdict]:
            return {c.image_id: R.verify(stage, self.local.features(c.slot),
                                         self.known_hashes[c.image_id], scene_all=scene_all)
                    for c in self.local.search(stage, top=top or KEYPOINT_CANDIDATES)}

        # plain, mirrored, small-picture passes in turn, as the matcher runs them
        return R.search_in_stages(q, search)


def local_level(v: R.LocalVerdict) -> int:
    """A verdict as one number: its inliers when geometry and scene check pass, else capped
    below the match level (so ``>= LOCAL_MIN_INLIERS`` is the matcher's decision)."""
    return v.inliers if v.checks_pass else min(v.inliers, R.LOCAL_MIN_INLIERS - 1)


def geometric_level(v: R.LocalVerdict) -> int:
    """The same without the scene check (the geometric check alone, as before it existed)."""
    return v.inliers if v.sane else min(v.inliers, R.LOCAL_MIN_INLIERS - 1)


def prepare_known(p: np.ndarray, local: bool) -> Prepared:
    return Prepared(R.known_signals(p), R.known_local(p) if local else None)


def prepare_query(p: np.ndarray, local: bool) -> Prepared:
    boxes = R.query_regions(p)
    rects = query_rectangles(p, boxes)
    return Prepared(R.query_signals(p, boxes=boxes, rects=rects),
                    R.query_local(p, boxes, rects=rects) if local else None)


# --- run ----------------------------------------------------------------------------------


@dataclass
class EvalConfig:
    corpus: Path
    n_known: int = 200
    seed: int = 0
    edits: list[str] | None = None
    max_distractors: int | None = None
    local: bool = True
    partner: bool = True
    progress: Callable[[str], None] | None = None


@dataclass
class EvalResult:
    config: EvalConfig
    known: list[Path]
    distractors: list[Path]
    edits: list[str]
    # query route distances: (n_edits, n_known, n_known, n_routes) is too big; keep the true
    # pair and the best wrong pair per method instead.
    true_d: np.ndarray  # (n_edits, n_known, n_routes) distance to its own known image
    wrong_score: dict[str, np.ndarray]  # method -> (n_edits, n_known) best score vs other known
    true_local: np.ndarray  # (n_edits, n_known) inliers vs own known (0 if not a candidate)
    wrong_local: np.ndarray  # (n_edits, n_known) max inliers vs a wrong known image
    distractor_d: np.ndarray  # (n_distractors, n_known, n_routes)
    distractor_local: np.ndarray  # (n_distractors, n_known) local_level (0 = not a candidate)
    n_known_hashes: np.ndarray  # per known image
    n_query_hashes: list[int]
    timings: dict[str, float] = field(default_factory=dict)
    local_bytes: list[int] = field(default_factory=list)
    # the geometric check alone (no scene check), same layout as distractor_local
    distractor_geometric: np.ndarray | None = None
    # (pdq, redetect) of the scene check for every distractor candidate that got a transform
    distractor_scene: np.ndarray | None = None
    fillers: list[Path] = field(default_factory=list)
    # partner mode (the list as a partner receives it: CSV export imported into a fresh
    # database, hash tier only): (n_edits, n_known) own image found / a wrong known matched,
    # and the distractors that matched anything
    partner_found: np.ndarray | None = None
    partner_wrong: np.ndarray | None = None
    partner_distractor: int = 0

    @property
    def geometric_local(self) -> np.ndarray:
        """Distractor inliers under the geometric check alone (results saved before the scene
        check existed have only ``distractor_local``, which was that)."""
        if self.distractor_geometric is not None:
            return self.distractor_geometric
        return self.distractor_local


def method_routes() -> list[tuple[str, list[int]]]:
    """(method name, route column indices) for the cumulative hash-tier methods."""
    out, acc = [], []
    for name, rs in ROUTE_STEPS:
        acc = acc + [ROUTES.index(r) for r in rs]
        out.append((name, list(acc)))
    return out


def _score(d: np.ndarray, cols: list[int]) -> np.ndarray:
    """Distance minus threshold, best over the routes in `cols` (<= 0 means match)."""
    t = np.array([_thr(ROUTES[c]) for c in cols], np.int16)
    return (d[..., cols] - t).min(axis=-1)


def _local_runs(d: np.ndarray, cols: list[int]) -> bool:
    """Whether the matcher runs the keypoint tier on a query with route distances ``d``
    (n_known, routes): no route in ``cols`` matched, or only region-class routes (views
    showing one picture among others, :func:`hashwatch.robust.part_of_frame`)."""
    t = np.array([_thr(ROUTES[c]) for c in cols], np.int16)
    hit = d[:, cols] <= t
    return not hit[:, [ROUTES[c][0] != "region" for c in cols]].any()


class PartnerList:
    """The known set as a partner receives it: added to a custodian database as
    ``hashwatch lists add`` does, exported to CSV (hashes only), imported into a fresh
    database, matched there by :class:`hashwatch.matcher.Matcher` (no keypoints: the hash
    tier with every exported view)."""

    def __init__(self, names: Sequence[str], views: Sequence[Sequence], folder: Path) -> None:
        import io
        from types import SimpleNamespace

        from hashwatch.lists import add_records, export_list, import_stream
        from hashwatch.matcher import Matcher
        from hashwatch.store import Store

        self.index_of = {n: i for i, n in enumerate(names)}
        custodian = Store.open(folder / "custodian.db")
        custodian.create_list("known")
        recs = []
        for n, vs in zip(names, views, strict=True):
            full = next(v for v in vs if v.variant == "full")
            recs.append(SimpleNamespace(
                path=n, error=None, md5=None, sha1=None,
                sha256=hashlib.sha256(n.encode()).hexdigest(), pdq=full.hex,
                pdq_quality=full.quality,
                extras={"pdq_variants": [(v.variant, v.hex, v.quality) for v in vs
                                         if v.variant != "full"]}))
        add_records(custodian, "known", recs)
        buf = io.StringIO()
        export_list(custodian, "known", buf, "csv")
        custodian.close()
        self.store = Store.open(folder / "partner.db")
        self.store.create_list("partner")
        import_stream(self.store, "partner", io.StringIO(buf.getvalue()), "csv")
        self.matcher = Matcher(self.store, persist=False)
        self.csv_bytes = len(buf.getvalue().encode())

    def match(self, views: Sequence) -> set[int]:
        """Known indices a query's views match in the partner's database."""
        q = [(v.variant, v.hex, v.quality) for v in views]
        return {self.index_of[m.ref] for m in self.matcher.match_views(q)
                if m.ref in self.index_of}

    def close(self) -> None:
        self.store.close()


def make_query(edit: str, edit_index: int, known_index: int, kpix: Sequence[np.ndarray],
               fpix: Sequence[np.ndarray], seed: int) -> tuple[np.ndarray, list[int]]:
    """The edited copy of known image ``known_index`` under ``edit`` (``edit_index``: its place
    in :func:`hashwatch.edits.edit_names`, the whole suite's order, whatever subset is run):
    (pixels, the known images it shows as collage partners). Partners and
    fillers are drawn from a generator seeded by (seed, known, edit index), so every harness
    (``hashwatch eval``, the scale study) makes the same queries."""
    e = EDITS[edit]
    rng = np.random.default_rng([seed, known_index, edit_index, 7])
    others = [j for j in range(len(kpix)) if j != known_index]
    pidx = [int(x) for x in rng.choice(others, e.partners, replace=False)] \
        if e.partners else []
    fidx = [int(x) for x in rng.choice(len(fpix), e.fillers, replace=False)] \
        if e.fillers else []
    img = apply_edit(edit, kpix[known_index], seed=seed, key=known_index,
                     partners=[kpix[j] for j in pidx], fillers=[fpix[j] for j in fidx])
    return img, pidx


def run_eval(cfg: EvalConfig) -> EvalResult:
    say = cfg.progress or (lambda s: None)
    known, fillers, distractors = split_eval(corpus_files(cfg.corpus), cfg.n_known, cfg.seed,
                                             cfg.max_distractors)
    edits = list(cfg.edits) if cfg.edits else edit_names()
    say(f"{len(known)} known, {len(fillers)} fillers, {len(distractors)} distractors, "
        f"{len(edits)} edits")
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    kpix = [load_pixels(p) for p in known]
    kprep = [prepare_known(p, cfg.local) for p in kpix]
    fpix = [load_pixels(p) for p in fillers] if any(EDITS[e].fillers for e in edits) else []
    ks = KnownSet(kprep)
    timings["known_s_per_image"] = (time.perf_counter() - t0) / max(1, len(known))
    names = [n for n, _ in method_routes()]
    partner = None
    if cfg.partner:
        import tempfile

        tmp = tempfile.TemporaryDirectory(prefix="hashwatch-eval-")
        partner = PartnerList([f"k{i:05d}-{p.name}" for i, p in enumerate(known)],
                              [p.hashes for p in kprep], Path(tmp.name))

    nk, ne, nr = len(known), len(edits), len(ROUTES)
    true_d = np.full((ne, nk, nr), BIG, np.int16)
    wrong = {m: np.full((ne, nk), BIG, np.int16) for m in names}
    true_local = np.zeros((ne, nk), np.int16)
    wrong_local = np.zeros((ne, nk), np.int16)
    p_found = np.zeros((ne, nk), bool)
    p_wrong = np.zeros((ne, nk), bool)
    nq_hashes: list[int] = []
    t_query = 0.0
    n_query = n_local = 0
    full_cols = method_routes()[-1][1]
    # Partners and fillers are drawn by the edit's place in the whole suite, not in this run's
    # list: `--edits X` then makes exactly the queries the full run makes for X.
    order = {e: i for i, e in enumerate(edit_names())}
    for ei, en in enumerate(edits):
        for ki in range(nk):
            img, pidx = make_query(en, order[en], ki, kpix, fpix, cfg.seed)
            t1 = time.perf_counter()
            # Cascade, as the matcher runs it: the local tier only when no hash route matched.
            boxes = R.query_regions(img)
            rects = query_rectangles(img, boxes)
            hashes = R.query_signals(img, boxes=boxes, rects=rects)
            d = ks.route_distances(hashes)
            loc: dict[int, int] = {}
            if cfg.local and _local_runs(d, full_cols):
                loc = {k: local_level(v) for k, v in ks.local_verdicts(
                    R.query_local(img, boxes, rects=rects), scene_all=False).items()}
                n_local += 1
            t_query += time.perf_counter() - t1
            n_query += 1
            nq_hashes.append(len(hashes))
            true_d[ei, ki] = d[ki]
            # Partners of a collage are in the picture too: hitting them is not a false match.
            mask = np.ones(nk, bool)
            mask[ki] = False
            mask[pidx] = False
            for m, cols in method_routes():
                wrong[m][ei, ki] = _score(d[mask], cols).min() if mask.any() else BIG
            true_local[ei, ki] = loc.get(ki, 0)
            wl = [v for c, v in loc.items() if mask[c]]
            wrong_local[ei, ki] = max(wl) if wl else 0
            if partner is not None:
                got = partner.match(hashes)
                p_found[ei, ki] = ki in got
                p_wrong[ei, ki] = bool(got - {ki, *pidx})
        say(f"edit {en}: done ({ei + 1}/{ne})")
    timings["query_s_per_image"] = t_query / max(1, n_query)
    timings["local_fraction"] = n_local / max(1, n_query)

    dd = np.full((len(distractors), nk, nr), BIG, np.int16)
    dl = np.zeros((len(distractors), nk), np.int16)
    dg = np.zeros((len(distractors), nk), np.int16)
    scene_stats: list[tuple[int, float]] = []
    p_dist = 0
    t_dist = 0.0
    t2 = time.perf_counter()
    for di, p in enumerate(distractors):
        px = load_pixels(p)
        t3 = time.perf_counter()
        qp = prepare_query(px, cfg.local)
        dd[di] = ks.route_distances(qp.hashes)
        if partner is not None:
            p_dist += bool(partner.match(qp.hashes))
        if cfg.local:
            for c, v in ks.local_verdicts(qp.local).items():
                dl[di, c] = local_level(v)
                dg[di, c] = geometric_level(v)
                if v.scene is not None:
                    # a share with too few refound points does not count: record it as 0
                    scene_stats.append((v.scene.pdq, v.scene.redetect
                                        if v.scene.refound >= R.SCENE_REFOUND_MIN else 0.0))
        t_dist += time.perf_counter() - t3
        if di % 500 == 0:
            say(f"distractors {di}/{len(distractors)}")
    timings["distractor_s_per_image"] = t_dist / max(1, len(distractors))
    timings["distractor_wall_s"] = time.perf_counter() - t2
    if partner is not None:
        timings["partner_csv_bytes_per_known"] = partner.csv_bytes / max(1, nk)
        partner.close()
        tmp.cleanup()
    return EvalResult(cfg, known, distractors, edits, true_d, wrong, true_local, wrong_local,
                      dd, dl, np.array([len(p.hashes) for p in kprep]), nq_hashes, timings,
                      [p.local.nbytes() for p in kprep if p.local is not None], dg,
                      np.array(scene_stats, np.float64).reshape(-1, 2), fillers,
                      p_found if cfg.partner else None, p_wrong if cfg.partner else None,
                      p_dist)
