"""Robustness evaluation harness (``hashwatch eval`` and ``benchmarks/robustness.py``).

Known set: a seeded sample of the corpus; fillers: a seeded pool of :data:`FILLER_POOL` other
photographs that combined edits show beside or behind the known picture (grid cells,
backgrounds, the other picture of a screenshot); distractors: all the rest (never known, never a
filler); queries: every known image under every edit of :mod:`hashwatch.edits`.

The rule that keeps the counts honest: a query may hit its own known image (a true match) or the
known images it shows as collage partners (neither true nor false); a hit on any other known image
is a false match. Fillers are never known images and never distractor queries, so a filler can
neither make a query "match" through another picture nor be counted twice; a scale set built
beside the known set must leave the fillers out as well (or count a match on a scale image made
from a filler as a true copy of that filler, not as the target's match). For each method the
report gives, per edit, the recall at the method's operating point, the false matches among all
distractor x known pairs (and among edited queries that hit the wrong known image), the
distance distributions (PNG) and an extrapolated false-match rate per pair.

Methods are cumulative, one route added at a time, all computed from one pass:
``pdq`` (full vs full <= 31) -> ``+dihedral`` -> ``+trim`` -> ``+regions`` -> ``+derotate`` ->
``+crops`` (stored crops) -> ``+qcrops`` (query crops and turned crops; = the robust hash
tier) -> ``+local`` (the keypoint tier as the matcher runs it: the
keypoint index nominates, each nominee gets the geometric and scene checks; the full matcher).
``partner`` (partner mode): the known set as a partner receives it, added to a custodian
database, exported to CSV (hashes only), imported into a fresh database and matched there by
the Matcher: the hash tier with every exported view and no keypoints (:class:`PartnerList`).

False-match extrapolation (per route): the per-pair minimum distance over all variant pairs of
that route, over every distractor x known pair, is fitted in its lower tail by a normal
distribution through two empirical quantiles (p=1e-3 and p=1e-2; the fit that gives the higher
rate at the threshold is kept, which is the conservative choice when the tail is heavier than
normal). The per-pair rate of a method is the sum over its routes (union bound). The local tier
adds P(pair reaches LOCAL_MIN_INLIERS) x P(chance alignment passes the scene check): the first
from a geometric-tail fit of the inlier counts of all distractor pairs (geometric check alone),
the second from the scene-check measurements of every distractor candidate that got a transform
(normal lower-tail fit of the aligned PDQ distance, exponential tail fit of the re-detected
share; the two tests are summed, a union bound). The product assumes that how many keypoints a
chance alignment gathers and how well the aligned pictures agree are independent.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from hashwatch import robust as R
from hashwatch.edits import COMBINED_EDITS, EDITS, apply_edit, edit_names
from hashwatch.robust.regions import query_rectangles

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
LOAD_SIDE = 512  # images are decoded at most this big; edits are applied at this size
# Part of the corpus that is a pixel-identical copy of another part: never used (it would be a
# "distractor" identical to a known image).
SKIP_DIRS = {"cbsd68-png"}

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
BIG = 255


def _thr(route: tuple[str, str]) -> int:
    return R.THRESHOLDS[route]


# --- corpus --------------------------------------------------------------------------------

CORPUS_ENV = "HASHWATCH_CORPUS"


class CorpusNotFound(FileNotFoundError):
    """The benign image corpus is not where it was looked for (the message says where)."""


def corpus_candidates(explicit: Path | None = None) -> list[Path]:
    """Where the corpus is looked for, in order: ``explicit`` (``--corpus``), else
    ``$HASHWATCH_CORPUS``, else ``shared/corpus`` beside the current folder or one of its
    parents, then beside the checkout this code runs from (``<checkout>/../shared/corpus``)."""
    if explicit is not None:
        return [Path(explicit)]
    env = os.environ.get(CORPUS_ENV)
    if env:
        return [Path(env)]
    here = Path.cwd().resolve()
    out = [d / "shared" / "corpus" for d in (here, *here.parents)]
    out.append(Path(__file__).resolve().parents[3] / "shared" / "corpus")
    return list(dict.fromkeys(out))


def resolve_corpus(explicit: Path | None = None) -> Path:
    """The corpus folder (see :func:`corpus_candidates`). Raises :class:`CorpusNotFound`
    naming every place looked at and how to point at the corpus."""
    tried = corpus_candidates(explicit)
    for c in tried:
        if c.is_dir():
            return c
    how = ("--corpus PATH" if explicit is not None else
           f"--corpus PATH or ${CORPUS_ENV}=PATH")
    raise CorpusNotFound(
        "benign image corpus not found (looked at: " + ", ".join(str(c) for c in tried[:4])
        + (", ..." if len(tried) > 4 else "") + f"); give its folder with {how}")


def corpus_files(corpus: Path) -> list[Path]:
    """Image files of the corpus, minus known duplicate folders and byte-identical files."""
    seen: set[str] = set()
    out: list[Path] = []
    for p in sorted(corpus.rglob("*")):
        if p.suffix.lower() not in IMAGE_EXT or not p.is_file():
            continue
        if any(part in SKIP_DIRS for part in p.relative_to(corpus).parts):
            continue
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        out.append(p)
    return out


def split_known(files: Sequence[Path], n_known: int, seed: int) -> tuple[list[Path], list[Path]]:
    """Seeded split: half the known set from the larger photo sets, half from the small flower
    photos (the corpus is 90% flowers; a plain sample would be almost only 128x128 images)."""
    rng = np.random.default_rng(seed)
    big = [p for p in files if "flowers" not in str(p)]
    small = [p for p in files if "flowers" in str(p)]
    nb = min(len(big), n_known // 2)
    ns = min(len(small), n_known - nb)
    kb = set(rng.choice(len(big), nb, replace=False).tolist()) if nb else set()
    ks = set(rng.choice(len(small), ns, replace=False).tolist()) if ns else set()
    known = [p for i, p in enumerate(big) if i in kb] + [p for i, p in enumerate(small) if i in ks]
    kset = set(known)
    return known, [p for p in files if p not in kset]


# `hashwatch eval --quick`: a small known set, one or two edits per family, few distractors
# (~1,300 queries instead of ~25,000 for the full run with every edit; recall per edit is coarse,
# +-5 points at 40 known images, and the false-match tail is too thin to extrapolate).
QUICK_KNOWN = 40
QUICK_DISTRACTORS = 300
QUICK_EDITS: tuple[str, ...] = (
    "jpeg30", "blur2", "noise0.2", "crop10c", "crop50c", "crop20o", "trim20side", "mirror",
    "rot90", "rotate5", "border-white10", "letterbox9:16", "caption-bar", "screenshot-dark",
    "side-by-side", "collage4", "grey", "resize0.25", "aspect1.3w", "png",
    "mirror+crop", "stretch1.5+crop10", "perspective12", "grid3x3", "pip45-photo",
    "mirror+pip45-photo",
)


def quick_edits() -> list[str]:
    """The quick mode's edits that this version of :mod:`hashwatch.edits` has."""
    return [e for e in QUICK_EDITS if e in EDITS]


FILLER_POOL = 64  # photographs reserved for combined edits (not known, not distractors)


def split_fillers(rest: Sequence[Path], seed: int, n: int = FILLER_POOL
                  ) -> tuple[list[Path], list[Path]]:
    """(fillers, distractors): a seeded sample of ``n`` of the larger photographs (BSDS500,
    Kodak, Sun-Hays: big enough to fill a background) among the non-known files, and all the
    other non-known files. Independent of the edits run, so distractor counts stay comparable."""
    big = [p for p in rest if "flowers" not in str(p)]
    rng = np.random.default_rng([seed, 0xF111])
    pick = set(rng.choice(len(big), min(n, len(big)), replace=False).tolist()) if big else set()
    fillers = [p for i, p in enumerate(big) if i in pick]
    fset = set(fillers)
    return fillers, [p for p in rest if p not in fset]


def split_eval(files: Sequence[Path], n_known: int, seed: int,
               max_distractors: int | None = None) -> tuple[list[Path], list[Path], list[Path]]:
    """(known, fillers, distractors) as ``hashwatch eval`` splits the corpus ``files``:
    :func:`split_known`, :func:`split_fillers`, then a seeded sample of at most
    ``max_distractors`` distractors in corpus order (None: all of them). Benchmarks that
    reproduce the eval's queries split with this too."""
    known, rest = split_known(files, n_known, seed)
    fillers, distractors = split_fillers(rest, seed)
    if max_distractors is not None:
        rng = np.random.default_rng(seed + 1)
        keep = sorted(rng.choice(len(distractors), min(max_distractors, len(distractors)),
                                 replace=False).tolist())
        distractors = [distractors[i] for i in keep]
    return known, fillers, distractors


def load_pixels(path: Path, max_side: int = LOAD_SIDE) -> np.ndarray:
    try:
        from hashwatch.decode import decode_image

        return decode_image(path, max_side=max_side).pixels
    except ImportError:  # pragma: no cover - decode module is optional here
        im = Image.open(path).convert("RGB")
        im.thumbnail((max_side, max_side))
        return np.asarray(im)


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


# --- analysis ------------------------------------------------------------------------------


def _norm_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _norm_isf(p: float) -> float:
    # inverse of the upper tail by bisection (no scipy)
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if _norm_sf(mid) > p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def tail_rate(dist: np.ndarray, threshold: int) -> tuple[float, float, float]:
    """Extrapolated P(distance <= threshold) for unrelated pairs: normal fitted through the
    empirical quantiles at p=1e-3 and 1e-2 (also 1e-2/1e-1), the larger estimate is kept.
    Returns (rate, mu, sigma) of the kept fit."""
    present = dist < BIG
    x = np.sort(dist[present].astype(np.float64))
    if len(x) < 1000:
        return float("nan"), float("nan"), float("nan")
    frac = float(present.mean())  # pairs where the route exists at all
    best = (0.0, float("nan"), float("nan"))
    for p1, p2 in ((1e-3, 1e-2), (1e-2, 1e-1)):
        q1, q2 = np.quantile(x, p1), np.quantile(x, p2)
        z1, z2 = -_norm_isf(p1), -_norm_isf(p2)  # lower-tail z scores (negative)
        if q2 <= q1:
            continue
        sigma = (q2 - q1) / (z2 - z1)
        mu = q1 - z1 * sigma
        rate = frac * _norm_sf((mu - threshold - 0.5) / sigma)
        if rate > best[0]:
            best = (rate, mu, sigma)
    return best


def local_tail_rate(inliers: np.ndarray, n_pairs: int, need: int) -> tuple[float, float]:
    """P(inliers >= need) per unrelated pair, extrapolated: the survival function of the
    geometric-check inlier counts over all distractor x known pairs (pairs never put to the
    check count as 0) is fitted by a geometric tail, log S(k) linear in k, through the counts
    k >= 3 that at least 5 pairs reach (a 2-point similarity always has 2 "inliers").
    Returns (rate, per-inlier decay)."""
    if n_pairs == 0:
        return float("nan"), float("nan")
    x = inliers[inliers > 0]
    top = int(x.max()) if len(x) else 0
    ks = np.arange(3, top + 1)
    surv = np.array([(x >= k).sum() for k in ks], np.float64)
    ok = surv >= 5
    if ok.sum() < 2:
        # Too few chance alignments to fit a slope: only the rule-of-three bound is honest.
        return 3.0 / n_pairs, float("nan")
    b, a = np.polyfit(ks[ok], np.log(surv[ok] / n_pairs), 1)
    return float(math.exp(a + b * need)), float(math.exp(b))


def share_tail_rate(x: np.ndarray, need: float) -> float:
    """P(share >= need) among candidates, extrapolated: log of the survival function fitted
    linearly over the top decile of the shares (points that >= 5 candidates reach). Falls back
    to the rule-of-three bound when the tail is too thin to fit."""
    n = len(x)
    if n == 0:
        return float("nan")
    top = np.quantile(x, 0.9)
    grid = np.linspace(top, x.max(), 12)
    surv = np.array([(x >= g).sum() for g in grid], np.float64)
    ok = surv >= 5
    empirical = float((x >= need).sum()) / n
    if ok.sum() < 2 or np.ptp(grid[ok]) == 0:
        return max(empirical, 3.0 / n)
    b, a = np.polyfit(grid[ok], np.log(surv[ok] / n), 1)
    return max(empirical, float(math.exp(a + b * need)))


@dataclass
class Summary:
    methods: list[str]
    per_edit: dict[str, dict[str, float]]  # method -> edit -> recall
    false_distractor: dict[str, int]
    false_wrong_known: dict[str, int]
    est_rate: dict[str, float]
    mean_recall: dict[str, float]
    route_fits: dict[str, tuple[int, float, float, float]]
    local_fit: tuple[float, float]
    n_pairs: int
    # scene check on chance alignments: (P(pdq <= max), P(redetect >= min), candidates measured,
    # false matches the geometric check alone would have let through)
    scene_fit: tuple[float, float, int, int] | None = None
    # method -> how many of its routes had too few distractor pairs for a tail fit (their
    # rate is left out of ``est_rate``, which is then a lower bound)
    unfitted: dict[str, int] = field(default_factory=dict)


def summarise(res: EvalResult) -> Summary:
    methods = method_routes()
    names = [n for n, _ in methods]
    per_edit: dict[str, dict[str, float]] = {}
    fd: dict[str, int] = {}
    fw: dict[str, int] = {}
    est: dict[str, float] = {}
    unfitted: dict[str, int] = {}
    fits: dict[str, tuple[int, float, float, float]] = {}
    n_pairs = res.distractor_d.shape[0] * res.distractor_d.shape[1]
    for r, route in enumerate(ROUTES):
        rate, mu, sg = tail_rate(res.distractor_d[..., r].ravel(), _thr(route))
        fits[f"{route[0]}-{route[1]}"] = (_thr(route), rate, mu, sg)
    for name, cols in methods:
        ts = _score(res.true_d, cols)  # (ne, nk)
        per_edit[name] = {e: float((ts[i] <= 0).mean()) for i, e in enumerate(res.edits)}
        fd[name] = int((_score(res.distractor_d, cols) <= 0).sum())
        fw[name] = int((res.wrong_score[name] <= 0).sum())
        rates = [fits[f"{ROUTES[c][0]}-{ROUTES[c][1]}"][1] for c in cols]
        # a route present for too few pairs to fit adds nothing known: the sum of the fitted
        # ones is kept and the method is marked as a lower bound (``unfitted``)
        est[name] = float(np.nansum(rates))
        unfitted[name] = sum(math.isnan(r) for r in rates)
    geo = res.geometric_local
    lfit = local_tail_rate(geo.ravel(), n_pairs, R.LOCAL_MIN_INLIERS)
    scene_fit = None
    if res.config.local and res.distractor_scene is not None and len(res.distractor_scene):
        sc = res.distractor_scene
        pdq = np.minimum(sc[:, 0], BIG).astype(np.int16)
        p_pdq = tail_rate(pdq, R.SCENE_PDQ_MAX)[0] if len(pdq) >= 1000 else float("nan")
        p_rd = share_tail_rate(sc[:, 1], R.SCENE_REDETECT_MIN)
        hash_miss = _score(res.distractor_d, methods[-1][1]) > 0
        geo_false = int((hash_miss & (geo >= R.LOCAL_MIN_INLIERS)).sum())
        scene_fit = (p_pdq, p_rd, len(sc), geo_false)
    if res.config.local:
        full_cols = methods[-1][1]
        name = "+local"
        names.append(name)
        ts = _score(res.true_d, full_cols)
        ok = (ts <= 0) | (res.true_local >= R.LOCAL_MIN_INLIERS)
        per_edit[name] = {e: float(ok[i].mean()) for i, e in enumerate(res.edits)}
        fd[name] = fd[methods[-1][0]] + int(
            ((_score(res.distractor_d, full_cols) > 0)
             & (res.distractor_local >= R.LOCAL_MIN_INLIERS)).sum())
        fw[name] = int(((res.wrong_score[methods[-1][0]] <= 0)
                        | (res.wrong_local >= R.LOCAL_MIN_INLIERS)).sum())
        # a chance alignment must pass both checks: P(geometry) x P(scene check | candidate)
        p_scene = 1.0 if scene_fit is None else min(1.0, np.nansum(scene_fit[:2]))
        est[name] = est[methods[-1][0]] + lfit[0] * p_scene
        unfitted[name] = unfitted[methods[-1][0]] + int(math.isnan(lfit[0]))
    if res.partner_found is not None:
        # partner mode: the CSV export in a fresh database, matched by the Matcher (hash tier)
        names.append("partner")
        per_edit["partner"] = {e: float(res.partner_found[i].mean())
                               for i, e in enumerate(res.edits)}
        fd["partner"] = int(res.partner_distractor)
        fw["partner"] = int(res.partner_wrong.sum())
        est["partner"] = est[methods[-1][0]]  # the same routes as the robust hash tier
        unfitted["partner"] = unfitted[methods[-1][0]]
    mean = {m: float(np.mean(list(per_edit[m].values()))) for m in names}
    return Summary(names, per_edit, fd, fw, est, mean, fits, lfit, n_pairs, scene_fit,
                   unfitted)


def _rate_cell(rate: float, unfitted: int) -> str:
    if math.isnan(rate) or (unfitted and rate == 0):
        return "n/a"
    return f">= {rate:.1e}" if unfitted else f"{rate:.1e}"


def markdown(res: EvalResult, s: Summary) -> str:
    nk, nd = len(res.known), len(res.distractors)
    lines = [
        f"Known images: {nk}; fillers (combined edits only): {len(res.fillers)}; "
        f"distractors: {nd}; distractor x known pairs: {s.n_pairs:,}; "
        f"edits: {len(res.edits)}; queries: {len(res.edits) * nk:,}; seed {res.config.seed}.",
        "",
        "| edit | family | " + " | ".join(s.methods) + " |",
        "|---|---|" + "---:|" * len(s.methods),
    ]
    for e in res.edits:
        cells = [f"{100 * s.per_edit[m][e]:.1f}" for m in s.methods]
        lines.append(f"| {e} | {EDITS[e].family} | " + " | ".join(cells) + " |")
    lines.append("| **mean recall %** | | " + " | ".join(
        f"**{100 * s.mean_recall[m]:.1f}**" for m in s.methods) + " |")
    combined = [e for e in res.edits if e in COMBINED_EDITS]
    single = [e for e in res.edits if e not in COMBINED_EDITS]
    if combined and single:
        for label, group in (("single edits", single), ("edits in combination", combined)):
            lines.append(f"| mean recall %, {label} ({len(group)}) | | " + " | ".join(
                f"{100 * np.mean([s.per_edit[m][e] for e in group]):.1f}"
                for m in s.methods) + " |")
    lines.append("| false matches, distractor x known | | " + " | ".join(
        str(s.false_distractor[m]) for m in s.methods) + " |")
    lines.append("| false matches, edited query -> wrong known | | " + " | ".join(
        str(s.false_wrong_known[m]) for m in s.methods) + " |")
    lines.append("| est. false-match rate per pair | | " + " | ".join(
        _rate_cell(s.est_rate[m], s.unfitted.get(m, 0)) for m in s.methods) + " |")
    if any(s.unfitted.values()):
        lines += ["", "(>= : the sum of the routes that could be fitted; routes marked n/a below "
                  "existed for fewer than 1,000 distractor x known pairs, too few for a tail "
                  "fit, and are left out. Run with more known images or distractors to fit "
                  "them.)"]
    lines += ["", "Per-route tail fits (distractor x known, per-pair min distance over the "
              "route's variant pairs):", "",
              "| route (query-known) | threshold | est. P(d <= t) | fitted mu | fitted sigma | "
              "empirical min |", "|---|---:|---:|---:|---:|---:|"]
    for r, route in enumerate(ROUTES):
        t, rate, mu, sg = s.route_fits[f"{route[0]}-{route[1]}"]
        mn = int(res.distractor_d[..., r].min()) if res.distractor_d.size else BIG
        present = int((res.distractor_d[..., r] < BIG).sum())
        cell = f"n/a ({present:,} pairs)" if math.isnan(rate) else f"{rate:.1e}"
        mu_s, sg_s = ("-" if math.isnan(x) else f"{x:.1f}" for x in (mu, sg))
        lines.append(f"| {route[0]}-{route[1]} | {t} | {cell} | {mu_s} | {sg_s} | "
                     f"{mn if mn < BIG else '-'} |")
    if res.config.local:
        geo = res.geometric_local
        lines += ["", f"Local tier: distractor pairs that reached the geometric check: "
                  f"{int((geo > 0).sum()):,}; max inliers seen "
                  f"{int(geo.max())}; geometric tail fit P(inliers >= "
                  f"{R.LOCAL_MIN_INLIERS}) = {_rate_cell(s.local_fit[0], 0)} per pair (decay "
                  f"{'n/a' if math.isnan(s.local_fit[1]) else f'{s.local_fit[1]:.2f}'} per "
                  "inlier; n/a: too few chance alignments to fit a slope, the rate is then "
                  "the rule-of-three bound)."]
        if s.scene_fit is not None:
            p_pdq, p_rd, n_sc, geo_false = s.scene_fit
            lines += ["", f"Scene check on {n_sc:,} distractor candidates that got a transform: "
                      f"P(aligned PDQ <= {R.SCENE_PDQ_MAX}) = {_rate_cell(p_pdq, 0)} (normal tail "
                      f"fit, n/a under 1,000 candidates), "
                      f"P(re-detected share >= {R.SCENE_REDETECT_MIN} with >= "
                      f"{R.SCENE_REFOUND_MIN} keypoints) = {_rate_cell(p_rd, 0)} (exponential "
                      f"tail fit, or 3/n when too thin to fit), highest such share seen "
                      f"{res.distractor_scene[:, 1].max():.3f}, lowest aligned PDQ "
                      f"{int(res.distractor_scene[:, 0].min())}; the geometric check alone "
                      f"would have made {geo_false} false match(es) at >= "
                      f"{R.LOCAL_MIN_INLIERS} inliers."]
    if res.partner_found is not None:
        lines += ["", f"Partner mode (column `partner`): the known set added to a custodian "
                  f"database, exported to CSV "
                  f"({res.timings.get('partner_csv_bytes_per_known', 0):.0f} bytes per known "
                  f"image), imported into a fresh database and matched by the Matcher there "
                  f"(hash tier, every exported view, no keypoints); its false-match row "
                  f"counts distractor queries that matched anything."]
    kh = res.n_known_hashes
    lines += ["", f"Hashes stored per known image: mean {kh.mean():.2f} (1 interchange PDQ + "
              f"{kh.mean() - 1:.2f} extra); query hashes per image: mean "
              f"{np.mean(res.n_query_hashes):.1f}; local features per known image: mean "
              f"{np.mean(res.local_bytes) if res.local_bytes else 0:.0f} bytes.",
              f"Time: known image {1000 * res.timings['known_s_per_image']:.1f} ms, "
              f"edited query {1000 * res.timings['query_s_per_image']:.1f} ms (cascade: local "
              f"tier run for {100 * res.timings.get('local_fraction', 0):.0f}% of them), "
              f"unmatched query (all routes + local tier) "
              f"{1000 * res.timings.get('distractor_s_per_image', 0):.1f} ms; against {nk} "
              f"known, 1 core, decode excluded."]
    return "\n".join(lines)


def plot(res: EvalResult, s: Summary, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = method_routes()
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    bins = np.arange(-40, 140, 2)
    for ax, (name, cols) in zip(axes[:2], (methods[0], methods[-1]), strict=True):
        ts = _score(res.true_d, cols).ravel()
        ds = _score(res.distractor_d, cols).ravel()
        ax.hist(np.clip(ts, -40, 138), bins=bins, alpha=0.6, density=True,
                label="edited copy vs its known")
        ax.hist(np.clip(ds, -40, 138), bins=bins, alpha=0.6, density=True,
                label="distractor x known")
        ax.axvline(0.5, color="k", ls="--", lw=1)
        ax.set_yscale("log")
        ax.set_title(f"{name}: best (distance - route threshold)")
        ax.set_xlabel("distance - threshold (match at <= 0)")
        ax.legend(fontsize=8)
    ax = axes[2]
    order = list(range(len(res.edits)))
    x = np.arange(len(order))
    for m in (s.methods[0], s.methods[1], s.methods[-2], s.methods[-1]):
        ax.plot(x, [100 * s.per_edit[m][res.edits[i]] for i in order], marker=".", lw=1,
                label=m)
    ax.set_xticks(x, [res.edits[i] for i in order], rotation=90, fontsize=6)
    ax.set_ylabel("recall %")
    ax.set_title("recall per edit")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(res: EvalResult, out: Path) -> tuple[Summary, str]:
    """Write robustness.md (the table), robustness.png (distributions) and robustness.npz (raw
    distances) into ``out``; returns the summary and the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    s = summarise(res)
    md = markdown(res, s)
    (out / "robustness.md").write_text(md + "\n")
    plot(res, s, out / "robustness.png")
    np.savez_compressed(out / "robustness.npz", true_d=res.true_d, true_local=res.true_local,
                        wrong_local=res.wrong_local, distractor_d=res.distractor_d,
                        distractor_local=res.distractor_local, edits=np.array(res.edits),
                        routes=np.array([f"{a}-{b}" for a, b in ROUTES]),
                        **{f"wrong_{k}": v for k, v in res.wrong_score.items()})
    return s, md
