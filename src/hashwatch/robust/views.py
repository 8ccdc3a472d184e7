"""PDQ views of the hash tier: what is stored for a known image (full, trimmed, centred crops)
and what is computed for a query (dihedral, trimmed, regions and their centred squares,
de-rotations, centred crops, de-rotations cropped to what survives the turn).

Stored views cost index bytes on every known image (and in every export a partner receives);
query views cost only probes. The query crops and turned crops were chosen by measurement
(``benchmarks/view_study.py``: greedy recall gain per probe on a held-out known set, seed 1,
with the stored views fixed to today's; BENCHMARKS.md, "Partner mode"): a query cropped by a
few percent lines up a copy cropped by an amount between two stored crops with the nearer one,
and a turned copy cropped to the part that survives turning back lines up with a stored crop
instead of carrying black corners."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hashwatch.robust._pixels import (
    _DIHEDRAL,
    _centre,
    _check,
    _inner_scale,
    _luma_f32,
    _pdq,
    _pdq_dihedral,
    _pdq_lumas,
    _rotate,
    _rotate_expand,
    _square,
    _work,
)
from hashwatch.robust.regions import query_cells, query_rectangles, query_regions
from hashwatch.robust.routes import MIN_QUALITY, KnownHash, QueryHash
from hashwatch.robust.trim import trim_box

# Centred crops stored for a known image (fraction of each side kept).
KNOWN_CROP_SCALES: tuple[float, ...] = (0.9, 0.8, 0.7, 0.6, 0.5)
# The views a known image may store, by their variant names ("full" is stored as "").
KNOWN_VIEWS: tuple[str, ...] = ("full", "trim",
                                *(f"crop{round(s * 100)}" for s in KNOWN_CROP_SCALES))
# Suffix of a region, cell or pasted picture's mirrored hash ("cell4:fliph"): pdqhash's name
# for the left-right flip among its dihedral hashes.
MIRROR_SUFFIX = ":fliph"
# Query de-rotations in degrees (PDQ tolerates about 1 degree).
QUERY_DEROTATIONS: tuple[float, ...] = (-4.0, -2.0, 2.0, 4.0)
# Centred crops of the query's (trimmed) picture, fraction of each side kept (class "qcrop").
QUERY_CROP_SCALES: tuple[float, ...] = (0.95, 0.93, 0.9, 0.85, 0.82, 0.8)
# (degrees, fraction of each side kept): the query turned back on its own canvas, then cropped
# to a centred window inside what survives the turn (class "qrot"; skipped when the window
# would reach the black corners).
QUERY_TURNED_CROPS: tuple[tuple[float, float], ...] = (
    (-4.5, 0.9), (4.5, 0.9), (-5.5, 0.85), (5.5, 0.85), (-1.5, 0.8), (1.5, 0.8))
# Turned back on a grown canvas, then border-trimmed (a copy turned with its canvas grown).
QUERY_TURNS_EXPANDED: tuple[float, ...] = (-5.0, 5.0)


def known_signals(pixels: np.ndarray, *, crops: Sequence[float] = KNOWN_CROP_SCALES
                  ) -> list[KnownHash]:
    """PDQ hashes to store for one known image. The first is always the full-image PDQ
    (variant "full", the interchange hash, kept even if its quality is low so the entry exists);
    extra variants with quality < 50 are left out."""
    # The interchange hash is PDQ of the pixels as given (same as signals.pdq.pdq_hash), so
    # a list built here and a partner's plain PDQ list hold the same value for the same file.
    code, q = _pdq(_check(pixels))
    return [KnownHash("full", code, q), *known_extra_views(pixels, crops=crops)]


def known_extra_views(pixels: np.ndarray, *, crops: Sequence[float] = KNOWN_CROP_SCALES
                      ) -> list[KnownHash]:
    """:func:`known_signals` without its first, full-image hash: the border-trimmed picture
    and its centred crops (``crops``: fraction of each side kept), computed on the picture
    reduced to at most :data:`~hashwatch.robust.WORK_SIDE` px; quality < 50 left out. For a
    caller that has the full-image PDQ already (``lists add`` hashes it while decoding):
    the reference PDQ of the whole picture costs more than all these views together.
    Raises ValueError for anything but (h, w, 3+) uint8 pixels."""
    out: list[KnownHash] = []
    p = _work(pixels)
    y0, y1, x0, x1 = trim_box(p)
    # every view is a rectangle of the working picture: its luma once, the views' PDQ from
    # their crops of it, together (_pdq_lumas: the reference's hash without filtering every
    # pixel), except views under 64 px a side (_view_pdqs)
    luma = _luma_f32(p)
    core, lcore = p, luma
    views: list[tuple[str, np.ndarray, np.ndarray]] = []
    if (y0, y1, x0, x1) != (0, p.shape[0], 0, p.shape[1]):
        core, lcore = p[y0:y1, x0:x1], luma[y0:y1, x0:x1]
        views.append(("trim", core, lcore))
    views += [(f"crop{round(s * 100)}", _centre(core, s), _centre(lcore, s)) for s in crops]
    for (name, _, _), (c, cq) in zip(views, _view_pdqs(views), strict=True):
        if cq >= MIN_QUALITY:
            out.append(KnownHash(name, c, cq))
    return out


def _view_pdqs(views: Sequence[tuple[str, np.ndarray, np.ndarray]]) -> list[tuple[bytes, int]]:
    """PDQ of each (name, pixels, luma) view: from the luma (:func:`_pdq_lumas`, all at
    once), except for a view under 64 px on a side, whose 64 samples repeat pixels: its DCT
    has coefficients that are equal but for rounding, whose order float rounding decides (the
    reference's and the luma route's disagree there), so it gets the reference itself."""
    small = [min(v[2].shape) < 64 for v in views]
    batch = iter(_pdq_lumas([v[2] for v, s in zip(views, small, strict=True) if not s]))
    return [_pdq(v[1]) if s else next(batch) for v, s in zip(views, small, strict=True)]


def query_signals(pixels: np.ndarray, *, regions: bool = True, derotate: bool = True,
                  boxes: Sequence[tuple[int, int, int, int]] | None = None,
                  crops: bool = True,
                  rects: Sequence[tuple[int, int, int, int]] | None = None
                  ) -> list[QueryHash]:
    """PDQ hashes to compute for one query image (the first is the plain full-image PDQ).
    Variants with quality < 50 are left out, except the first. ``boxes``: regions already found
    by :func:`query_regions` (else they are found here); with ``regions``, the cells of a grid
    of pictures (:func:`~hashwatch.robust.regions.query_cells`, "cell<i>") and pictures pasted
    onto a busy background (:func:`~hashwatch.robust.regions.query_rectangles`, "rect<i>")
    are hashed too, route class "region" (``rects``: those rectangles already found, else
    they are found here); each region, cell and rectangle also mirrored
    ("region<i>:fliph", ...: a mirrored picture inside a collage or pasted on a photo).
    ``crops``: also the query crops (:data:`QUERY_CROP_SCALES`), turned crops
    (:data:`QUERY_TURNED_CROPS`, :data:`QUERY_TURNS_EXPANDED`) and each region's centred
    square."""
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
            rp = _work(pixels[ry0:ry1, rx0:rx1])
            out += _plain_and_mirrored(f"region{i}", rp)
            if crops and rp.shape[0] != rp.shape[1]:
                rc, rq = _pdq(_square(rp))
                if rq >= MIN_QUALITY:
                    out.append(QueryHash(f"region{i}-sq", rc, rq))
        # cells of a grid of pictures and pictures pasted onto another one: route class
        # "region" (its threshold), no squares
        for name, found in (("cell", query_cells(pixels, list(boxes))),
                            ("rect", query_rectangles(pixels, list(boxes))
                             if rects is None else rects)):
            for i, (ry0, ry1, rx0, rx1) in enumerate(found):
                out += _plain_and_mirrored(f"{name}{i}", _work(pixels[ry0:ry1, rx0:rx1]))
    if derotate:
        for a in QUERY_DEROTATIONS:
            rc, rq = _pdq(_rotate(core, a))
            if rq >= MIN_QUALITY:
                out.append(QueryHash(f"derot{a:+g}", rc, rq))
    if crops:
        out += _query_crops(core)
    return out


# Index of the left-right mirror among pdqhash's dihedral hashes (_DIHEDRAL's names).
_MIRROR = _DIHEDRAL.index(MIRROR_SUFFIX)


def _plain_and_mirrored(variant: str, p: np.ndarray) -> list[QueryHash]:
    """PDQ of a region, grid cell or pasted picture ``p`` as ``variant`` and of its left-right
    mirror as ``variant`` + :data:`MIRROR_SUFFIX` (quality < 50 left out): a mirrored picture
    pasted into a bigger frame meets its known hashes through the second. Both come from one
    DCT (pdqhash's dihedral hashes). Query side only, so no index bytes; it doubles the
    region-class hashes a query compares (BENCHMARKS.md, issue 11, "mirrored pictures that
    fill part of the frame")."""
    codes, q = _pdq_dihedral(p)
    if q < MIN_QUALITY:
        return []
    return [QueryHash(variant, codes[0], q), QueryHash(variant + MIRROR_SUFFIX, codes[_MIRROR], q)]


def _query_crops(core: np.ndarray) -> list[QueryHash]:
    """The "qcrop" and "qrot" views of a query's (trimmed) working picture."""
    out: list[QueryHash] = []
    for s in QUERY_CROP_SCALES:
        c, q = _pdq(_centre(core, s))
        if q >= MIN_QUALITY:
            out.append(QueryHash(f"qcrop{round(s * 100)}", c, q))
    h, w = core.shape[:2]
    for a, s in QUERY_TURNED_CROPS:
        if s > _inner_scale(h, w, a) + 0.01:
            continue  # the window would take in the black corners of the turn
        c, q = _pdq(_centre(_rotate(core, a), s))
        if q >= MIN_QUALITY:
            out.append(QueryHash(f"qrot{a:+g}c{round(s * 100)}", c, q))
    for a in QUERY_TURNS_EXPANDED:
        turned = _rotate_expand(core, a)
        y0, y1, x0, x1 = trim_box(turned)
        c, q = _pdq(turned[y0:y1, x0:x1])
        if q >= MIN_QUALITY:
            out.append(QueryHash(f"qrotx{a:+g}", c, q))
    return out
