"""Geometric check of the local tier: tentative keypoint pairs and a RANSAC fit (similarity,
bounded affine map or bounded homography), for the query and its mirrored pass."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from hashwatch.robust.kpcore import hamming_matrix, kept_tests
from hashwatch.robust.local import (
    LOCAL_MATCH_RADIUS,
    LOCAL_MIN_COVER,
    LOCAL_MIN_INLIERS,
    LocalFeatures,
    mirrored_rows,
)

# A picture whose detail sits in a small part of the frame (one object on a plain ground) has
# its stored keypoints there, and its copies' inliers cover 1.5-3.5% of the frame: astride
# LOCAL_MIN_COVER, passing or failing on one outlying pair at the match radius's edge. Known
# image 34 of the eval's split (stored keypoints' hull 16% of the frame) passed 7 of its 12
# mirrored, trimmed and stretched copies with the 128x32 records and 5 others with 128x24
# (BENCHMARKS.md, issue 11, "No drop after the 128x24 records"); its copies' inliers cover
# 9.4-18% of its own keypoints' hull. Their spread is also judged against that hull, but only
# for a fit with LOCAL_MIN_INLIERS_COMPACT inliers: without that minimum a chance alignment
# inside a small textured patch passed geometry and then the scene check (13 inliers,
# re-detected share 0.305, on the first 750 distractors at 2*10^5 and 10^6), which is what the
# cover rule is there to stop. Those copies have 33-76 inliers; at 10^6 no sane chance fit and
# no homography screen had more than 21, and with the minimum no chance fit changed.
LOCAL_MIN_TEXTURE_COVER = 0.09
LOCAL_MIN_INLIERS_COMPACT = 2 * LOCAL_MIN_INLIERS


def local_pairs(q: LocalFeatures, k: LocalFeatures) -> np.ndarray:
    """Tentative matches (i, j): mutual nearest neighbours within LOCAL_MATCH_RADIUS (on the
    tests a shortened stored descriptor keeps, as :func:`hashwatch.robust.verify.
    candidate_pairs` compares them)."""
    if len(q.desc) == 0 or len(k.desc) == 0:
        return np.zeros((0, 2), np.int64)
    qd, radius = kept_tests(q.desc, LOCAL_MATCH_RADIUS, k)
    d = hamming_matrix(qd, k.desc)
    j = d.argmin(axis=1)
    i2 = d.argmin(axis=0)
    i = np.arange(len(j))
    ok = (i2[j] == i) & (d[i, j] <= radius)
    return np.stack([i[ok], j[ok]], axis=1)


# A homography is tried when the similarity finds too few inliers (stretched, sheared, keystoned
# copies). It has 8 degrees of freedom against the similarity's 4, so chance alignments gather
# more inliers: it must reach LOCAL_MIN_INLIERS_HOMOGRAPHY, and be a plausible re-share edit.
LOCAL_MIN_INLIERS_HOMOGRAPHY = 15
# The affine map (6 degrees of freedom) has its own minimum: its chance tail is the heaviest
# of the three models and grows with the list (the nominees are the most alike of N images).
# Per pair among the 8 verified nominees at 10^6 known images: 1.1e-6 at 17 inliers, 9.4e-8 at
# 20, growing as N^0.85-1.06 between 2*10^5 and 10^6. At 20 the keypoint tier's per-query rate
# at 2*10^7 at the nominee ceiling is 9.4e-8 by issue 10's method (1.9e-7 at 17), and no copy
# was lost on the 29 edits measured at 60 known (the geometric combinations, rotations,
# aspect, small pictures), nor (by the fits recorded) at 10^6 (BENCHMARKS.md, issue 10, "The
# affine map's minimum raised to 20").
LOCAL_MIN_INLIERS_AFFINE = 20
HOMOGRAPHY_GAIN = 1.25  # inliers over a passing similarity's for the homography to replace it
MAX_ANISOTROPY = 2.5  # largest / smallest singular value of the local linear map
MAX_PERSPECTIVE = 3.0  # largest / smallest local area scale over the known picture's corners
# The RANSAC homography (1,000 iterations) costs ~11 ms CPU on the chance pairs of a wrong
# nominee, where it never stops early: that was most of a keypoint-tier query's p99. It runs
# only when a screen finds at least this many inliers: OpenCV's USAC (Raguram et al., "USAC",
# TPAMI 2013: hypotheses verified with SPRT) with PROSAC sampling (Chum and Matas, "Matching
# with PROSAC - progressive sample consensus", CVPR 2005: samples drawn from the closest
# descriptor pairs first; the pairs come in that order, see verify.greedy_pairs), then, if
# that finds too few, with uniform sampling; ~0.2-0.3 ms each. Uniform sampling alone missed
# stretched copies at ~16% inliers that RANSAC found (3 of 480 combined-edit queries), PROSAC
# alone missed one fit that uniform sampling found (BENCHMARKS.md, "Query cost of the
# keypoint tier").
HOMOGRAPHY_SCREEN = 10
MODELS = ("similarity", "affine", "homography")  # fitted in this order, each richer one
# replacing the fit so far only on HOMOGRAPHY_GAIN times its inliers (or when it alone passes)


def _as3(m: np.ndarray) -> np.ndarray:
    out = np.eye(3)
    out[: m.shape[0]] = m
    return out


def homography_sane(h: np.ndarray, size: tuple[int, int], *, mirrored: bool = False) -> bool:
    """Whether a known -> query homography is an edit a re-share can make: every corner of the
    known picture maps to a finite point in front of the camera, the corners keep their order
    (convex, not folded; reversed exactly when the query is ``mirrored``), the local scale at
    the centre is 0.2-5, the stretch (singular value ratio) at most MAX_ANISOTROPY and the local
    area scale varies by at most MAX_PERSPECTIVE over the corners."""
    h = np.asarray(h, np.float64)
    kw, kh = size
    pts = np.array([[0, 0], [kw, 0], [kw, kh], [0, kh], [kw / 2, kh / 2]], np.float64)
    den = pts @ h[2, :2] + h[2, 2]
    if not np.all(np.isfinite(h)) or np.any(den <= 1e-9):
        return False
    mapped = (pts @ h[:2, :2].T + h[:2, 2]) / den[:, None]
    quad = mapped[:4]
    edges = np.roll(quad, -1, axis=0) - quad
    turn = edges[:, 0] * np.roll(edges, -1, axis=0)[:, 1] - edges[:, 1] * np.roll(edges, -1,
                                                                                  axis=0)[:, 0]
    want = -1.0 if mirrored else 1.0
    if not np.all(turn * want > 0):
        return False  # folded, twisted or reflected the wrong way
    # Jacobian of the projective map at each point: (A - p h3^T) / den, p the mapped point
    dets, jc = [], None
    for i in range(5):
        j = (h[:2, :2] - np.outer(mapped[i], h[2, :2])) / den[i]
        dets.append(abs(float(np.linalg.det(j))))
        if i == 4:
            jc = j
    assert jc is not None
    sv = np.linalg.svd(jc, compute_uv=False)
    if sv[1] <= 1e-9:
        return False
    scale = float(np.sqrt(sv[0] * sv[1]))
    return (0.2 <= scale <= 5.0 and sv[0] / sv[1] <= MAX_ANISOTROPY
            and max(dets) <= MAX_PERSPECTIVE * max(min(dets), 1e-12))


def _cover(src: np.ndarray, dst: np.ndarray, ksize: tuple[int, int],
           qsize: tuple[int, int]) -> float:
    # The agreeing keypoints must spread over a real part of the known picture (a collage
    # cell shows much of it) or of the query (a tight crop fills the query): not one logo.
    ck = cv2.contourArea(cv2.convexHull(src.astype(np.float32))) / (ksize[0] * ksize[1])
    cq = cv2.contourArea(cv2.convexHull(dst.astype(np.float32))) / (qsize[0] * qsize[1])
    return max(float(ck), float(cq))


def spread_ok(src: np.ndarray, dst: np.ndarray, k: LocalFeatures,
              qsize: tuple[int, int]) -> bool:
    """Whether inliers ``src`` (n, 2) in the known picture ``k``'s pixels and ``dst`` (n, 2) in
    the query's (size ``qsize`` (w, h)) spread enough to be the picture, not one logo: their
    hull covers LOCAL_MIN_COVER of either picture, or, when there are at least
    LOCAL_MIN_INLIERS_COMPACT of them, LOCAL_MIN_TEXTURE_COVER of the hull of ``k``'s own
    stored keypoints (a picture whose detail sits in a small part of the frame)."""
    if _cover(src, dst, k.size, qsize) >= LOCAL_MIN_COVER:
        return True
    if len(src) < LOCAL_MIN_INLIERS_COMPACT:
        return False
    own = cv2.contourArea(cv2.convexHull(np.asarray(k.xy, np.float32)))
    inl = cv2.contourArea(cv2.convexHull(src.astype(np.float32)))
    return own > 0 and inl / own >= LOCAL_MIN_TEXTURE_COVER


def _homography_possible(src: np.ndarray, dst: np.ndarray) -> bool:
    """Whether a homography could gather LOCAL_MIN_INLIERS_HOMOGRAPHY inliers among these
    pairs (given closest descriptor first): the PROSAC or the uniform USAC screen (see
    HOMOGRAPHY_SCREEN) finds at least HOMOGRAPHY_SCREEN."""
    for method in (cv2.USAC_PROSAC, cv2.USAC_DEFAULT):
        _, inl = cv2.findHomography(src, dst, method, 4.0, maxIters=1000, confidence=0.995)
        if inl is not None and int(inl.sum()) >= HOMOGRAPHY_SCREEN:
            return True
    return False


def _fit_group(src: np.ndarray, dst: np.ndarray, k: LocalFeatures, q: LocalFeatures,
               mirrored: bool, model: str = "auto") -> tuple[int, bool, np.ndarray | None]:
    """Similarity, then (if that is not enough) homography, for one pass of the query; see
    :func:`fit_local` for ``model``."""
    qw = q.size[0]
    flip = np.array([[-1.0, 0.0, qw - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    d = dst.copy()
    if mirrored:  # fit in the mirrored frame (no reflection to model), map back after
        d[:, 0] = (qw - 1) - d[:, 0]
    n, sane, best = 0, False, None
    if model in ("auto", "similarity"):
        m, inl = cv2.estimateAffinePartial2D(src, d, method=cv2.RANSAC,
                                             ransacReprojThreshold=4.0, maxIters=500,
                                             confidence=0.99, refineIters=5)
        if m is not None and inl is not None:
            inl = inl.ravel().astype(bool)
            n = int(inl.sum())
            scale = float(np.hypot(m[0, 0], m[1, 0]))
            sane = n >= 3 and spread_ok(src[inl], d[inl], k, q.size) and 0.2 <= scale <= 5.0
            best = _as3(m)

    def take(t: np.ndarray | None, inl: np.ndarray | None, need: int) -> None:
        # a richer model replaces the fit so far when it explains clearly more pairs
        # (HOMOGRAPHY_GAIN), or when it alone passes (the fit so far is not sane, however
        # many inliers it has: a stretched copy's similarity can hold more pairs in a band
        # than the affine map that is the edit); it must be a plausible edit with at least
        # ``need`` inliers
        nonlocal n, sane, best
        if t is None or inl is None:
            return
        inl = inl.ravel().astype(bool)
        nr = int(inl.sum())
        enough = nr >= HOMOGRAPHY_GAIN * n if (sane and n >= LOCAL_MIN_INLIERS) else (
            nr > n or not sane)
        t3 = _as3(t)
        if (nr >= need and enough and homography_sane(t3, k.size)
                and spread_ok(src[inl], d[inl], k, q.size)):
            n, sane, best = nr, True, t3

    if model in ("auto", "affine") and len(src) >= LOCAL_MIN_INLIERS_AFFINE:
        # A stretched or sheared copy is an affine map exactly: its 6 parameters fit from the
        # few, noisy pairs of a small picture rectify it better than a homography's 8, whose
        # spurious perspective terms make the scene check fail (BENCHMARKS.md, issue 11,
        # "perspective and stretch").
        take(*cv2.estimateAffine2D(src, d, method=cv2.RANSAC, ransacReprojThreshold=4.0,
                                   maxIters=500, confidence=0.99, refineIters=5),
             LOCAL_MIN_INLIERS_AFFINE)
    if model in ("auto", "homography") and len(src) >= LOCAL_MIN_INLIERS_HOMOGRAPHY and \
            _homography_possible(src, d):
        # A similarity (or affine map) also fits part of a keystoned copy (one band where the
        # distortion is small), with a transform the scene check then rejects.
        take(*cv2.findHomography(src, d, cv2.RANSAC, 4.0, maxIters=1000, confidence=0.995),
             LOCAL_MIN_INLIERS_HOMOGRAPHY)
    if best is not None and mirrored:
        best = flip @ best
    return n, sane, best


def fit_local(q: LocalFeatures, k: LocalFeatures, pairs: np.ndarray | None = None, *,
              model: str = "auto") -> tuple[int, bool, np.ndarray | None]:
    """(inliers, geometry sane?, transform) of the geometric check, mapping known working
    pixels to query working pixels (a 3x3 matrix).

    The query's own keypoints and those of its mirrored pass (:func:`query_local`) are fitted
    separately, the better fit wins (sane first, then more inliers). Each is fitted with RANSAC
    (Fischler & Bolles 1981) as a similarity (rotation, uniform scale, shift;
    ``cv2.estimateAffinePartial2D``), then as an affine map (``cv2.estimateAffine2D``: stretched
    and sheared copies), then as a homography (``cv2.findHomography``: keystoned copies; only
    after a cheap screen, see HOMOGRAPHY_SCREEN). A richer model replaces the fit so far when
    that did not pass with LOCAL_MIN_INLIERS, or when it has HOMOGRAPHY_GAIN times its inliers;
    it must reach its own minimum (LOCAL_MIN_INLIERS_AFFINE, LOCAL_MIN_INLIERS_HOMOGRAPHY) and
    pass :func:`homography_sane` (a plausible edit: no folds, bounded stretch and keystone).
    "Sane": also the inliers spread over LOCAL_MIN_COVER of the known picture or the query, or
    (LOCAL_MIN_INLIERS_COMPACT of them) over LOCAL_MIN_TEXTURE_COVER of the known picture's own
    keypoints (:func:`spread_ok`), and the scale is 0.2-5. The inlier count is not judged here.

    ``model``: ``"auto"`` as above, or one of MODELS alone (``"similarity"`` is the fit before
    richer models were tried; each is a second try of the scene check,
    :func:`hashwatch.robust.verify.verify`). Raises ValueError for another ``model``."""
    if model not in MODELS and model != "auto":
        raise ValueError(f"unknown geometric model {model!r}")
    if pairs is None:
        pairs = local_pairs(q, k)
    if len(pairs) < max(4, LOCAL_MIN_INLIERS // 2):
        return len(pairs) // 4, False, None
    a, b = mirrored_rows(q)
    in_mirror = (pairs[:, 0] >= a) & (pairs[:, 0] < b)
    best: tuple[int, bool, np.ndarray | None] = (0, False, None)
    for mirrored in (False, True):
        sel = in_mirror if mirrored else ~in_mirror
        if sel.sum() < max(4, LOCAL_MIN_INLIERS // 2):
            continue
        got = _fit_group(k.xy[pairs[sel, 1]], q.xy[pairs[sel, 0]], k, q, mirrored, model)
        if best[2] is None or (got[1], got[0]) > (best[1], best[0]):
            best = got
    if best[2] is None:
        return len(pairs) // 4, False, None
    return best


@dataclass(frozen=True)
class TransformSummary:
    """What a verified known -> query transform (:func:`fit_local`'s 3x3 matrix) says about
    the copy, for people reading a match: ``model`` the least general of MODELS that is the
    matrix (``"homography"`` when it has perspective terms, ``"affine"`` when it stretches or
    shears, else ``"similarity"``), ``mirrored`` when it reflects (a mirrored or flipped copy),
    ``rotation`` in degrees (-180, 180] and ``scale`` (known pixels -> query pixels, geometric
    mean of the singular values) of its linear part at the known picture's centre, ``stretch``
    the ratio of those singular values (1.0 for a similarity)."""

    model: str
    mirrored: bool
    rotation: float
    scale: float
    stretch: float

    @property
    def tag(self) -> str:
        """``model`` plus ``+mirrored`` when it reflects: the suffix of a keypoint match's
        route (``local/orb:affine+mirrored``)."""
        return self.model + ("+mirrored" if self.mirrored else "")


def describe_transform(m: np.ndarray, size: tuple[int, int]) -> TransformSummary:
    """:class:`TransformSummary` of a known -> query transform ``m`` (3x3, or 2x3 affine),
    its linear part taken at the centre of a known picture of ``size`` (width, height) in
    working pixels (a homography's Jacobian there, as :func:`homography_sane` does). Raises
    ValueError for a matrix that is not finite or is singular at the centre."""
    h = _as3(np.asarray(m, np.float64)) if np.shape(m) == (2, 3) else np.asarray(m, np.float64)
    if h.shape != (3, 3) or not np.all(np.isfinite(h)) or abs(h[2, 2]) <= 1e-12:
        raise ValueError("not a finite 3x3 transform")
    h = h / h[2, 2]
    c = np.array([size[0] / 2, size[1] / 2], np.float64)
    den = float(c @ h[2, :2] + 1.0)
    if abs(den) <= 1e-9:
        raise ValueError("the transform sends the picture's centre to infinity")
    mapped = (h[:2, :2] @ c + h[:2, 2]) / den
    j = (h[:2, :2] - np.outer(mapped, h[2, :2])) / den
    sv = np.linalg.svd(j, compute_uv=False)
    if sv[1] <= 1e-12:
        raise ValueError("singular transform")
    det = float(np.linalg.det(j))
    mirrored = det < 0
    # rotation of the reflection-free part: mirror the query's x axis first when it reflects
    jr = np.array([[-1.0, 0.0], [0.0, 1.0]]) @ j if mirrored else j
    rotation = float(np.degrees(np.arctan2(jr[1, 0] - jr[0, 1], jr[0, 0] + jr[1, 1])))
    stretch = float(sv[0] / sv[1])
    # OpenCV's similarity and the mirrored composition keep equal singular values to rounding;
    # a fitted affine map or homography never has exactly zero terms where they differ
    if np.abs(h[2, :2]).max() > 1e-12:
        model = "homography"
    elif stretch > 1.0 + 1e-6:
        model = "affine"
    else:
        model = "similarity"
    return TransformSummary(model, mirrored, 180.0 if rotation == -180.0 else rotation,
                            float(np.sqrt(sv[0] * sv[1])), stretch)


def frame_share(m: np.ndarray, known_size: tuple[int, int], query_size: tuple[int, int]
                ) -> float:
    """Share (0-1) of the query's frame (``query_size``: width, height) that the known picture
    (``known_size``) covers under the known -> query transform ``m`` (3x3, or 2x3 affine): the
    known picture's outline mapped into the query and clipped to the frame, over the frame's
    area. Only the part inside the frame counts: a picture cropped to fill one cell of a
    collage maps to an outline that reaches past the frame's edge. Clipping: Sutherland and
    Hodgman, "Reentrant polygon clipping" (CACM 1974), against the frame's four sides, then
    the shoelace area (``cv2.intersectConvexConvex`` was tried and returns 0 or the whole
    frame when an edge nearly touches the frame's). A mapped corner at or behind the camera
    gives 0.0."""
    h = _as3(np.asarray(m, np.float64)) if np.shape(m) == (2, 3) else np.asarray(m, np.float64)
    kw, kh = known_size
    qw, qh = query_size
    corners = np.array([[0, 0, 1], [kw, 0, 1], [kw, kh, 1], [0, kh, 1]], np.float64) @ h.T
    if np.any(corners[:, 2] <= 1e-12) or qw <= 0 or qh <= 0:
        return 0.0
    poly = [tuple(c) for c in corners[:, :2] / corners[:, 2:]]
    # each side of the frame as (axis, bound, keep the side below the bound?)
    for axis, bound, below in ((0, 0.0, False), (0, float(qw), True), (1, 0.0, False),
                               (1, float(qh), True)):
        out: list[tuple[float, float]] = []
        for i, cur in enumerate(poly):
            prev = poly[i - 1]
            cin = cur[axis] <= bound if below else cur[axis] >= bound
            pin = prev[axis] <= bound if below else prev[axis] >= bound
            if cin != pin:  # the edge crosses the side: keep the crossing point
                t = (bound - prev[axis]) / (cur[axis] - prev[axis])
                out.append((prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])))
            if cin:
                out.append(cur)
        poly = out
        if not poly:
            return 0.0
    xy = np.asarray(poly)
    area = 0.5 * abs(float(np.dot(xy[:, 0], np.roll(xy[:, 1], -1))
                           - np.dot(xy[:, 1], np.roll(xy[:, 0], -1))))
    return float(min(1.0, area / (qw * qh)))


def verify_local(q: LocalFeatures, k: LocalFeatures, pairs: np.ndarray | None = None
                 ) -> tuple[int, bool]:
    """(inliers, geometric match?): :func:`fit_local` and LOCAL_MIN_INLIERS; the scene check
    (:func:`scene_check`) still has to follow before this is a match."""
    n, sane, _ = fit_local(q, k, pairs)
    return n, sane and n >= LOCAL_MIN_INLIERS
