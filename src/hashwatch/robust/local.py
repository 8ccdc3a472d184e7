"""Local features: ORB keypoints of known and query pictures, and their compact stored form."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from hashwatch.robust.regions import (
    RECT_REGION_IOU,
    _iou,
    query_cells,
    query_leaves,
    query_rectangles,
    query_regions,
)

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


# Known pictures' ORB (what lists store): the picture reduced to KNOWN_SIDE px (small ones
# enlarged to KNOWN_MIN_SIDE, at most 3x), KNOWN_LEVELS pyramid levels, FAST threshold
# KNOWN_FAST (3 for pictures with too few corners), KNOWN_CANDIDATES x the kept keypoints as
# candidates for the spread, detected and described in one pass (the same keypoints and
# descriptors as describing the kept ones in a second pass, one pyramid fewer).
KNOWN_SIDE = 400
KNOWN_MIN_SIDE = 384
KNOWN_LEVELS = 8
KNOWN_CANDIDATES = 4
KNOWN_FAST = 10

_ORB_CACHE: dict[tuple[int, int, int], cv2.ORB] = {}


def _orb(n: int, fast: int = 10, levels: int = 8) -> cv2.ORB:
    if (n, fast, levels) not in _ORB_CACHE:
        _ORB_CACHE[n, fast, levels] = cv2.ORB_create(
            nfeatures=n, scaleFactor=1.2, nlevels=levels, edgeThreshold=15, patchSize=31,
            fastThreshold=fast)
    return _ORB_CACHE[n, fast, levels]


def _local(pixels: np.ndarray, n: int, side: int, min_side: int, *, levels: int = 8,
           candidates: int = 4, joint: bool = False, fast: int = 10) -> LocalFeatures:
    """ORB of an RGB picture (h, w, 3) or a grey one (h, w): ``candidates`` x ``n`` detected
    on a ``levels``-level pyramid, ``n`` of them kept by :func:`_spread`. ``joint``: detected
    and described in one call (one pyramid; every candidate described, the kept ones'
    descriptors taken), else the kept ones described in a second call. ``fast``: FAST's
    threshold (3 when fewer than ``n`` are found)."""
    p = pixels if pixels.ndim == 2 else pixels[..., :3]
    h, w = p.shape[:2]
    # Big pictures are reduced to `side`; small ones enlarged to `min_side` (at most 3x):
    # ORB's 31-px patches find almost nothing in a 128-px thumbnail.
    s = side / max(h, w)
    if s > 1.0:
        s = min(3.0, max(1.0, min_side / max(h, w)))
    g = np.ascontiguousarray(p) if p.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(p),
                                                                  cv2.COLOR_RGB2GRAY)
    if s != 1.0:
        g = cv2.resize(g, (max(1, round(w * s)), max(1, round(h * s))),
                       interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    orb = _orb(candidates * n, fast, levels)
    found, desc = orb.detectAndCompute(g, None) if joint else (orb.detect(g, None), None)
    if len(found) < n:
        # Soft pictures (small, upscaled, out of focus) have few strong corners: lower the
        # FAST threshold rather than leave them almost without keypoints.
        orb = _orb(candidates * n, 3, levels)
        found, desc = orb.detectAndCompute(g, None) if joint else (orb.detect(g, None), None)
    keep = _spread_index(found, n, g.shape[1], g.shape[0])
    if joint:
        # in the order ORB's compute() returns provided keypoints (by pyramid level, in the
        # given order within a level), as the two-call form stores them: the keypoint index
        # takes its prefixes (keypoint_index.subset)
        keep = keep[np.argsort([found[i].octave for i in keep], kind="stable")]
        kps = [found[i] for i in keep]
        desc = None if desc is None or not kps else desc[keep]
    else:
        kps = [found[i] for i in keep]
        if kps:
            kps, desc = orb.compute(g, kps)
    if desc is None or not kps:
        return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8),
                             (g.shape[1], g.shape[0]), {"view": g}, np.zeros(0, np.uint8),
                             np.zeros(0, np.uint8))
    xy = cv2.KeyPoint_convert(kps).reshape(-1, 2).astype(np.float32, copy=False)
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
    return [kps[i] for i in _spread_index(kps, n, w, h, grid)]


def _spread_index(kps: Sequence[cv2.KeyPoint], n: int, w: int, h: int, grid: int = 4
                  ) -> np.ndarray:
    """The indices of :func:`_spread`'s keypoints in ``kps``, in its order."""
    if len(kps) <= n:
        return np.arange(len(kps))
    # vectorised (the keypoint loop in Python cost ~1 ms per picture); same picks, same order
    resp = np.array([k.response for k in kps])
    pt = cv2.KeyPoint_convert(kps).astype(np.float64)
    cx = np.minimum(grid - 1, (pt[:, 0] * grid / w).astype(np.int64))
    cy = np.minimum(grid - 1, (pt[:, 1] * grid / h).astype(np.int64))
    order = np.argsort(-resp, kind="stable")
    cell = (cx * grid + cy)[order]
    # each keypoint's rank among its cell's keypoints, strongest first: the first `quota`
    # of each cell are taken
    by_cell = np.argsort(cell, kind="stable")
    starts = np.searchsorted(cell[by_cell], cell[by_cell], side="left")
    rank = np.empty(len(order), np.int64)
    rank[by_cell] = np.arange(len(order)) - starts
    taken = rank < n // (grid * grid)
    # the rest of the budget: the strongest not yet taken
    left = np.flatnonzero(~taken)[: n - int(taken.sum())]
    taken[left] = True
    return order[taken]


def known_local(pixels: np.ndarray) -> LocalFeatures:
    """ORB features to store for one known image (at most LOCAL_MAX_KEYPOINTS). Never the
    picture itself: a hash list must not hold images."""
    f = _local(pixels, LOCAL_MAX_KEYPOINTS, KNOWN_SIDE, KNOWN_MIN_SIDE, levels=KNOWN_LEVELS,
               candidates=KNOWN_CANDIDATES, joint=True, fast=KNOWN_FAST)
    f.extra.pop("view", None)
    return f


def _query_pass(pixels: np.ndarray, boxes: Sequence[tuple[int, int, int, int]],
                max_regions: int) -> LocalFeatures:
    # Queries are enlarged less than known pictures (a crop of a known picture is already
    # shown bigger than the known picture's part of it; ORB's pyramid spans about 3.5x).
    full = _local(pixels, 2 * LOCAL_MAX_KEYPOINTS, 600, 200)
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
    return LocalFeatures(np.concatenate(xys), np.concatenate(descs), full.size,
                         {"view": full.extra["view"]}, np.concatenate(angs), np.concatenate(octs))


LOCAL_TILE_KEYPOINTS = 150  # per box of the small-picture pass
TILE_FRACTION = 0.5  # tiles are half the picture's width and height ...
TILE_STEPS = (0.0, 0.25, 0.5)  # ... at these offsets (3 x 3 tiles, overlapping by half)
TILE_MIN_SIDE = 256  # pictures smaller than this (longer side, px) get no tile pass


def _small_pass(pixels: np.ndarray, work: tuple[int, int],
                boxes: Sequence[tuple[int, int, int, int]]) -> LocalFeatures:
    """ORB over each box with its own budget (LOCAL_TILE_KEYPOINTS), enlarged to the known
    pictures' working size: a picture filling a small part of the frame (one cell of a grid, a
    picture pasted on a busy background, a thumbnail in a screenshot) gets keypoints at the
    scale the known picture's were taken at, whatever else the frame shows. Positions in the
    whole picture's working frame ``work`` (w, h)."""
    h, w = pixels.shape[:2]
    sx, sy = work[0] / w, work[1] / h
    xys, descs, angs, octs = [], [], [], []
    groups: list[int] = []
    for y0, y1, x0, x1 in boxes:
        r = _local(pixels[y0:y1, x0:x1], LOCAL_TILE_KEYPOINTS, 400, 400)
        groups.append(len(r.desc))
        if len(r.desc) == 0:
            continue
        fx, fy = (x1 - x0) / r.size[0], (y1 - y0) / r.size[1]
        xys.append(np.stack([(r.xy[:, 0] * fx + x0) * sx, (r.xy[:, 1] * fy + y0) * sy],
                            axis=1).astype(np.float32))
        descs.append(r.desc)
        angs.append(r.angle)
        octs.append(r.octave)
    if not descs:
        return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8), work,
                             {"groups": groups}, np.zeros(0, np.uint8), np.zeros(0, np.uint8))
    # each box's row count, in box order (0: no keypoints): the keypoint search may look at
    # the boxes one by one (:func:`small_groups`)
    return LocalFeatures(np.concatenate(xys), np.concatenate(descs), work, {"groups": groups},
                         np.concatenate(angs), np.concatenate(octs))


def small_boxes(pixels: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Where the small-picture pass looks: the cells of a grid of pictures
    (:func:`hashwatch.robust.regions.query_cells`) when one is found, else the leaves of a
    collage (:func:`hashwatch.robust.regions.query_leaves`), then pictures pasted onto a busy
    background (:func:`hashwatch.robust.regions.query_rectangles`) and, unless there are 9 or
    more leaves, 3 x 3 overlapping half-size tiles (a pasted picture with soft sides has no
    edges to find). ``pixels``: RGB or grey."""
    cells = query_cells(pixels)
    if cells:
        return cells
    leaves = query_leaves(pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, 2))
    if len(leaves) >= 9:
        return leaves
    return list(leaves) + query_rectangles(pixels, list(leaves)) + _tiles(*pixels.shape[:2])


def _tiles(h: int, w: int) -> list[tuple[int, int, int, int]]:
    th, tw = round(h * TILE_FRACTION), round(w * TILE_FRACTION)
    return [(round(oy * h), min(h, round(oy * h) + th), round(ox * w), min(w, round(ox * w) + tw))
            for oy in TILE_STEPS for ox in TILE_STEPS]


def query_local(pixels: np.ndarray, boxes: Sequence[tuple[int, int, int, int]] | None = None,
                max_regions: int = 4, *, mirror: bool = True, tiles: bool = False,
                rects: Sequence[tuple[int, int, int, int]] | None = None) -> LocalFeatures:
    """ORB features of a query: the whole picture, plus each picture region found inside a
    screenshot or collage (its own keypoint budget, so UI text and the other pictures do not
    crowd it out), all in the coordinates of the whole picture at its working size.

    ``mirror``: the same again on the left-right mirrored picture, appended after them (their
    count in ``extra["mirrored"]``, positions mapped back to the unmirrored frame). ORB is
    invariant to rotation but not to reflection, so a mirrored copy's descriptors do not meet
    the known picture's; the mirrored pass meets them for every reflection (a vertical flip is a
    mirror plus a half turn). The geometric check fits the passes separately
    (:func:`hashwatch.robust.geometry.fit_local`). Cost: a second ORB pass.

    ``tiles``: append the small-picture pass (:func:`small_pass`, count in ``extra["tiles"]``)
    now. By default it is not computed here: the keypoint search computes it from the query's
    grey working picture only when the other passes found nothing
    (:meth:`hashwatch.robust.local_store.LocalStore.inliers`), so a query matched earlier
    never pays for it.

    ``rects``: pictures pasted onto a busy background
    (:func:`hashwatch.robust.regions.query_rectangles` of ``pixels``, in ``pixels``
    coordinates; found here when None): kept with the query, in its working frame
    (``extra["rects"]``), for the small-picture pass, which otherwise sees only the grey
    working picture (where an edge between two colours of equal brightness is gone)."""
    if boxes is None:
        boxes = query_regions(pixels)
    if rects is None:
        rects = query_rectangles(pixels, list(boxes))
    f = _query_pass(pixels, boxes, max_regions)
    # the grey picture at working size stays with the query (never stored): the scene check
    # warps it onto candidate known pictures
    parts = [f]
    fx, fy = f.size[0] / pixels.shape[1], f.size[1] / pixels.shape[0]
    extra: dict[str, object] = {
        "view": f.extra["view"],
        "rects": [(round(y0 * fy), round(y1 * fy), round(x0 * fx), round(x1 * fx))
                  for y0, y1, x0, x1 in rects]}
    if mirror:
        w = pixels.shape[1]
        mboxes = [(y0, y1, w - x1, w - x0) for y0, y1, x0, x1 in boxes]
        m = _query_pass(np.ascontiguousarray(pixels[:, ::-1]), mboxes, max_regions)
        # positions back in the unmirrored frame; angles stay the mirrored picture's own (the
        # pass is matched and fitted on its own)
        m.xy[:, 0] = (f.size[0] - 1) - m.xy[:, 0]
        parts.append(m)
        extra["mirrored"] = len(m.desc)
    if tiles:
        t = small_pass(LocalFeatures(f.xy, f.desc, f.size, {"view": f.extra["view"],
                                                            "rects": extra["rects"]}))
        parts.append(t)
        extra["tiles"] = len(t.desc)
        extra["groups"], extra["merged"] = t.extra["groups"], t.extra["merged"]
    return _concat(parts, f.size, extra)


def _concat(parts: Sequence[LocalFeatures], size: tuple[int, int],
            extra: dict[str, object]) -> LocalFeatures:
    ang = oct_ = None
    if all(p.angle is not None and p.octave is not None for p in parts):
        ang = np.concatenate([p.angle for p in parts])  # type: ignore[misc]
        oct_ = np.concatenate([p.octave for p in parts])  # type: ignore[misc]
    return LocalFeatures(np.concatenate([p.xy for p in parts]),
                         np.concatenate([p.desc for p in parts]), size, extra, ang, oct_)


def small_pass(q: LocalFeatures, *, mirror: bool = False) -> LocalFeatures:
    """The small-picture pass of a query, from its grey working picture (``q.extra["view"]``):
    :func:`_small_pass` over :func:`small_boxes`; positions in ``q``'s frame, all rows marked
    as tile rows. Empty when the picture is smaller than TILE_MIN_SIDE.

    ``mirror``: the same boxes, each box's pixels mirrored left to right before ORB (a
    mirrored picture pasted into a bigger frame: ORB is not invariant to reflection), the
    positions mapped back to the unmirrored frame and all rows marked as mirrored rows instead
    (the geometric check fits them in the mirrored frame, as the whole picture's mirrored
    pass). Same box order and box counts (``extra["groups"]``); costs a second ORB over the
    boxes, the boxes themselves are found once per call."""
    view = q.extra.get("view")
    if not isinstance(view, np.ndarray):
        raise ValueError("query features carry no view: use query_local()")
    if max(view.shape) < TILE_MIN_SIDE:
        boxes: list[tuple[int, int, int, int]] = []
        more: list[tuple[int, int, int, int]] = []
    else:
        boxes = small_boxes(view)
        # the colour picture's rectangles (query_local) that the grey view's boxes miss
        more = []
        for r in q.extra.get("rects", ()):  # type: ignore[attr-defined]
            if all(_iou(r, b) <= RECT_REGION_IOU for b in [*boxes, *more]):
                more.append(tuple(r))  # type: ignore[arg-type]
    if mirror:
        w = view.shape[1]
        out = _small_pass(np.ascontiguousarray(view[:, ::-1]), q.size,
                          [(y0, y1, w - x1, w - x0) for y0, y1, x0, x1 in boxes + more])
        out.xy[:, 0] = (q.size[0] - 1) - out.xy[:, 0]
    else:
        out = _small_pass(view, q.size, boxes + more)
    groups = out.extra["groups"]
    # the tiles are searched only together with the rest: alone, none found a picture the
    # boxes together had missed (BENCHMARKS.md, issue 11, fourth round), and each search
    # costs a nomination and its candidates' checks
    tiles = _tiles(*view.shape[:2])
    n_tiles = len(tiles) if len(boxes) >= len(tiles) and boxes[-len(tiles):] == tiles else 0
    alone = [not (len(boxes) - n_tiles <= i < len(boxes)) for i in range(len(groups))]
    out.extra.update({"view": view, "alone": alone,
                      "merged": int(sum(groups[:len(boxes)]))})  # type: ignore[call-overload]
    # plain: all rows are tile rows; mirrored: all rows are mirrored rows (mirrored_rows)
    out.extra.update({"tiles": 0, "mirrored": len(out.desc)} if mirror else
                     {"tiles": len(out.desc)})
    return out


def small_stages(stage: LocalFeatures) -> list[LocalFeatures]:
    """The keypoint searches of a small-picture pass (:func:`small_pass`), in order: first
    the boxes of :func:`small_boxes` together (one search, as the pass was first built), then
    every box but the tiles on its own (cells, collage leaves, rectangles, the colour
    picture's extra rectangles included). A picture filling a
    tenth of the frame gets few of the votes of a search over a dozen boxes (in a chat
    screenshot its own image ranked 10th-21st of 60 known images while its box alone
    nominated it first: BENCHMARKS.md, issue 11, fourth round); each box alone gets a search
    of its own. Without the pass's box counts (``extra["groups"]``): the stage alone."""
    groups = stage.extra.get("groups")
    if not isinstance(groups, list):
        return [stage]
    merged = int(stage.extra.get("merged", len(stage.desc)))  # type: ignore[call-overload]
    alone = stage.extra.get("alone") or [True] * len(groups)
    parts = [(0, merged)] if merged else []
    at = 0
    for n, own in zip(groups, alone, strict=True):  # type: ignore[call-overload]
        if n and own and (at, at + n) != (0, merged):
            parts.append((at, at + n))
        at += n
    out = []
    for a, b in parts:
        f = subset(stage, np.arange(a, b))
        for key in ("groups", "merged", "alone"):
            f.extra.pop(key, None)
        # the boxes together (the first search), not one box alone
        f.extra["together"] = bool(merged) and (a, b) == (0, merged) and not out
        out.append(f)
    return out


def mirrored_count(q: LocalFeatures) -> int:
    """How many of ``q``'s keypoints come from the mirrored pass (they follow the plain ones)."""
    return int(q.extra.get("mirrored", 0))  # type: ignore[call-overload]


def tile_count(q: LocalFeatures) -> int:
    """How many of ``q``'s keypoints (the last ones) come from the tile pass."""
    return int(q.extra.get("tiles", 0))  # type: ignore[call-overload]


def mirrored_rows(q: LocalFeatures) -> tuple[int, int]:
    """[start, stop) of the mirrored pass's rows."""
    stop = len(q.desc) - tile_count(q)
    return stop - mirrored_count(q), stop


def subset(q: LocalFeatures, rows: np.ndarray) -> LocalFeatures:
    """The features at ``rows`` (sorted), with the pass counts recomputed."""
    a, b = mirrored_rows(q)
    t0 = len(q.desc) - tile_count(q)
    extra = dict(q.extra)
    extra["mirrored"] = int(((rows >= a) & (rows < b)).sum())
    extra["tiles"] = int((rows >= t0).sum())
    return LocalFeatures(q.xy[rows], q.desc[rows], q.size, extra,
                         None if q.angle is None else q.angle[rows],
                         None if q.octave is None else q.octave[rows])


_LOCAL_MAGIC = b"HWORB1"
_LOCAL_MAGIC_Q = b"HWORB2"  # query features with more passes: two more u4, the pass counts
_LOCAL_MAGIC_R = b"HWORB3"  # ... and the rectangles' count, the boxes after the descriptors


def encode_local(feats: LocalFeatures, *, with_view: bool = False) -> bytes:
    """Compact form: header, positions as float32, descriptors. ``with_view`` appends the
    query's grey working picture (for the scene check, between a hashing worker and the
    matcher): never for known images, whose features are stored. Known images' features keep
    the ``HWORB1`` form; query features with a mirrored or tile pass are ``HWORB2``, whose
    header adds the two pass counts; with ``with_view`` and pasted-picture rectangles
    (``extra["rects"]``, :func:`query_local`) ``HWORB3``: one more count, and the boxes
    (y0, y1, x0, x1 as u4, working frame) after the descriptors."""
    n = len(feats.desc)
    m, t = mirrored_count(feats), tile_count(feats)
    rects = list(feats.extra.get("rects", ())) if with_view else []  # type: ignore[call-overload]
    counts = [m, t, len(rects)] if rects else [m, t] if m or t else []
    magic = {3: _LOCAL_MAGIC_R, 2: _LOCAL_MAGIC_Q, 0: _LOCAL_MAGIC}[len(counts)]
    head = magic + np.array([n, feats.size[0], feats.size[1], *counts], "<u4").tobytes()
    body = feats.xy.astype("<f4").tobytes() + feats.desc.astype(np.uint8).tobytes()
    if rects:
        body += np.array(rects, "<u4").reshape(-1, 4).tobytes()
    if with_view:
        view = feats.extra["view"]
        assert isinstance(view, np.ndarray) and view.shape == (feats.size[1], feats.size[0])
        body += np.ascontiguousarray(view, np.uint8).tobytes()
    return head + body


def decode_local(data: bytes) -> LocalFeatures:
    """The inverse of :func:`encode_local`; ValueError for anything else."""
    if data.startswith(_LOCAL_MAGIC):
        fields = 3
    elif data.startswith(_LOCAL_MAGIC_Q):
        fields = 5
    elif data.startswith(_LOCAL_MAGIC_R):
        fields = 6
    else:
        raise ValueError("not hashwatch local features")
    if len(data) < len(_LOCAL_MAGIC) + 4 * fields:
        raise ValueError("malformed local features")
    head = [int(v) for v in np.frombuffer(data, "<u4", fields, len(_LOCAL_MAGIC))]
    n, w, h = head[:3]
    off = len(_LOCAL_MAGIC) + 4 * fields
    nr = head[5] if fields == 6 else 0
    if len(data) < off + 40 * n + 16 * nr or (fields > 3 and head[3] + head[4] > n):
        raise ValueError("malformed local features")
    xy = np.frombuffer(data, "<f4", 2 * n, off).reshape(n, 2).astype(np.float32)
    desc = np.frombuffer(data, np.uint8, 32 * n, off + 8 * n).reshape(n, 32).copy()
    extra: dict[str, object] = {}
    if fields > 3:
        extra["mirrored"], extra["tiles"] = head[3], head[4]
    off += 40 * n
    if nr:
        boxes = np.frombuffer(data, "<u4", 4 * nr, off).reshape(nr, 4)
        if (boxes[:, 1] > h).any() or (boxes[:, 3] > w).any() or (
                boxes[:, 0] >= boxes[:, 1]).any() or (boxes[:, 2] >= boxes[:, 3]).any():
            raise ValueError("malformed local features")
        extra["rects"] = [tuple(int(v) for v in b) for b in boxes]
        off += 16 * nr
    rest = len(data) - off
    if rest == w * h:
        extra["view"] = np.frombuffer(data, np.uint8, w * h, off).reshape(h, w).copy()
    elif rest:
        raise ValueError("malformed local features")
    return LocalFeatures(xy, desc, (w, h), extra)
