"""What the hashing workers compute per file. These run inside hashwatch.hashing's worker
processes on the decoded pixels, so the extra views cost no second decode. Results are plain data
(picklable, storable)."""

from __future__ import annotations

import numpy as np

from hashwatch.robust.local import encode_local, known_local, query_local
from hashwatch.robust.regions import query_rectangles, query_regions
from hashwatch.robust.views import known_extra_views, query_signals


def known_extras(pixels: np.ndarray) -> dict[str, object]:
    """Extra PDQ views (variant, hex, quality) beyond the full hash, and local features.
    The full-image PDQ is not computed here: the hashing worker has it already."""
    return {
        "pdq_variants": [(k.variant, k.hex, k.quality) for k in known_extra_views(pixels)],
        "local": encode_local(known_local(pixels)),
    }


def query_extras(pixels: np.ndarray, *, local: bool = False) -> dict[str, object]:
    """Query views beyond the plain full hash (dihedral, trimmed, regions, de-rotations) and,
    when the lists hold local features, the query's own ORB features."""
    boxes = query_regions(pixels)
    # pasted-picture rectangles: found once, hashed and kept for the small-picture pass
    rects = query_rectangles(pixels, boxes)
    views = query_signals(pixels, boxes=boxes, rects=rects)
    out: dict[str, object] = {"pdq_variants": [(q.variant, q.hex, q.quality) for q in views[1:]]}
    if local:
        out["local"] = encode_local(query_local(pixels, boxes, rects=rects), with_view=True)
    return out
