"""PDQ views of the hash tier: what is stored for a known image (full, trimmed, centred crops)
and what is computed for a query (dihedral, trimmed, regions, de-rotations)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hashwatch.robust._pixels import _DIHEDRAL, _centre, _check, _pdq, _pdq_dihedral, _rotate, _work
from hashwatch.robust.regions import query_regions
from hashwatch.robust.routes import MIN_QUALITY, KnownHash, QueryHash
from hashwatch.robust.trim import trim_box

# Centred crops stored for a known image (fraction of each side kept).
KNOWN_CROP_SCALES: tuple[float, ...] = (0.9, 0.8, 0.7, 0.6, 0.5)
# Query de-rotations in degrees (PDQ tolerates about 1 degree).
QUERY_DEROTATIONS: tuple[float, ...] = (-4.0, -2.0, 2.0, 4.0)


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
