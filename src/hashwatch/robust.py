"""Robust "known image" matching: survives borders, flips, turns, small rotations, screenshots,
collages and crops, without more false matches than plain PDQ.

Two tiers, both pure functions of pixels (no store, no I/O):

* **Hash tier** (cheap, PDQ-compatible). A known image is stored as its full-image PDQ (the
  interchange hash, variant ``"full"``) plus a few extra PDQ hashes (border-trimmed picture,
  centred crops), all pointing to the same known image. A query is hashed several ways: the 8
  dihedral variants of the full and of the border-trimmed picture, each rectangular picture
  region found inside a screenshot or collage, and small de-rotations. A pair matches when any
  (query variant, known variant) pair is within that route's threshold (:data:`THRESHOLDS`). The
  plain route ``full``-``full`` keeps Meta's ``<= 31``, so plain PDQ lists work unchanged; the
  extra routes use tighter thresholds so that the summed false-match rate stays below 1e-10.
* **Local tier** (for crops at any position and larger rotations). ORB keypoints of the known
  picture (at most :data:`LOCAL_MAX_KEYPOINTS`, 256-bit descriptors that fit the same Hamming
  index as PDQ) and a geometric check: enough descriptor matches agree on one similarity
  transform (RANSAC) and cover a real part of the picture. Then a scene check: geometry alone
  also accepts another photograph of the same scene taken moments later, so the query is
  warped onto the known picture's frame and must either reproduce a stored PDQ view there or
  show the stored keypoints again in place (:func:`scene_check`; stored data only, the hash
  list never holds pictures).

Hashes here are ``bytes`` of 32 (the PDQ reference bit order, ``bytes.hex()`` gives the
interchange hex).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import pdqhash

__all__ = [
    "LocalStore",
    "LocalVerdict",
    "SceneCheck",
    "RobustIndex",
    "RobustMatch",
    "best_distances",
    "hash_match",
    "query_regions",
    "KnownHash",
    "LocalFeatures",
    "QueryHash",
    "THRESHOLDS",
    "find_regions",
    "known_class",
    "known_local",
    "known_signals",
    "query_class",
    "query_local",
    "query_signals",
    "route_threshold",
    "trim_box",
    "scene_check",
    "fit_local",
    "verify_local",
]

MIN_QUALITY = 50  # Meta's PDQ rule: flatter hashes are discarded on both sides
WORK_SIDE = 256  # hashes are computed at most at this size: PDQ itself looks at 64x64
REGION_SIDE = 512  # regions are found at this size: a box 1% off already costs PDQ ~30 bits

# Centred crops stored for a known image (fraction of each side kept).
KNOWN_CROP_SCALES: tuple[float, ...] = (0.9, 0.8, 0.7, 0.6, 0.5)
# Query de-rotations in degrees (PDQ tolerates about 1 degree).
QUERY_DEROTATIONS: tuple[float, ...] = (-4.0, -2.0, 2.0, 4.0)
MAX_REGIONS = 6

# (query class, known class) -> max Hamming distance. Classes: query "full" (the plain hash),
# "dihedral" (7 other orientations), "trim" (+ its 8 orientations), "region", "derot";
# known "full", "trim", "crop". Tuned on the corpus so the extrapolated false-match rate of all
# routes together stays <= 1e-10 per pair (see evaluate.py / BENCHMARKS for the method).
THRESHOLDS: dict[tuple[str, str], int] = {
    ("full", "full"): 31,
    ("dihedral", "full"): 31,
    ("trim", "full"): 31,
    ("trim", "trim"): 31,
    ("full", "trim"): 31,
    ("dihedral", "trim"): 31,
    ("region", "full"): 31,
    ("region", "trim"): 31,
    ("derot", "full"): 31,
    ("derot", "trim"): 31,
    ("full", "crop"): 31,
    ("trim", "crop"): 31,
    ("region", "crop"): 31,
    ("dihedral", "crop"): 31,
}


@dataclass(frozen=True)
class _ViewHash:
    """One PDQ of one view of a picture; ``variant`` names the view."""

    variant: str
    code: bytes
    quality: int

    @property
    def hex(self) -> str:
        return self.code.hex()


class KnownHash(_ViewHash):
    """A PDQ stored for a known image."""


class QueryHash(_ViewHash):
    """A PDQ computed from a query image."""


def known_class(variant: str) -> str:
    """Route class of a known variant: "full", "trim" or "crop"."""
    if variant in ("full", "trim"):
        return variant
    return "crop"


def query_class(variant: str) -> str:
    """Route class of a query variant: full, dihedral, trim, region or derot."""
    if variant == "full":
        return "full"
    if variant.startswith("full:"):
        return "dihedral"
    for c in ("trim", "region", "derot"):
        if variant.startswith(c):
            return c
    raise ValueError(f"unknown query variant {variant!r}")


def route_threshold(query_variant: str, known_variant: str) -> int | None:
    """Max distance at which this pair of variants counts as a match (None: never compared)."""
    return THRESHOLDS.get((query_class(query_variant), known_class(known_variant)))


# --- helpers ---------------------------------------------------------------------------------


def _check(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim != 3 or pixels.shape[2] < 3 or pixels.dtype != np.uint8:
        raise ValueError("pixels must be an (h, w, 3) uint8 array")
    if pixels.shape[0] < 1 or pixels.shape[1] < 1:
        raise ValueError("empty image")
    return np.ascontiguousarray(pixels[..., :3])


def _work(pixels: np.ndarray, side: int = WORK_SIDE) -> np.ndarray:
    p = _check(pixels)
    h, w = p.shape[:2]
    s = side / max(h, w)
    if s < 1.0:
        p = cv2.resize(p, (max(1, round(w * s)), max(1, round(h * s))),
                       interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(p)


def query_regions(pixels: np.ndarray) -> list[tuple[int, int, int, int]]:
    """:func:`find_regions` run at REGION_SIDE, boxes mapped back to ``pixels`` coordinates."""
    p = _work(pixels, REGION_SIDE)
    fy, fx = pixels.shape[0] / p.shape[0], pixels.shape[1] / p.shape[1]
    return [(round(y0 * fy), round(y1 * fy), round(x0 * fx), round(x1 * fx))
            for y0, y1, x0, x1 in find_regions(p)]


def _pdq(p: np.ndarray) -> tuple[bytes, int]:
    vec, q = pdqhash.compute(np.ascontiguousarray(p))
    return np.packbits(vec.astype(np.uint8)).tobytes(), int(q)


_DIHEDRAL = ("", ":rot90", ":rot180", ":rot270", ":flipv", ":fliph", ":rot90flipv",
             ":rot90fliph")


def _pdq_dihedral(p: np.ndarray) -> tuple[list[bytes], int]:
    vecs, q = pdqhash.compute_dihedral(np.ascontiguousarray(p))
    return [np.packbits(v.astype(np.uint8)).tobytes() for v in vecs], int(q)


def trim_box(pixels: np.ndarray, *, tol: float = 12.0, spill: float = 0.12,
             max_frac: float = 0.45) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the picture inside uniform borders/letterbox bars.

    A border row/column is one whose pixels stay within ``tol`` of the line's median colour,
    allowing ``spill`` of them to differ; JPEG ringing at the edge of the picture is absorbed by
    trimming one more pixel. Never trims more than ``max_frac`` of a side.
    """
    g = pixels.astype(np.int16)
    h, w = g.shape[:2]

    def run(lines: np.ndarray) -> int:
        # lines: (n, L, 3) from the edge inwards. A border line is near-uniform: at most
        # `spill` of its pixels leave the line's own median colour (room for JPEG ringing, a
        # timestamp, a logo; the colour may change from line to line, e.g. a bubble inside an
        # app background). Looked at in small chunks: most pictures have no border at all.
        k, step = 0, 4
        while k < len(lines):
            chunk = lines[k:k + step]
            ref = np.median(chunk, axis=1, keepdims=True)
            dev = np.abs(chunk - ref).max(axis=2)  # (c, L)
            bad = (dev > tol).mean(axis=1) > spill
            if bad.any():
                k += int(np.argmax(bad))
                break
            k += len(chunk)
            step = min(64, step * 2)
        return k + 1 if k > 0 else 0

    mh, mw = int(h * max_frac), int(w * max_frac)
    if mh < 1 or mw < 1:
        return 0, h, 0, w
    top = run(g[:mh])
    bottom = run(g[::-1][:mh])
    left = run(g[:, :mw].transpose(1, 0, 2))
    right = run(g[:, ::-1][:, :mw].transpose(1, 0, 2))
    y0, y1, x0, x1 = top, h - bottom, left, w - right
    if y1 - y0 < 8 or x1 - x0 < 8:
        return 0, h, 0, w
    return y0, y1, x0, x1


def _seam(gray: np.ndarray, axis: int) -> int | None:
    """Index of a straight full-length seam (two pictures butted together) along ``axis``
    (1: a vertical seam at column x), or None."""
    d = np.abs(np.diff(gray.astype(np.int16), axis=axis))  # differences across the seam
    prof = np.median(d, axis=1 - axis) if axis == 1 else np.median(d, axis=1)
    n = prof.shape[0]
    lo, hi = int(n * 0.15), int(n * 0.85)
    if hi <= lo:
        return None
    inner = prof[lo:hi]
    k = int(np.argmax(inner))
    base = float(np.median(prof)) + 1.0
    x = lo + k
    # a seam is a sharp, isolated, full-length jump: most rows jump there, neighbours do not
    frac = float(((d[:, x] if axis == 1 else d[x, :]) > 12).mean())
    near = max(float(prof[max(0, x - 2)]), float(prof[min(n - 1, x + 2)])) + 1.0
    if inner[k] >= max(12.0, 6.0 * base) and frac >= 0.6 and inner[k] >= 4.0 * near:
        return x + 1
    return None


def _ui_mask(pixels: np.ndarray) -> np.ndarray:
    """Pixels of the few dominant flat colours (app background, bubbles, bars, gutters)."""
    q = (pixels >> 3).astype(np.int32)
    key = (q[..., 0] << 10) | (q[..., 1] << 5) | q[..., 2]
    counts = np.bincount(key.ravel(), minlength=1 << 15)
    top = np.flatnonzero(counts >= 0.005 * key.size)
    g = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    flat = cv2.morphologyEx(g, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) <= 6
    mask = np.zeros(key.shape, np.uint8)
    for k in top[np.argsort(-counts[top])][:8]:
        c = np.array([(k >> 10) & 31, (k >> 5) & 31, k & 31]) * 8 + 4
        m = cv2.inRange(pixels, np.clip(c - 8, 0, 255).astype(np.uint8),
                        np.clip(c + 8, 0, 255).astype(np.uint8))
        # A UI colour is flat where it occurs; a photo's common colour (sky, skin) is not.
        sel = m > 0
        if flat[sel].mean() >= 0.85:
            mask |= m
    return mask > 0


def find_regions(pixels: np.ndarray, *, min_area: float = 0.04) -> list[tuple[int, int, int, int]]:
    """Boxes (y0, y1, x0, x1) of picture-like rectangles inside a screenshot or collage.

    Pixels of the dominant flat colours (UI background, bubbles, bars, gutters) are taken out;
    what is left is opened (drops text strokes) and closed into blobs; each large, solid,
    not-too-thin blob is a candidate. A blob holding pictures butted together is also split at
    straight seams; each box is then border-trimmed.
    """
    h, w = pixels.shape[:2]
    gray = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    content = (~_ui_mask(pixels)).astype(np.uint8)
    k = max(3, (min(h, w) // 80) | 1)
    content = cv2.morphologyEx(content, cv2.MORPH_OPEN, np.ones((k, k), np.uint8))
    content = cv2.morphologyEx(content, cv2.MORPH_CLOSE, np.ones((k, k), np.uint8))
    n, _lab, stats, _ = cv2.connectedComponentsWithStats(content, connectivity=4)
    boxes: list[tuple[int, int, int, int]] = []
    for i in range(1, n):
        x, y, bw, bh, area = (int(v) for v in stats[i])
        if bw * bh < min_area * h * w or min(bw, bh) < 16:
            continue
        if area < 0.6 * bw * bh or max(bw / bh, bh / bw) > 4.0:
            continue
        boxes.append((y, y + bh, x, x + bw))
    out: list[tuple[int, int, int, int]] = []
    stack = [(b, 0) for b in boxes]
    while stack and len(out) < 4 * MAX_REGIONS:
        (y0, y1, x0, x1), depth = stack.pop()
        ty0, ty1, tx0, tx1 = trim_box(pixels[y0:y1, x0:x1])
        out.append((y0 + ty0, y0 + ty1, x0 + tx0, x0 + tx1))
        if depth >= 2:
            continue
        sub = gray[y0:y1, x0:x1]
        cut = _seam(sub, 1)
        if cut is not None:
            stack += [((y0, y1, x0, x0 + cut), depth + 1), ((y0, y1, x0 + cut, x1), depth + 1)]
        cut = _seam(sub, 0)
        if cut is not None:
            stack += [((y0, y0 + cut, x0, x1), depth + 1), ((y0 + cut, y1, x0, x1), depth + 1)]
    # The whole image is not a region (it is hashed anyway); largest first, no duplicates.
    out = [b for b in out if (b[1] - b[0]) * (b[3] - b[2]) < 0.9 * h * w
           and (b[1] - b[0]) >= 16 and (b[3] - b[2]) >= 16]
    out = sorted(set(out), key=lambda b: -(b[1] - b[0]) * (b[3] - b[2]))
    return out[:MAX_REGIONS]


def _rotate(p: np.ndarray, deg: float) -> np.ndarray:
    h, w = p.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), deg, 1.0)
    return cv2.warpAffine(p, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def _centre(p: np.ndarray, s: float) -> np.ndarray:
    h, w = p.shape[:2]
    ch, cw = max(8, round(h * s)), max(8, round(w * s))
    y, x = (h - ch) // 2, (w - cw) // 2
    return p[y:y + ch, x:x + cw]


# --- public: hash tier ---------------------------------------------------------------------


def known_signals(pixels: np.ndarray, *, crops: Sequence[float] = KNOWN_CROP_SCALES
                  ) -> list[KnownHash]:
    """PDQ hashes to store for one known image. The first is always the full-image PDQ
    (variant "full", the interchange hash, kept even if its quality is low so the entry exists);
    extra variants with quality < 50 are left out."""
    # The interchange hash is PDQ of the pixels as given (same as signals.pdq.pdq_hash), so
    # a list built here and a partner's plain PDQ list hold the same value for the same file.
    code, q = _pdq(_check(pixels))
    out = [KnownHash("full", code, q)]
    p = _work(pixels)
    y0, y1, x0, x1 = trim_box(p)
    core = p
    if (y0, y1, x0, x1) != (0, p.shape[0], 0, p.shape[1]):
        core = p[y0:y1, x0:x1]
        c, cq = _pdq(core)
        if cq >= MIN_QUALITY:
            out.append(KnownHash("trim", c, cq))
    for s in crops:
        c, cq = _pdq(_centre(core, s))
        if cq >= MIN_QUALITY:
            out.append(KnownHash(f"crop{round(s * 100)}", c, cq))
    return out


def query_signals(pixels: np.ndarray, *, regions: bool = True, derotate: bool = True,
                  boxes: Sequence[tuple[int, int, int, int]] | None = None) -> list[QueryHash]:
    """PDQ hashes to compute for one query image (the first is the plain full-image PDQ).
    Variants with quality < 50 are left out, except the first. ``boxes``: regions already found
    by :func:`query_regions` (else they are found here)."""
    codes, q = _pdq_dihedral(_check(pixels))
    out = [QueryHash("full", codes[0], q)]
    p = _work(pixels)
    if q >= MIN_QUALITY:
        out += [QueryHash("full" + _DIHEDRAL[i], codes[i], q) for i in range(1, 8)]
    h, w = p.shape[:2]
    y0, y1, x0, x1 = trim_box(p)
    core = p
    if (y1 - y0) * (x1 - x0) < 0.98 * h * w:
        core = p[y0:y1, x0:x1]
        tc, tq = _pdq_dihedral(core)
        if tq >= MIN_QUALITY:
            out += [QueryHash("trim" + _DIHEDRAL[i], tc[i], tq) for i in range(8)]
    if regions:
        if boxes is None:
            boxes = query_regions(pixels)
        for i, (ry0, ry1, rx0, rx1) in enumerate(boxes):
            rc, rq = _pdq(_work(pixels[ry0:ry1, rx0:rx1]))
            if rq >= MIN_QUALITY:
                out.append(QueryHash(f"region{i}", rc, rq))
    if derotate:
        for a in QUERY_DEROTATIONS:
            rc, rq = _pdq(_rotate(core, a))
            if rq >= MIN_QUALITY:
                out.append(QueryHash(f"derot{a:+g}", rc, rq))
    return out


def _bits(codes: Iterable[bytes]) -> np.ndarray:
    return np.unpackbits(np.frombuffer(b"".join(codes), np.uint8).reshape(-1, 32), axis=1)


def best_distances(query: Sequence[QueryHash], known: Sequence[KnownHash]
                   ) -> dict[tuple[str, str], tuple[int, str, str]]:
    """Per route: (min distance, query variant, known variant) over all compared pairs."""
    if not query or not known:
        return {}
    qb, kb = _bits(h.code for h in query), _bits(h.code for h in known)
    d = (qb[:, None, :] != kb[None, :, :]).sum(axis=2)
    best: dict[tuple[str, str], tuple[int, str, str]] = {}
    for i, qh in enumerate(query):
        for j, kh in enumerate(known):
            r = (query_class(qh.variant), known_class(kh.variant))
            if r not in THRESHOLDS:
                continue
            if (qh.quality < MIN_QUALITY or kh.quality < MIN_QUALITY) and r != ("full", "full"):
                continue
            v = int(d[i, j])
            if r not in best or v < best[r][0]:
                best[r] = (v, qh.variant, kh.variant)
    return best


def hash_match(query: Sequence[QueryHash], known: Sequence[KnownHash]
               ) -> tuple[int, str, str] | None:
    """The best matching (distance, query variant, known variant) within its route threshold,
    ranked by distance minus threshold, or None."""
    best = best_distances(query, known)
    hits = [(v - THRESHOLDS[r], v, qv, kv) for r, (v, qv, kv) in best.items()
            if v <= THRESHOLDS[r]]
    if not hits:
        return None
    _, v, qv, kv = min(hits)
    return v, qv, kv


# --- public: local tier --------------------------------------------------------------------

LOCAL_MAX_KEYPOINTS = 200  # per known image: 200 x (32 B descriptor + 8 B position) = 8 KB
LOCAL_MATCH_RADIUS = 48  # max descriptor distance for a tentative match
LOCAL_KNN = 5  # stored descriptors looked at per query descriptor
LOCAL_MIN_INLIERS = 15  # geometric inliers needed (see BENCHMARKS for the tail fit)
LOCAL_MIN_COVER = 0.04  # inliers' hull covers this much of the known picture or the query
# The scene check (after the geometric one): an edited copy reproduces the known picture's
# pixels, another photograph of the same scene (a burst, moments apart) does not. Either test
# proves "same picture": a stored view's PDQ within SCENE_PDQ_MAX of the query warped onto it,
# or SCENE_REDETECT_MIN of the stored keypoints found again, in place, in the warped query.
SCENE_PDQ_MAX = 36
SCENE_REDETECT_MIN = 0.18
SCENE_REFOUND_MIN = 8  # ... and at least this many of them (a share of 1 of 1 proves nothing)
SCENE_COVERED = 0.97  # a stored view is compared only when the query covers this much of it


@dataclass
class LocalFeatures:
    """ORB keypoints of one picture at working size: positions (n, 2) float32 in pixels of an
    image of ``size`` (w, h), descriptors (n, 32) uint8."""

    xy: np.ndarray
    desc: np.ndarray
    size: tuple[int, int]
    extra: dict[str, object] = field(default_factory=dict)

    def nbytes(self) -> int:
        """Bytes of the stored form (:func:`encode_local`) without its 18-byte header:
        descriptors + float32 positions."""
        return int(self.desc.shape[0]) * (32 + 8)


_ORB_CACHE: dict[tuple[int, int], cv2.ORB] = {}


def _orb(n: int, fast: int = 10) -> cv2.ORB:
    if (n, fast) not in _ORB_CACHE:
        _ORB_CACHE[n, fast] = cv2.ORB_create(nfeatures=n, scaleFactor=1.2, nlevels=8,
                                             edgeThreshold=15, patchSize=31, fastThreshold=fast)
    return _ORB_CACHE[n, fast]


def _local(pixels: np.ndarray, n: int, side: int, min_side: int) -> LocalFeatures:
    p = pixels[..., :3]
    h, w = p.shape[:2]
    # Big pictures are reduced to `side`; small ones enlarged to `min_side` (at most 3x):
    # ORB's 31-px patches find almost nothing in a 128-px thumbnail.
    s = side / max(h, w)
    if s > 1.0:
        s = min(3.0, max(1.0, min_side / max(h, w)))
    g = cv2.cvtColor(np.ascontiguousarray(p), cv2.COLOR_RGB2GRAY)
    if s != 1.0:
        g = cv2.resize(g, (max(1, round(w * s)), max(1, round(h * s))),
                       interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    orb = _orb(4 * n)
    found = orb.detect(g, None)
    if len(found) < n:
        # Soft pictures (small, upscaled, out of focus) have few strong corners: lower the
        # FAST threshold rather than leave them almost without keypoints.
        orb = _orb(4 * n, 3)
        found = orb.detect(g, None)
    kps = _spread(found, n, g.shape[1], g.shape[0])
    desc = None
    if kps:
        kps, desc = orb.compute(g, kps)
    if desc is None or not kps:
        return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8),
                             (g.shape[1], g.shape[0]), {"view": g})
    xy = np.array([k.pt for k in kps], np.float32)
    return LocalFeatures(xy, desc, (g.shape[1], g.shape[0]), {"view": g})


def _spread(kps: Sequence[cv2.KeyPoint], n: int, w: int, h: int, grid: int = 4
            ) -> list[cv2.KeyPoint]:
    """At most n keypoints, spread over a grid x grid layout: each cell keeps its strongest
    n/grid^2 first, the rest of the budget goes to the strongest left over. Without this the
    keypoints pile up on the most textured part, and a crop of a quiet part or one picture of
    a collage has too few of them."""
    if len(kps) <= n:
        return list(kps)
    resp = np.array([k.response for k in kps])
    cell = np.array([min(grid - 1, int(k.pt[0] * grid / w)) * grid
                     + min(grid - 1, int(k.pt[1] * grid / h)) for k in kps])
    order = np.argsort(-resp, kind="stable")
    quota = n // (grid * grid)
    taken = np.zeros(len(kps), bool)
    used = np.zeros(grid * grid, int)
    for i in order:
        if used[cell[i]] < quota:
            used[cell[i]] += 1
            taken[i] = True
    rest = [i for i in order if not taken[i]][: n - int(taken.sum())]
    taken[rest] = True
    return [kps[i] for i in order if taken[i]]


def known_local(pixels: np.ndarray) -> LocalFeatures:
    """ORB features to store for one known image (at most LOCAL_MAX_KEYPOINTS). Never the
    picture itself: a hash list must not hold images."""
    f = _local(pixels, LOCAL_MAX_KEYPOINTS, 400, 384)
    f.extra.pop("view", None)
    return f


def query_local(pixels: np.ndarray, boxes: Sequence[tuple[int, int, int, int]] | None = None,
                max_regions: int = 4) -> LocalFeatures:
    """ORB features of a query: the whole picture, plus each picture region found inside a
    screenshot or collage (its own keypoint budget, so UI text and the other pictures do not
    crowd it out), all in the coordinates of the whole picture at its working size."""
    # Queries are enlarged less than known pictures (a crop of a known picture is already
    # shown bigger than the known picture's part of it; ORB's pyramid spans about 3.5x).
    full = _local(pixels, 2 * LOCAL_MAX_KEYPOINTS, 600, 200)
    if boxes is None:
        boxes = query_regions(pixels)
    h, w = pixels.shape[:2]
    sx, sy = full.size[0] / w, full.size[1] / h
    xys, descs = [full.xy], [full.desc]
    for y0, y1, x0, x1 in list(boxes)[:max_regions]:
        if (y1 - y0) * (x1 - x0) > 0.8 * h * w:
            continue
        r = _local(pixels[y0:y1, x0:x1], LOCAL_MAX_KEYPOINTS, 400, 200)
        if len(r.desc) == 0:
            continue
        # region working px -> region px -> picture px -> picture working px
        fx, fy = (x1 - x0) / r.size[0], (y1 - y0) / r.size[1]
        xy = np.stack([(r.xy[:, 0] * fx + x0) * sx, (r.xy[:, 1] * fy + y0) * sy], axis=1)
        xys.append(xy.astype(np.float32))
        descs.append(r.desc)
    # the grey picture at working size stays with the query (never stored): the scene check
    # warps it onto candidate known pictures
    return LocalFeatures(np.concatenate(xys), np.concatenate(descs), full.size,
                         {"view": full.extra["view"]})


def local_pairs(q: LocalFeatures, k: LocalFeatures) -> np.ndarray:
    """Tentative matches (i, j): mutual nearest neighbours within LOCAL_MATCH_RADIUS."""
    if len(q.desc) == 0 or len(k.desc) == 0:
        return np.zeros((0, 2), np.int64)
    qb = np.unpackbits(q.desc, axis=1).astype(np.float32) * 2 - 1
    kb = np.unpackbits(k.desc, axis=1).astype(np.float32) * 2 - 1
    d = (256 - qb @ kb.T) / 2
    j = d.argmin(axis=1)
    i2 = d.argmin(axis=0)
    i = np.arange(len(j))
    ok = (i2[j] == i) & (d[i, j] <= LOCAL_MATCH_RADIUS)
    return np.stack([i[ok], j[ok]], axis=1)


def fit_local(q: LocalFeatures, k: LocalFeatures, pairs: np.ndarray | None = None
              ) -> tuple[int, bool, np.ndarray | None]:
    """(inliers, geometry sane?, transform) of the geometric check: a similarity transform
    (rotation, uniform scale, shift; a mirrored query should be un-mirrored before) fitted with
    RANSAC to the tentative matches, mapping known working pixels to query working pixels.
    "Sane": the inliers spread over LOCAL_MIN_COVER of the known picture or the query, and the
    scale is 0.2-5. The inlier count is not judged here."""
    if pairs is None:
        pairs = local_pairs(q, k)
    if len(pairs) < max(4, LOCAL_MIN_INLIERS // 2):
        return len(pairs) // 4, False, None
    src = k.xy[pairs[:, 1]]
    dst = q.xy[pairs[:, 0]]
    m, inl = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=4.0,
                                         maxIters=500, confidence=0.99, refineIters=5)
    if m is None or inl is None:
        return 0, False, None
    inl = inl.ravel().astype(bool)
    n = int(inl.sum())
    scale = float(np.hypot(m[0, 0], m[1, 0]))
    if n < 3:
        return n, False, m
    # The agreeing keypoints must spread over a real part of the known picture (a collage
    # cell shows much of it) or of the query (a tight crop fills the query): not one logo.
    ck = cv2.contourArea(cv2.convexHull(src[inl].astype(np.float32))) / (k.size[0] * k.size[1])
    cq = cv2.contourArea(cv2.convexHull(dst[inl].astype(np.float32))) / (q.size[0] * q.size[1])
    cover = max(float(ck), float(cq))
    return n, cover >= LOCAL_MIN_COVER and 0.2 <= scale <= 5.0, m


def verify_local(q: LocalFeatures, k: LocalFeatures, pairs: np.ndarray | None = None
                 ) -> tuple[int, bool]:
    """(inliers, geometric match?): :func:`fit_local` and LOCAL_MIN_INLIERS; the scene check
    (:func:`scene_check`) still has to follow before this is a match."""
    n, sane, _ = fit_local(q, k, pairs)
    return n, sane and n >= LOCAL_MIN_INLIERS


_POPCOUNT = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1)


@dataclass(frozen=True)
class SceneCheck:
    """Same picture, or another photograph of the same scene? (see SCENE_PDQ_MAX)"""

    pdq: int  # best distance of a covered stored view to the aligned query (256: none covered)
    redetect: float  # share of the stored keypoints inside the overlap found again in place
    refound: int = 0  # how many that is

    @property
    def redetect_ok(self) -> bool:
        return self.redetect >= SCENE_REDETECT_MIN and self.refound >= SCENE_REFOUND_MIN

    @property
    def ok(self) -> bool:
        return self.pdq <= SCENE_PDQ_MAX or self.redetect_ok


def scene_check(q: LocalFeatures, k: LocalFeatures, transform: np.ndarray,
                known_hashes: Sequence[KnownHash]) -> SceneCheck:
    """Warp the query (its grey working picture, ``q.extra["view"]``) onto the known picture's
    frame with the fitted transform, then (1) PDQ every stored view it covers and compare with
    the stored hash, (2) run ORB on it and count the stored keypoints found again within 2 px
    and 40 descriptor bits. Uses only stored data of the known image: no known pixels."""
    view = q.extra.get("view")
    if not isinstance(view, np.ndarray):
        raise ValueError("query features carry no view: use query_local()")
    m = np.asarray(transform, np.float64)[:2]
    kw, kh = k.size
    qh, qw = view.shape[:2]
    inv = cv2.WARP_INVERSE_MAP
    warp = cv2.warpAffine(view, m, (kw, kh), flags=cv2.INTER_LINEAR | inv,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    valid = cv2.warpAffine(np.full((qh, qw), 255, np.uint8), m, (kw, kh),
                           flags=cv2.INTER_NEAREST | inv, borderValue=0) > 0
    # 1. aligned PDQ. Crop views were cut from the border-trimmed picture when there is one,
    # whose box is not stored: then only the full view is comparable.
    best = 256
    has_trim = any(h.variant == "trim" for h in known_hashes)
    for h in known_hashes:
        if h.variant == "full":
            x0, y0, x1, y1 = 0, 0, kw, kh
        elif h.variant.startswith("crop") and not has_trim:
            f = int(h.variant[4:]) / 100
            x0, y0 = round((kw - kw * f) / 2), round((kh - kh * f) / 2)
            x1, y1 = x0 + round(kw * f), y0 + round(kh * f)
        else:
            continue
        if x1 - x0 < 8 or y1 - y0 < 8 or valid[y0:y1, x0:x1].mean() < SCENE_COVERED:
            continue
        code, _ = _pdq(cv2.cvtColor(warp[y0:y1, x0:x1], cv2.COLOR_GRAY2RGB))
        d = int(_POPCOUNT[np.bitwise_xor(np.frombuffer(code, np.uint8),
                                         np.frombuffer(h.code, np.uint8))].sum())
        best = min(best, d)
    # 2. stored keypoints found again in place (16 px inside the overlap's edge)
    inner = cv2.erode(valid.astype(np.uint8), np.ones((33, 33), np.uint8)) > 0
    kx = np.clip(np.round(k.xy).astype(int), 0, [kw - 1, kh - 1])
    inside = np.flatnonzero(inner[kx[:, 1], kx[:, 0]])
    share, hit = 0.0, 0
    if len(inside):
        orb = _orb(4 * LOCAL_MAX_KEYPOINTS)
        det = orb.detect(warp, None)
        if len(det) < LOCAL_MAX_KEYPOINTS:
            orb = _orb(4 * LOCAL_MAX_KEYPOINTS, 3)
            det = orb.detect(warp, None)
        hit = 0
        if det:
            det, dd = orb.compute(warp, det)
            if dd is not None and len(det):
                dxy = np.array([p.pt for p in det], np.float32)
                for i in inside:
                    near = np.flatnonzero(np.hypot(*(dxy - k.xy[i]).T) <= 2.0)
                    if len(near):
                        bits = _POPCOUNT[np.bitwise_xor(dd[near], k.desc[i])].sum(1)
                        hit += int(bits.min() <= 40)
        share = hit / len(inside)
    return SceneCheck(best, float(share), hit)


@dataclass(frozen=True)
class LocalVerdict:
    """The local tier's judgement of one candidate known image."""

    inliers: int
    sane: bool  # spread and scale of the geometric check
    scene: SceneCheck | None  # None when not run (geometry failed)

    @property
    def checks_pass(self) -> bool:
        """Geometry sane and scene check passed, whatever the inlier count."""
        return self.sane and self.scene is not None and self.scene.ok

    @property
    def ok(self) -> bool:
        return self.checks_pass and self.inliers >= LOCAL_MIN_INLIERS


class LocalStore:
    """Local features of many known images, searched the way the evaluation measured it: each
    query descriptor's nearest stored descriptor (over all known images, within
    LOCAL_MATCH_RADIUS) votes for its image; one query keypoint per stored keypoint; the
    ``top`` images with at least ``min_votes`` votes get the geometric check.

    Exact nearest-neighbour search (faiss IndexBinaryFlat when installed, numpy otherwise): fine
    for the evaluation and lists up to ~10^5 images; a 20M list needs an approximate binary
    index (IVF / bag of words) in its place.
    """

    def __init__(self) -> None:
        self._feats: list[LocalFeatures] = []
        self._ids: list[int] = []
        self._descs: list[np.ndarray] = []
        self._owner: list[np.ndarray] = []
        self._cache: tuple[np.ndarray, np.ndarray, np.ndarray, object] | None = None

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, known_id: int, feats: LocalFeatures) -> None:
        if len(feats.desc) == 0:
            return
        slot = len(self._feats)
        self._feats.append(feats)
        self._ids.append(int(known_id))
        self._descs.append(feats.desc)
        self._owner.append(np.full(len(feats.desc), slot, np.int64))
        self._cache = None

    def _table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, object]:
        if self._cache is None:
            descs = np.ascontiguousarray(np.concatenate(self._descs))
            owner = np.concatenate(self._owner)
            row = np.concatenate([np.arange(len(d)) for d in self._descs])
            index = None
            try:
                import faiss

                index = faiss.IndexBinaryFlat(256)
                index.add(descs)
            except ImportError:  # pragma: no cover - numpy fallback below
                index = None
            self._cache = (descs, owner, row, index)
        return self._cache

    def _nearest(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(q, k) distances and stored-row indices of each query descriptor's k nearest."""
        descs, _, _, index = self._table()
        k = min(k, len(descs))
        if index is not None:
            dist, idx = index.search(np.ascontiguousarray(q), k)
            return dist.astype(np.int64), idx.astype(np.int64)
        qb = np.unpackbits(q, axis=1).astype(np.float32) * 2 - 1
        ds, js = [], []
        for a in range(0, len(descs), 65536):  # chunks keep the distance matrix small
            kb = np.unpackbits(descs[a:a + 65536], axis=1).astype(np.float32) * 2 - 1
            d = np.rint((256 - qb @ kb.T) / 2).astype(np.int64)
            j = np.argsort(d, axis=1, kind="stable")[:, :k]
            ds.append(np.take_along_axis(d, j, axis=1))
            js.append(j + a)
        d, j = np.concatenate(ds, axis=1), np.concatenate(js, axis=1)
        o = np.argsort(d, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(d, o, axis=1), np.take_along_axis(j, o, axis=1)

    def inliers(self, q: LocalFeatures, known_hashes: Callable[[int], Sequence[KnownHash]],
                *, top: int = 3, min_votes: int = 8, scene_all: bool = False
                ) -> dict[int, LocalVerdict]:
        """known id -> verdict for the candidates put to the geometric check. The scene check
        runs for candidates that pass geometry (with ``scene_all``: for every candidate with a
        transform, which the evaluation uses to measure the check on non-matches);
        ``known_hashes(known_id)`` gives the stored PDQ views it compares against."""
        if not self._ids or len(q.desc) == 0:
            return {}
        _, owner, row, _ = self._table()
        # k nearest, not 1: with many known pictures a true partner is often not the single
        # nearest stored descriptor (ORB descriptors are short and repetitive).
        dist, idx = self._nearest(q.desc, LOCAL_KNN)
        qi = np.repeat(np.arange(len(q.desc)), dist.shape[1])
        dist, idx = dist.ravel(), idx.ravel()
        good = dist <= LOCAL_MATCH_RADIUS
        if not good.any():
            return {}
        qi, dist, idx = qi[good], dist[good], idx[good]
        # Per known picture: one correspondence per query keypoint and one per stored keypoint
        # (the closest), so overlapping query passes (whole picture, regions) and the k-NN do
        # not count the same point twice.
        order = np.argsort(dist, kind="stable")
        qi, idx = qi[order], idx[order]
        own = owner[idx]
        _, f1 = np.unique(idx, return_index=True)
        keep = np.zeros(len(idx), bool)
        keep[f1] = True
        qkey = own * (len(q.desc) + 1) + qi
        _, f2 = np.unique(qkey, return_index=True)
        keep2 = np.zeros(len(idx), bool)
        keep2[f2] = True
        sel_all = keep & keep2
        qi, kidx, owners = qi[sel_all], idx[sel_all], own[sel_all]
        votes = np.bincount(owners, minlength=len(self._ids))
        out: dict[int, tuple[int, bool]] = {}
        for slot in np.argsort(-votes, kind="stable")[:top]:
            if votes[slot] < min_votes:
                break
            sel = owners == slot
            pairs = np.stack([qi[sel], row[kidx[sel]]], axis=1)
            kid, kf = self._ids[int(slot)], self._feats[int(slot)]
            n, sane, m = fit_local(q, kf, pairs)
            scene = None
            if m is not None and (scene_all or (sane and n >= LOCAL_MIN_INLIERS)):
                scene = scene_check(q, kf, m, known_hashes(kid))
            out[kid] = LocalVerdict(n, sane, scene)
        return out


# --- a small in-process matcher over both tiers --------------------------------------------


@dataclass(frozen=True)
class RobustMatch:
    """One known image a query matched: which tier and which views met."""

    known_id: int
    tier: str  # "hash" or "local"
    distance: int  # PDQ distance of the best route (hash tier), -1 for the local tier
    threshold: int
    query_variant: str
    known_variant: str
    inliers: int = 0


class RobustIndex:
    """Known images -> hash variants in a :class:`hashwatch.index.HammingIndex` (one row per
    variant, pointing back to the known image), plus optional local features.

    ``add`` takes :func:`known_signals` (and :func:`known_local`) output; ``add_plain`` takes a
    partner's plain PDQ hash, which then matches exactly as plain PDQ does (<= 31) and also
    meets the query's dihedral/trim/region views. ``match`` runs the cascade: hash tier first,
    local tier only when no hash route matched. The local tier here is a brute-force scan
    (fine up to some 10^4 known images; a larger list needs an ANN / bag-of-words index over
    the descriptors, see BENCHMARKS).
    """

    def __init__(self) -> None:
        from hashwatch.index import HammingIndex

        self._index = HammingIndex()
        self._rows: list[tuple[int, str]] = []
        self._hashes: dict[int, list[KnownHash]] = {}  # for the local tier's scene check
        self._local = LocalStore()
        self._radius = max(THRESHOLDS.values())

    def __len__(self) -> int:
        return len({k for k, _ in self._rows})

    def add(self, known_id: int, hashes: Sequence[KnownHash],
            local: LocalFeatures | None = None) -> None:
        rows = [h for h in hashes if h.variant == "full" or h.quality >= MIN_QUALITY]
        if not rows:
            return
        start = len(self._rows)
        self._hashes.setdefault(int(known_id), []).extend(hashes)
        self._rows += [(int(known_id), h.variant) for h in rows]
        codes = np.frombuffer(b"".join(h.code for h in rows), np.uint8).reshape(-1, 32)
        self._index.add(np.arange(start, start + len(rows), dtype=np.int64), codes)
        if local is not None:
            self._local.add(int(known_id), local)

    def add_plain(self, known_id: int, pdq_hex: str, quality: int = 100) -> None:
        self.add(known_id, [KnownHash("full", bytes.fromhex(pdq_hex), quality)])

    def match_hashes(self, query: Sequence[QueryHash]) -> list[RobustMatch]:
        """Hash-tier matches, best (lowest distance minus threshold) first, one per known."""
        if not query:
            return []
        codes = np.frombuffer(b"".join(h.code for h in query), np.uint8).reshape(-1, 32)
        best: dict[int, tuple[int, RobustMatch]] = {}
        for qh, hits in zip(query, self._index.search_many(codes, self._radius), strict=True):
            for row, dist in hits:
                kid, kv = self._rows[row]
                t = route_threshold(qh.variant, kv)
                if t is None or dist > t:
                    continue
                if (query_class(qh.variant), known_class(kv)) != ("full", "full") and (
                        qh.quality < MIN_QUALITY):
                    continue
                score = dist - t
                if kid not in best or score < best[kid][0]:
                    best[kid] = (score, RobustMatch(kid, "hash", dist, t, qh.variant, kv))
        return [m for _, m in sorted(best.values(), key=lambda x: (x[0], x[1].known_id))]

    def match_local(self, q: LocalFeatures) -> list[RobustMatch]:
        """Local-tier matches, most inliers first."""
        res = self._local.inliers(q, self._hashes.__getitem__)
        out = [RobustMatch(k, "local", -1, LOCAL_MIN_INLIERS, "orb", "orb", v.inliers)
               for k, v in res.items() if v.ok]
        return sorted(out, key=lambda m: (-m.inliers, m.known_id))

    def match(self, pixels: np.ndarray, *, local: bool = True) -> list[RobustMatch]:
        """The cascade for one decoded image."""
        boxes = query_regions(pixels)
        hits = self.match_hashes(query_signals(pixels, boxes=boxes))
        if hits or not local or not len(self._local):
            return hits
        return self.match_local(query_local(pixels, boxes))


# -- what the hashing workers compute per file ----------------------------------------------
# These run inside hashwatch.hashing's worker processes on the decoded pixels, so the extra
# views cost no second decode. Results are plain data (picklable, storable).

_LOCAL_MAGIC = b"HWORB1"


def encode_local(feats: LocalFeatures, *, with_view: bool = False) -> bytes:
    """Compact form: header, positions as float32, descriptors. ``with_view`` appends the
    query's grey working picture (for the scene check, between a hashing worker and the
    matcher): never for known images, whose features are stored."""
    n = len(feats.desc)
    head = _LOCAL_MAGIC + np.array([n, feats.size[0], feats.size[1]], "<u4").tobytes()
    body = feats.xy.astype("<f4").tobytes() + feats.desc.astype(np.uint8).tobytes()
    if with_view:
        view = feats.extra["view"]
        assert isinstance(view, np.ndarray) and view.shape == (feats.size[1], feats.size[0])
        body += np.ascontiguousarray(view, np.uint8).tobytes()
    return head + body


def decode_local(data: bytes) -> LocalFeatures:
    if not data.startswith(_LOCAL_MAGIC):
        raise ValueError("not hashwatch local features")
    n, w, h = (int(v) for v in np.frombuffer(data, "<u4", 3, len(_LOCAL_MAGIC)))
    off = len(_LOCAL_MAGIC) + 12
    xy = np.frombuffer(data, "<f4", 2 * n, off).reshape(n, 2).astype(np.float32)
    desc = np.frombuffer(data, np.uint8, 32 * n, off + 8 * n).reshape(n, 32).copy()
    extra: dict[str, object] = {}
    rest = len(data) - (off + 40 * n)
    if rest == w * h:
        extra["view"] = np.frombuffer(data, np.uint8, w * h, off + 40 * n).reshape(h, w).copy()
    elif rest:
        raise ValueError("malformed local features")
    return LocalFeatures(xy, desc, (w, h), extra)


def known_extras(pixels: np.ndarray) -> dict[str, object]:
    """Extra PDQ views (variant, hex, quality) beyond the full hash, and local features."""
    views = known_signals(pixels)
    return {
        "pdq_variants": [(k.variant, k.hex, k.quality) for k in views[1:]],
        "local": encode_local(known_local(pixels)),
    }


def query_extras(pixels: np.ndarray, *, local: bool = False) -> dict[str, object]:
    """Query views beyond the plain full hash (dihedral, trimmed, regions, de-rotations) and,
    when the lists hold local features, the query's own ORB features."""
    boxes = query_regions(pixels)
    views = query_signals(pixels, boxes=boxes)
    out: dict[str, object] = {"pdq_variants": [(q.variant, q.hex, q.quality) for q in views[1:]]}
    if local:
        out["local"] = encode_local(query_local(pixels, boxes), with_view=True)
    return out
