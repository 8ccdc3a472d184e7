"""Each file ends in exactly one state, decided from the Matcher's results.

known_exact  a crypto hash (MD5/SHA-1/SHA-256) of the file is on a list
known_near   the image (or a sampled video frame) is within the PDQ threshold of a list entry
unknown      an image or video with no match (new material: clustered for review)
not_image    read fine, but neither an image nor a video (documents, archives, audio)
error        could not be read or decoded (the reason is kept)

An exact match wins over an error (a truncated file whose bytes are on a list is still known).
Known files take the category of the matched entries; when matched entries disagree, every
category is kept and the file is flagged ``conflict``: never silently resolved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hashwatch.matcher import Match, Matcher
from hashwatch.media.matching import FrameProbe as _Probe
from hashwatch.media.matching import match_media
from hashwatch.triage.work import FileRecord

__all__ = ["STATES", "Classified", "classify", "classify_many"]

CRYPTO = ("md5", "sha1", "sha256")

STATES = ("known_exact", "known_near", "unknown", "not_image", "error")


@dataclass
class Classified:
    state: str
    distance: int | None = None
    matches: list[Match] = field(default_factory=list)
    frame_times: dict[int, float] = field(default_factory=dict)  # entry id -> video second

    @property
    def categories(self) -> list[str]:
        """Distinct categories of the deciding matches, in match order."""
        out: list[str] = []
        for m in self.matches:
            if m.category and m.category not in out:
                out.append(m.category)
        return out

    @property
    def conflict(self) -> bool:
        return len(self.categories) > 1

    @property
    def lists(self) -> list[str]:
        out: list[str] = []
        for m in self.matches:
            if m.list not in out:
                out.append(m.list)
        return out

    def matches_json(self) -> list[dict[str, Any]]:
        out = []
        for m in self.matches:
            d = m.as_dict()
            if m.entry_id in self.frame_times:
                d["frame_time"] = self.frame_times[m.entry_id]
            out.append(d)
        return out


@dataclass
class _NoCrypto:
    """A video or animation's frames and vPDQ, without its crypto hashes (looked up apart)."""

    rec: FileRecord
    md5: None = None

    @property
    def frames(self) -> Any:
        return self.rec.frame_hashes or ()

    @property
    def vpdq(self) -> Any:
        return self.rec.vpdq


def _hash_distance(matches: Sequence[Match]) -> int | None:
    """The smallest Hamming distance among hash matches; None when only keypoints matched
    (they are measured in inliers, and a distance there would be a made-up number)."""
    ds = [m.distance for m in matches if not m.route.startswith("local") and m.distance >= 0]
    return min(ds) if ds else None


def classify_many(recs: Sequence[FileRecord], matcher: Matcher,
                  lists: Sequence[str] | None = None) -> list[Classified]:
    """Classify a batch. One store query per crypto signal for the whole batch finds which
    records can have an exact match at all; the others are matched on PDQ alone (the index),
    which gives the Matcher's own answer without three database round trips per file."""
    found: set[str] = set()
    for sig in CRYPTO:
        values = sorted({v for r in recs if (v := getattr(r, sig))})
        if values:
            found.update(e.value for e in matcher.store.lookup(sig, values, lists=lists))
    return [classify(r, matcher, lists,
                     crypto_hit=any(getattr(r, s) in found for s in CRYPTO)) for r in recs]


def classify(rec: FileRecord, matcher: Matcher, lists: Sequence[str] | None = None, *,
             crypto_hit: bool = True) -> Classified:
    """One file's state. ``crypto_hit=False`` (from :func:`classify_many`'s batch look-up)
    skips the exact look-up known to find nothing."""
    if rec.md5 is None and rec.error:
        return Classified("error")
    if rec.kind == "video" or rec.frame_hashes:
        # videos and animations: the file exactly, a video's vPDQ, then every distinct frame
        # with its robust views (hashwatch.media.matching); matches say which frame
        exact = matcher.match_exact(rec, lists) if rec.md5 and crypto_hit else []
        if exact:
            return Classified("known_exact", 0, exact)
        if rec.error:
            return Classified("error")
        near = [m for m in match_media(matcher, _NoCrypto(rec), lists) if not m.exact]
        if near:
            near.sort(key=lambda m: (m.distance < 0, m.distance, m.list, m.entry_id))
            return Classified("known_near", _hash_distance(near), near,
                              {m.entry_id: m.frame_time for m in near
                               if m.frame_time is not None})
        return Classified("unknown")
    if not rec.md5:
        matches = []
    elif crypto_hit:
        matches = matcher.match_hashes(rec, lists)
    elif rec.pdq:
        matches = matcher.match_hashes(_Probe(rec.pdq, rec.pdq_quality or 0, rec.extras), lists)
    else:
        matches = []
    exact = [m for m in matches if m.exact]
    if exact:
        return Classified("known_exact", 0, exact)
    if rec.error:
        return Classified("error")
    if rec.kind == "image":
        near = [m for m in matches if not m.exact]
        if near:
            return Classified("known_near", _hash_distance(near), near)
        return Classified("unknown")
    return Classified("not_image")
