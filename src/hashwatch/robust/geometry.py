"""Geometric check of the local tier: tentative keypoint pairs and a RANSAC similarity fit."""

from __future__ import annotations

import cv2
import numpy as np

from hashwatch.robust.local import (
    LOCAL_MATCH_RADIUS,
    LOCAL_MIN_COVER,
    LOCAL_MIN_INLIERS,
    LocalFeatures,
)


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
