"""What a match is: one list entry a file matched (:class:`Match`, with its tier, route and
confidence level), all of one file's matches (:class:`MatchResult`), and whether a hashed file
can be matched perceptually at all (:func:`pdq_matchability`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from hashwatch import robust
from hashwatch.store import EntryRow

PDQ_MIN_QUALITY = 50
# Confidence level per tier: exact and hash-tier matches may be acted on automatically,
# keypoint-tier matches go to human review (per-query false-match rates in BENCHMARKS.md).
CONFIDENCE = {"exact": "act", "hash": "act", "keypoint": "review"}


class HashedLike(Protocol):
    md5: str | None
    sha1: str | None
    sha256: str | None
    pdq: str | None
    pdq_quality: int | None
    extras: dict[str, Any] | None


@dataclass(frozen=True)
class Match:
    """One list entry a file matched: the ``list``, the ``entry_id`` and its ``ref`` (source
    reference), the ``signal`` type, the ``distance`` (PDQ: Hamming bits, 0-256; exact
    hashes: 0; keypoint matches: -1 with ``inliers``), the entry's ``category`` as
    ``SCHEME:CODE``, ``exact``, and for robust matches the ``route`` that found it."""

    list: str
    entry_id: int
    ref: str
    signal: str
    distance: int
    category: str | None
    exact: bool
    variant: str = ""  # the known entry's view ("" = the full-image hash)
    route: str = ""  # "query view/known view" when not the plain full/full comparison
    inliers: int | None = None  # local tier: geometrically verified keypoint matches
    # videos and animations: the query frame that matched (number in decode order, seconds)
    frame: int | None = None
    frame_time: float | None = None
    # vPDQ: the reference's frame-match percentages (query frames found, known frames found)
    query_match_percent: float | None = None
    compared_match_percent: float | None = None

    @property
    def tier(self) -> str:
        """``exact`` (a cryptographic hash), ``hash`` (a PDQ route) or ``keypoint``."""
        if self.exact:
            return "exact"
        return "keypoint" if self.route.startswith("local/") else "hash"

    @property
    def confidence(self) -> str:
        """What a platform may do with this match: ``act`` (exact and hash-tier matches: the
        measured false-match rate per query at 20M known images allows acting on them
        automatically) or ``review`` (keypoint-tier matches: a person confirms them first).
        See :data:`CONFIDENCE` and BENCHMARKS.md, "Scale study"."""
        return CONFIDENCE[self.tier]

    def as_dict(self) -> dict[str, Any]:
        d = {
            "list": self.list,
            "entry_id": self.entry_id,
            "ref": self.ref,
            "signal": self.signal,
            "distance": self.distance,
            "category": self.category,
            "exact": self.exact,
            "tier": self.tier,
            "confidence": self.confidence,
        }
        if self.route:
            d["route"] = self.route
        if self.inliers is not None:
            d["inliers"] = self.inliers
        if self.frame is not None:
            d["frame"] = {"index": self.frame, "t": self.frame_time}
        if self.query_match_percent is not None:
            d["query_match_percent"] = self.query_match_percent
            d["compared_match_percent"] = self.compared_match_percent
        return d


@dataclass
class MatchResult:
    """The matches of one file (``path``), best first, and its hashing ``error`` if any."""

    path: str
    matches: list[Match] = field(default_factory=list)
    error: str | None = None
    # whether the file had a PDQ good enough to match perceptually, and if not, why
    pdq_matchable: bool | None = None
    pdq_reason: str | None = None
    # a video or animation covered only in part: the bound that cut or thinned its frames
    limited: str | None = None

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "path": self.path,
            "matches": [m.as_dict() for m in self.matches],
            "error": self.error,
        }
        if self.pdq_matchable is not None:
            d["pdq_matchable"] = self.pdq_matchable
            if self.pdq_reason:
                d["pdq_reason"] = self.pdq_reason
        if self.limited:
            d["limited"] = self.limited
        return d


def pdq_matchability(rec: Any, min_quality: int = PDQ_MIN_QUALITY) -> tuple[bool, str | None]:
    """Whether a hashed file can be matched perceptually (PDQ quality >= ``min_quality``, for
    a video or animation: some kept frame), and if not, why. Exact hashes are matched anyway:
    "no perceptual match" and "could not be matched perceptually" must not look alike."""
    frames = getattr(rec, "frames", None) or ()
    if frames:
        best = max(f.quality for f in frames)
        if best >= min_quality:
            return True, None
        return False, (f"no frame has PDQ quality >= {min_quality} (best {best}): the frames "
                       "are too flat or uniform to match perceptually")
    quality = getattr(rec, "pdq_quality", None)
    if getattr(rec, "pdq", None) is None or quality is None:
        error = getattr(rec, "error", None)
        return False, f"no PDQ: {error}" if error else "no PDQ: not a decodable picture"
    if quality < min_quality:
        return False, (f"PDQ quality {quality} is below the matching floor {min_quality}: the "
                       "picture is too flat or uniform to match perceptually")
    return True, None


def match_from_entry(
    e: EntryRow, distance: int, exact: bool, route: str = "", inliers: int | None = None
) -> Match:
    """The :class:`Match` of stored entry ``e`` at PDQ ``distance`` (-1 for a keypoint-tier
    match, which has none), with its route and, for the keypoint tier, verified inliers."""
    return Match(
        list=e.list_name,
        entry_id=e.id,
        ref=e.source_ref,
        signal=e.signal_type,
        distance=distance,
        category=str(e.category) if e.category else None,
        exact=exact,
        variant=e.variant,
        route=route,
        inliers=inliers,
    )


def keypoint_route(v: robust.LocalVerdict) -> str:
    """Route of a keypoint-tier match: ``local/orb``, then ``:`` and what the verified
    transform is (``v.fit``, :func:`hashwatch.robust.geometry.describe_transform`:
    ``similarity``, ``affine`` or ``homography``, ``+mirrored`` when it reflects), e.g.
    ``local/orb:homography+mirrored``; plain ``local/orb`` when the verdict has no ``fit``."""
    return "local/orb" if v.fit is None else "local/orb:" + v.fit.tag
