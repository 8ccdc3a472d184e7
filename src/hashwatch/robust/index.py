"""A small in-process matcher over both tiers (tests, the evaluation, the demo)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hashwatch.robust.local import LOCAL_MIN_INLIERS, LocalFeatures, query_local
from hashwatch.robust.local_store import LocalStore
from hashwatch.robust.regions import query_rectangles, query_regions
from hashwatch.robust.routes import (
    MIN_QUALITY,
    THRESHOLDS,
    KnownHash,
    QueryHash,
    known_class,
    part_of_frame,
    query_class,
    route_rank,
    route_threshold,
)
from hashwatch.robust.views import query_signals


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
                score = route_rank(query_class(qh.variant), dist, t)
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
        rects = query_rectangles(pixels, boxes)  # hashed, and kept for the small-picture pass
        hits = self.match_hashes(query_signals(pixels, boxes=boxes, rects=rects))
        if not local or not len(self._local) or (
                hits and not all(part_of_frame(m.query_variant) for m in hits)):
            return hits
        # nothing matched, or only pictures among others in the file (part_of_frame): the
        # keypoint tier looks for the rest
        seen = {m.known_id for m in hits}
        return hits + [m for m in self.match_local(query_local(pixels, boxes, rects=rects))
                       if m.known_id not in seen]
