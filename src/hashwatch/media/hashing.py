"""A video or an animated image → PDQ of its kept frames (+ robust query views) and vPDQ.

:func:`hash_media` is the one bytes/path → hashes function for moving pictures that batch
hashing (``hashwatch hash`` / ``match``), triage and the service share; it is also the unit a
caller can run in a subprocess with a deadline (all decoding happens inside it, bounded by
:class:`hashwatch.media.frames.FrameLimits`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from hashwatch.media.frames import Frame, FrameLimits, MediaInfo, decode_frames
from hashwatch.signals.pdq import pdq_hash_fast
from hashwatch.signals.vpdq import VpdqFeature

__all__ = ["MAX_VIEW_FRAMES", "FrameHash", "MediaHashes", "hash_media"]

# Robust query views cost ~30-60 ms a frame: computed for at most this many distinct frames of
# one file (spread over it: every k-th distinct frame when there are more).
MAX_VIEW_FRAMES = 600


@dataclass(frozen=True, slots=True)
class FrameHash:
    """One kept frame's PDQ. ``extras``: the matcher's query views of that frame (not output)."""

    index: int  # frame number in decode order, 0-based
    t: float  # display time, seconds
    pdq: str
    quality: int
    extras: dict[str, Any] | None = None
    cut: bool = False  # a video frame kept after a cut, off the one-per-interval grid

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"index": self.index, "t": self.t, "pdq": self.pdq,
                             "quality": self.quality}
        if self.cut:
            d["cut"] = True
        return d


@dataclass(frozen=True)
class MediaHashes:
    """What :func:`hash_media` found: the file's facts and its kept frames' hashes."""

    info: MediaInfo
    frames: tuple[FrameHash, ...]

    @property
    def vpdq(self) -> tuple[VpdqFeature, ...] | None:
        """The vPDQ hash (videos only): every frame kept on the sampling grid, in time order
        (frames kept after a cut are matched as frames but are not part of the vPDQ, so it
        stays comparable with the reference implementation's)."""
        if self.info.kind != "video":
            return None
        return tuple(VpdqFeature(f.pdq, f.quality, f.t) for f in self.frames if not f.cut)

    def first_usable(self) -> FrameHash | None:
        """The first frame of PDQ quality >= 50, else the first frame (the record's own PDQ)."""
        return next((f for f in self.frames if f.quality >= 50),
                    self.frames[0] if self.frames else None)


def hash_media(
    src: str | os.PathLike[str] | bytes,
    kind: str,
    *,
    extras: Callable[[np.ndarray], dict[str, Any]] | None = None,
    limits: FrameLimits | None = None,
    max_view_frames: int = MAX_VIEW_FRAMES,
) -> MediaHashes:
    """Decode ``src`` (``kind`` ``"video"`` or ``"animation"``) and PDQ-hash each kept frame.

    ``extras``: the matcher's query-view function (``Matcher.query_extras()``), run on each
    frame whose PDQ was not seen before in this file (a still scene is viewed once), for at
    most ``max_view_frames`` frames. A failing ``extras`` only loses that frame's views.
    Raises :class:`hashwatch.media.frames.MediaError`."""
    seen: set[str] = set()
    viewed = 0

    def on_frame(f: Frame) -> FrameHash:
        nonlocal viewed
        pdq, quality = pdq_hash_fast(f.pixels, f.height, f.width)
        ex = None
        if extras is not None and pdq not in seen and viewed < max_view_frames:
            viewed += 1
            try:
                ex = extras(f.pixels)
            except Exception:  # the views are a bonus: plain PDQ still matches
                ex = None
        seen.add(pdq)
        return FrameHash(f.index, f.t, pdq, quality, ex, f.cut)

    info, samples = decode_frames(src, kind, on_frame, limits)
    return MediaHashes(info, tuple(s.value for s in samples))
