"""A video's or an animation's frames (and a video's vPDQ) → matches that say which frame.

Each distinct kept frame is matched like a still, with the robust query views the matcher
asked for (flips and turns, border trim, picture regions, small de-rotations; computed per
frame by :func:`hashwatch.media.hashing.hash_media`), so a turned, letterboxed or pillarboxed
video of a known picture is found. A video's vPDQ is then matched against known vPDQ videos
(:meth:`hashwatch.matcher.Matcher.match_vpdq`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hashwatch.matcher import Match, Matcher

__all__ = ["FrameProbe", "frame_views", "match_frames", "match_media"]


@dataclass
class FrameProbe:
    """What the matcher reads for one frame: a PDQ (+ views) and no crypto hash."""

    pdq: str
    pdq_quality: int
    extras: dict[str, Any] | None = None
    md5: None = None
    sha1: None = None
    sha256: None = None
    pdq_dihedral: None = None
    frames: None = None
    path: str = ""
    error: None = None


def match_frames(matcher: Matcher, frames: Sequence[Any], lists: Sequence[str] | None = None
                 ) -> list[Match]:
    """Every distinct frame's PDQ (+ its views) against the lists: one match per known entry,
    the frame nearest to it (first in time on a tie), best first. ``frames``: ``FrameHash``-
    like objects (``index``, ``t``, ``pdq``, ``quality``, ``extras``)."""
    best: dict[tuple[str, int], Match] = {}
    seen: set[str] = set()
    for f in frames:
        if f.pdq in seen and not f.extras:
            continue  # a still scene repeats the same hash: match it once
        seen.add(f.pdq)
        for m in matcher.match_hashes(FrameProbe(f.pdq, f.quality, f.extras), lists):
            key = (m.list, m.entry_id)
            if key not in best or m.distance < best[key].distance:
                best[key] = dataclasses.replace(m, frame=f.index, frame_time=f.t)
    return sorted(best.values(), key=lambda m: (m.distance, m.list, m.entry_id))


# query views that keep a whole frame (turned / flipped, or letterbox / pillarbox bars trimmed):
# the ones that make sense for a frame of a known video; picture regions and de-rotations do not
_VIDEO_VIEWS = ("full:", "trim")


def frame_views(frames: Sequence[Any]) -> dict[str, list[str]]:
    """Frame hex → its whole-frame views' hexes (quality >= 50), from the frames' extras."""
    out: dict[str, list[str]] = {}
    for f in frames:
        if f.extras and f.pdq not in out:
            out[f.pdq] = [h for v, h, q in f.extras.get("pdq_variants", ())
                          if v.startswith(_VIDEO_VIEWS) and (q is None or q >= 50)]
    return out


def match_media(matcher: Matcher, rec: Any, lists: Sequence[str] | None = None) -> list[Match]:
    """A hashed video or animation (``rec.frames``, maybe ``rec.vpdq``): exact matches of the
    file first, then vPDQ matches, then frame matches for known entries not matched yet."""
    exact = matcher.match_exact(rec, lists) if getattr(rec, "md5", None) else []
    vpdq = getattr(rec, "vpdq", None)
    videos = matcher.match_vpdq(vpdq, lists, frame_views(rec.frames)) if vpdq else []
    frames = match_frames(matcher, rec.frames, lists)
    done = {(m.list, m.ref) for m in exact}
    videos = [m for m in videos if (m.list, m.ref) not in done]
    return exact + videos + frames
