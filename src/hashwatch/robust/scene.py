"""Scene check after the geometric one: the same picture, not another photograph of the scene."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from hashwatch.robust._pixels import _POPCOUNT, _pdq
from hashwatch.robust.kpcore import kept_tests
from hashwatch.robust.local import LOCAL_MAX_KEYPOINTS, LocalFeatures, _orb
from hashwatch.robust.routes import KnownHash

# The scene check (after the geometric one): an edited copy reproduces the known picture's
# pixels, another photograph of the same scene (a burst, moments apart) does not. Either test
# proves "same picture": a stored view's PDQ within SCENE_PDQ_MAX of the query warped onto it,
# or SCENE_REDETECT_MIN of the stored keypoints found again, in place, in the warped query.
SCENE_PDQ_MAX = 36
SCENE_REDETECT_MIN = 0.18
SCENE_REFOUND_MIN = 8  # ... and at least this many of them (a share of 1 of 1 proves nothing)
SCENE_REFOUND_BITS = 40  # a stored keypoint is found again within 2 px and this many bits
SCENE_COVERED = 0.97  # a stored view is compared only when the query covers this much of it


@dataclass(frozen=True)
class SceneCheck:
    """Same picture, or another photograph of the same scene? (see SCENE_PDQ_MAX)

    ``complete`` False: the check stopped at its first proof (:func:`scene_check` with
    ``full=False``): ``pdq`` is the first covered view's distance within SCENE_PDQ_MAX, not
    necessarily the best, and the re-detection was not run (``redetect`` 0.0, ``refound``
    0)."""

    pdq: int  # best distance of a covered stored view to the aligned query (256: none covered)
    redetect: float  # share of the stored keypoints inside the overlap found again in place
    refound: int = 0  # how many that is
    complete: bool = True

    @property
    def redetect_ok(self) -> bool:
        return self.redetect >= SCENE_REDETECT_MIN and self.refound >= SCENE_REFOUND_MIN

    @property
    def ok(self) -> bool:
        return self.pdq <= SCENE_PDQ_MAX or self.redetect_ok


def _refound(dxy: np.ndarray, dd: np.ndarray, kxy: np.ndarray, kdesc: np.ndarray,
             max_bits: int) -> int:
    """How many stored keypoints (positions ``kxy`` (n, 2), descriptors ``kdesc`` (n, 32))
    have a detection (``dxy`` (m, 2), ``dd`` (m, 32)) within 2 px and ``max_bits`` bits.

    All pairs at once; a pair's distance is the same float ``np.hypot`` of the same
    differences a loop over the stored keypoints computed, only for the pairs within 2 px on
    both axes (a hypotenuse within 2 px has both sides within 2 px)."""
    dx = dxy[None, :, 0] - kxy[:, None, 0]
    dy = dxy[None, :, 1] - kxy[:, None, 1]
    i, j = np.nonzero((np.abs(dx) <= 2.0) & (np.abs(dy) <= 2.0))
    near = np.hypot(dx[i, j], dy[i, j]) <= 2.0
    i, j = i[near], j[near]
    bits = _POPCOUNT[np.bitwise_xor(dd[j], kdesc[i])].sum(1)
    return len(np.unique(i[bits <= max_bits]))


def scene_check(q: LocalFeatures, k: LocalFeatures, transform: np.ndarray,
                known_hashes: Sequence[KnownHash], *, full: bool = True) -> SceneCheck:
    """Warp the query (its grey working picture, ``q.extra["view"]``) onto the known picture's
    frame with the fitted transform (2x3 affine or 3x3 homography, known -> query; a mirrored
    query's transform includes the reflection, so the warped query is un-mirrored), then (1)
    PDQ every stored view it covers and compare with
    the stored hash, (2) run ORB on it and count the stored keypoints found again within 2 px
    and SCENE_REFOUND_BITS descriptor bits (scaled to the tests a shortened stored descriptor
    keeps). Uses only stored data of the known image: no known pixels.

    ``full`` False: stop at the first stored view whose PDQ proves the same picture (the
    verdict, :attr:`SceneCheck.ok`, is the same; the re-detection, an ORB pass over the warped
    query, was ~40% of the check's CPU and only measures then): :attr:`SceneCheck.complete`
    is False. Raises ValueError when ``q`` carries no grey working picture."""
    view = q.extra.get("view")
    if not isinstance(view, np.ndarray):
        raise ValueError("query features carry no view: use query_local()")
    t = np.asarray(transform, np.float64)
    kw, kh = k.size
    qh, qw = view.shape[:2]
    inv = cv2.WARP_INVERSE_MAP
    if t.shape == (3, 3) and not np.allclose(t[2], [0.0, 0.0, 1.0]):
        # a homography (stretched, sheared, keystoned copy): rectify the query onto the known
        # picture's frame, then both tests run as for a similarity
        warp = cv2.warpPerspective(view, t, (kw, kh), flags=cv2.INTER_LINEAR | inv,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        valid = cv2.warpPerspective(np.full((qh, qw), 255, np.uint8), t, (kw, kh),
                                    flags=cv2.INTER_NEAREST | inv, borderValue=0) > 0
    else:
        m = t[:2] / (t[2, 2] if t.shape == (3, 3) else 1.0)
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
        if not full and best <= SCENE_PDQ_MAX:
            return SceneCheck(best, 0.0, 0, complete=False)
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
        if det:
            det, dd = orb.compute(warp, det)
            if dd is not None and len(det):
                dxy = np.array([p.pt for p in det], np.float32)
                # a shortened stored descriptor: compare its tests only (keypoint_index)
                dd, max_bits = kept_tests(dd, SCENE_REFOUND_BITS, k)
                hit = _refound(dxy, dd, np.asarray(k.xy)[inside], np.asarray(k.desc)[inside],
                               max_bits)
        share = hit / len(inside)
    return SceneCheck(best, float(share), hit)
