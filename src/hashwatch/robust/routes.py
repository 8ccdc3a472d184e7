"""Routes of the hash tier: which (query view class, known view class) pairs are compared, and
at what PDQ distance they count as a match; the view-hash records both sides produce."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

MIN_QUALITY = 50  # Meta's PDQ rule: flatter hashes are discarded on both sides


# (query class, known class) -> max Hamming distance. Classes: query "full" (the plain hash),
# "dihedral" (7 other orientations), "trim" (+ its 8 orientations), "region", "derot",
# "qcrop" (centred crops of the query), "qrot" (turned back, then cropped inside the turn);
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
    ("derot", "crop"): 31,
    ("qcrop", "full"): 31,
    ("qcrop", "trim"): 31,
    ("qcrop", "crop"): 31,
    ("qrot", "full"): 31,
    ("qrot", "trim"): 31,
    ("qrot", "crop"): 31,
}


# Query crops and turned crops are a fallback: a known image that another query view also
# matches is reported by that route, so an unedited copy reads as "full/full", not as a crop of
# a crop that happened to land a bit closer. Added to (distance - threshold) when ranking.
FALLBACK_QUERY_CLASSES = frozenset({"qcrop", "qrot"})
FALLBACK_PENALTY = 64


def route_rank(query_class_: str, distance: int, threshold: int) -> int:
    """Ranking score of one matching pair (lower is better): distance minus threshold, after
    every route that is not a fallback (:data:`FALLBACK_QUERY_CLASSES`)."""
    return distance - threshold + (FALLBACK_PENALTY if query_class_ in FALLBACK_QUERY_CLASSES
                                   else 0)


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
    """Route class of a query variant: full, dihedral, trim, region, derot, qcrop or qrot
    (a grid cell, "cell<i>", and a pasted picture, "rect<i>", are regions)."""
    if variant == "full":
        return "full"
    if variant.startswith("full:"):
        return "dihedral"
    if variant.startswith(("cell", "rect")):
        return "region"
    for c in ("trim", "region", "derot", "qcrop", "qrot"):
        if variant.startswith(c):
            return c
    raise ValueError(f"unknown query variant {variant!r}")


def part_of_frame(variant: str) -> bool:
    """Whether a query view (a hash match's query variant, e.g. ``region1``, ``cell4``,
    ``rect0``) is one picture among others in the file: a region, grid cell or pasted
    picture (route class "region"). A hash match through such views alone leaves the rest of
    the frame unsearched, so the keypoint tier still looks at the file (a collage of two known
    pictures must not lose the second because the first matched by hash)."""
    try:
        return query_class(variant) == "region"
    except ValueError:
        return False


def route_threshold(query_variant: str, known_variant: str) -> int | None:
    """Max distance at which this pair of variants counts as a match (None: never compared)."""
    return THRESHOLDS.get((query_class(query_variant), known_class(known_variant)))


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
    hits = [(route_rank(r[0], v, THRESHOLDS[r]), v, qv, kv) for r, (v, qv, kv) in best.items()
            if v <= THRESHOLDS[r]]
    if not hits:
        return None
    _, v, qv, kv = min(hits)
    return v, qv, kv
