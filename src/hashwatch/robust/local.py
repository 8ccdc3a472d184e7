"""Local features: ORB keypoints of known and query pictures, and their compact stored form."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from hashwatch.robust.regions import query_regions

LOCAL_MAX_KEYPOINTS = 200  # per known image: 200 x (32 B descriptor + 8 B position) = 8 KB
LOCAL_MATCH_RADIUS = 48  # max descriptor distance for a tentative match
LOCAL_KNN = 5  # stored descriptors looked at per query descriptor
LOCAL_MIN_INLIERS = 15  # geometric inliers needed (see BENCHMARKS for the tail fit)
LOCAL_MIN_COVER = 0.04  # inliers' hull covers this much of the known picture or the query


@dataclass
class LocalFeatures:
    """ORB keypoints of one picture at working size: positions (n, 2) float32 in pixels of an
    image of ``size`` (w, h), descriptors (n, 32) uint8; optionally each keypoint's orientation
    ``angle`` (n,) uint8 in 256 steps per turn and pyramid ``octave`` (n,) uint8 (what the
    keypoint index's weak geometric consistency compares; None when unknown)."""

    xy: np.ndarray
    desc: np.ndarray
    size: tuple[int, int]
    extra: dict[str, object] = field(default_factory=dict)
    angle: np.ndarray | None = None
    octave: np.ndarray | None = None

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
                             (g.shape[1], g.shape[0]), {"view": g}, np.zeros(0, np.uint8),
                             np.zeros(0, np.uint8))
    xy = np.array([k.pt for k in kps], np.float32)
    return LocalFeatures(xy, desc, (g.shape[1], g.shape[0]), {"view": g}, _angles(kps),
                         np.array([k.octave & 0xFF for k in kps], np.uint8))


def _angles(kps: Sequence[cv2.KeyPoint]) -> np.ndarray:
    """ORB orientations (degrees) as uint8, 256 steps per turn."""
    a = np.array([k.angle for k in kps], np.float64)
    return (np.round(a * (256.0 / 360.0)).astype(np.int64) % 256).astype(np.uint8)


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
    angs, octs = [full.angle], [full.octave]
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
        angs.append(r.angle)
        octs.append(r.octave)
    # the grey picture at working size stays with the query (never stored): the scene check
    # warps it onto candidate known pictures
    return LocalFeatures(np.concatenate(xys), np.concatenate(descs), full.size,
                         {"view": full.extra["view"]}, np.concatenate(angs), np.concatenate(octs))


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
