"""Animated images and videos → sampled frames, upright, bounded: :func:`iter_frames`.

One function decodes every moving picture hashwatch looks at, so that one set of limits (and
one place to wrap in a subprocess with a deadline) covers them all:

* **Videos** (PyAV / FFmpeg): every frame is decoded (so the frame count is exact); one frame
  every ``every`` seconds is kept (1 s by default, as vPDQ's reference hashes), and also the
  first frame after a cut (:class:`_CutDetector`: a picture shown between two samples, at most
  ``cuts_per_interval`` per interval), marked ``cut`` and left out of the vPDQ. The display
  rotation (the track's display matrix, what phones write instead of turning the pixels;
  ``frame.rotation`` in PyAV, FFmpeg's ``av_display_rotation_get``, or the older ``rotate``
  tag) is applied, so frames come out the way every player shows them.
* **Animated images** (GIF, WebP, APNG through Pillow): every *distinct* frame is kept, with
  its display time from the frame durations; a frame identical to one already kept is skipped.

Bounds (:class:`FrameLimits`), so that hostile media cannot run away: frames decoded, pixels x
frames decoded (the real decoding cost), pixels of one frame (from the header, before any
buffer), and frames kept. When more frames would be kept than allowed, the sampling interval
doubles and every other kept frame is dropped, so the kept frames still span the whole file.
When a decode bound stops the decoding, :attr:`MediaInfo.limited` says which one; the frames
kept so far are still returned (a cut video keeps what it showed before). When the kept frames
were thinned (decoding went on to the end, but frames between the kept ones were dropped),
``limited`` is ``"max_samples"`` unless a decode bound also stopped the file. Animations are
never thinned within their frame bound (:data:`ANIMATION_LIMITS`): every distinct frame is
hashed, since one frame of a long animation can be the known picture.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Generic, TypeVar

import numpy as np

__all__ = [
    "ANIMATION_LIMITS",
    "VIDEO_LIMITS",
    "Frame",
    "FrameLimits",
    "Sample",
    "MediaError",
    "MediaInfo",
    "decode_frames",
    "is_animated_image",
    "stream_rotation",
]

T = TypeVar("T")

MAX_SIDE: Final = 512  # frames are reduced so the longer side is at most this (PDQ looks at 64)


class MediaError(Exception):
    """A video or animation that cannot be decoded. ``reason``: ``no_video`` (a container
    without a video stream, e.g. audio-only MP4), ``truncated`` (undecodable data),
    ``too_large`` (a frame over the pixel limit)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class FrameLimits:
    """Bounds on one file's decoding. ``every``: seconds between kept video frames (0: every
    frame; animations use 0, i.e. every distinct frame)."""

    every: float = 1.0
    max_samples: int = 7200  # frames kept (hashed); past it sampling thins out (see module)
    max_frames: int = 1_000_000  # frames decoded
    max_pixel_frames: int = 250_000_000_000  # sum of decoded frame pixels (~1 h of 4K at 30 fps)
    max_frame_pixels: int = 100_000_000  # one frame, checked from the header
    max_side: int = MAX_SIDE
    # videos: also keep the first frame after a cut (a new picture between two samples), at
    # most this many per ``every`` seconds; 0 turns it off
    cuts_per_interval: int = 4


# A video: 1 frame/s, up to 2 h kept; decoding bounded at ~1 h of 4K (or ~4 h of 1080p).
VIDEO_LIMITS: Final = FrameLimits()
# An animation: every distinct frame is kept, never thinned: a known picture can hide in any one
# frame of a long animation (a frame kept costs one fast PDQ; only the frame's hash is kept).
# Pillow composites full-size frames, so the pixel budget is far smaller than a video's (2 G:
# e.g. 500 frames of 4 MP, 20,000 frames of 100k pixels).
ANIMATION_LIMITS: Final = FrameLimits(every=0.0, max_samples=20_000, max_frames=20_000,
                                      max_pixel_frames=2_000_000_000)


@dataclass
class Frame:
    """One kept frame: ``index`` in decode order (0-based), ``t`` display time in seconds,
    ``pixels`` (h, w, 3) uint8 RGB, upright, longer side at most ``FrameLimits.max_side``."""

    index: int
    t: float
    pixels: np.ndarray
    width: int  # full-size frame, upright (what PDQ of the full frame would see)
    height: int
    cut: bool = False  # kept because the picture changed, off the ``every`` grid


@dataclass(frozen=True)
class Sample(Generic[T]):
    """What the caller's ``on_frame`` returned for one kept frame (pixels are not kept)."""

    index: int
    t: float
    value: T
    cut: bool = False  # see :attr:`Frame.cut`


@dataclass
class MediaInfo:
    """Facts about the whole file, complete once :func:`iter_frames` is exhausted."""

    kind: str  # "video" | "animation"
    format: str
    width: int = 0  # as displayed (after rotation), full size
    height: int = 0
    duration: float | None = None  # seconds
    frame_count: int = 0  # frames decoded
    rotation: int = 0  # degrees counter-clockwise applied to the stored pixels (0/90/180/270)
    limited: str | None = None  # the bound that stopped decoding early or thinned the frames
    kept: int = 0  # frames kept (after thinning)
    thumb: np.ndarray | None = field(default=None, repr=False)  # first kept frame's pixels
    extra: dict[str, object] = field(default_factory=dict)


def is_animated_image(data: bytes) -> bool:
    """True for a GIF, WebP or PNG (APNG) with more than one frame (header-level check)."""
    head = data[:64]
    if not (head[:6] in (b"GIF87a", b"GIF89a") or head.startswith(b"\x89PNG\r\n\x1a\n")
            or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")):
        return False
    if head.startswith(b"\x89PNG") and b"acTL" not in data[:4096]:
        return False  # APNG declares its animation control chunk before the first IDAT
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                return bool(getattr(im, "is_animated", False))
    except Exception:
        return False  # the still-image decoder reports what is wrong with it


def _reduced_size(w: int, h: int, max_side: int) -> tuple[int, int]:
    scale = min(1.0, max_side / max(w, h, 1))
    return max(1, round(w * scale)), max(1, round(h * scale))


def _upright(pixels: np.ndarray, rotation: int) -> np.ndarray:
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(pixels, k=k)) if k else pixels


class _Sampler(Generic[T]):
    """Keeps frames on a time grid; halves the grid's density when over ``max_samples``."""

    def __init__(self, every: float, max_samples: int, on_frame: Callable[[Frame], T],
                 info: MediaInfo) -> None:
        self.every = every
        self.max_samples = max(1, max_samples)
        self.next_t = 0.0
        self.kept: list[Sample[T]] = []
        self.on_frame = on_frame
        self.info = info
        self.thinned = False  # frames were dropped: the file is covered only in part

    def want(self, t: float) -> bool:
        return self.every <= 0 or t + 1e-6 >= self.next_t

    def keep(self, f: Frame) -> None:
        if self.info.thumb is None:
            self.info.thumb = f.pixels
        self.kept.append(Sample(f.index, f.t, self.on_frame(f), f.cut))
        if self.every > 0 and not f.cut:
            self.next_t = (int(f.t / self.every + 1e-6) + 1) * self.every
        if len(self.kept) > self.max_samples:
            # too many: keep every other one and sample half as often from here on
            self.thinned = True
            self.kept = self.kept[::2]
            self.every = self.every * 2 if self.every > 0 else max(
                (self.kept[-1].t - self.kept[0].t) / max(len(self.kept) - 1, 1), 1e-3) * 2
            self.next_t = (int(self.kept[-1].t / self.every + 1e-6) + 1) * self.every


def _luma_grid(frame: Any, side: int) -> np.ndarray:
    """(side*side,) float32: the mean of 4x4 points in each cell of a side x side grid over
    the frame's luma, read in place from the decoded plane (no scaling pass: ~20 us a frame
    where FFmpeg's scaler costs ~0.5 ms); other pixel formats go through the scaler."""
    luma, *rest = frame.format.components
    # 8-bit luma alone in plane 0 (yuv*p, yuvj*p, nv12, gray): read in place; packed or
    # deeper formats (whose sample layout varies) through the scaler
    if luma.is_luma and luma.plane == 0 and luma.bits == 8 and all(c.plane for c in rest):
        plane = frame.planes[0]
        h, w = frame.height, frame.width
        rows = np.frombuffer(plane, dtype=np.uint8).reshape(-1, plane.line_size)[:h, :w]
        n = side * 4
        ys = (np.arange(n) * h) // n
        xs = (np.arange(n) * w) // n
        pts = rows[ys][:, xs].astype(np.float32)
        return pts.reshape(side, 4, side, 4).mean(axis=(1, 3)).ravel()
    return frame.to_ndarray(format="gray", width=side, height=side).astype(np.float32).ravel()


class _CutDetector:
    """Finds the first frame of a new picture between two grid samples, so that a picture
    shown for less than the sampling interval (a still spliced into a video for half a
    second) is still hashed. Each decoded frame is reduced to a 16x16 grey signature
    (:func:`_luma_grid`); a frame is a cut when its signature correlates below ``MAX_CORR``
    with the last kept frame's (zero-mean, unit-variance: brightness changes and fades are not
    cuts), or its mean brightness moved by more than ``MAX_SHIFT`` grey levels, or one of the
    two is flat and the other is not; and at least ``min_gap`` seconds passed since the last
    kept frame (bounds the extra frames)."""

    SIDE = 16
    MAX_CORR = 0.5
    MAX_SHIFT = 60.0
    FLAT_RMS = 2.0

    def __init__(self, min_gap: float) -> None:
        self.min_gap = min_gap
        self.seen = False
        self.last: np.ndarray | None = None
        self.last_mean = 0.0
        self.last_t = float("-inf")

    def _signature(self, frame: Any) -> tuple[np.ndarray | None, float]:
        """(unit-norm zero-mean signature, or None for a flat frame; mean grey level)."""
        g = _luma_grid(frame, self.SIDE)
        mean = float(g.mean())
        g -= mean
        norm = float(np.linalg.norm(g))
        # flat: under ~2 grey levels RMS across the cells (a fade to black, a title card in
        # one colour); its correlation with anything is noise, so only its brightness counts
        return (g / norm if norm >= self.FLAT_RMS * self.SIDE else None), mean

    def changed(self, frame: Any, t: float, on_grid: bool) -> bool:
        """Whether ``frame`` (at ``t`` s) starts a new picture; ``on_grid``: it is kept
        anyway (it becomes the reference the next frames are compared with)."""
        if not on_grid and t - self.last_t < self.min_gap:
            return False
        sig, mean = self._signature(frame)
        cut = False
        if not on_grid and self.seen:
            if abs(mean - self.last_mean) > self.MAX_SHIFT:
                cut = True
            elif sig is None or self.last is None:
                cut = (sig is None) != (self.last is None)  # a picture appeared or went
            else:
                cut = float(sig @ self.last) < self.MAX_CORR
        if on_grid or cut:
            self.last, self.last_mean, self.last_t, self.seen = sig, mean, t, True
        return cut


def _finish(info: MediaInfo, sampler: _Sampler[T]) -> tuple[MediaInfo, list[Sample[T]]]:
    info.kept = len(sampler.kept)
    if info.limited is None and sampler.thinned:  # a decode bound that stopped it says more
        info.limited = "max_samples"
    return info, sampler.kept


def decode_frames(src: str | os.PathLike[str] | bytes, kind: str,
                  on_frame: Callable[[Frame], T],
                  limits: FrameLimits | None = None) -> tuple[MediaInfo, list[Sample[T]]]:
    """Decode ``src`` (a path, or the file's bytes) of ``kind`` ``"video"`` or
    ``"animation"``, calling ``on_frame`` on each kept frame as it is decoded (see the module
    docstring for sampling and bounds). Only what ``on_frame`` returns is kept, so memory
    does not grow with the video's length.

    Returns ``(info, samples)`` in time order. Raises :class:`MediaError` when nothing could
    be decoded; exceptions raised by ``on_frame`` propagate.
    """
    if kind == "video":
        return _video(src, limits or VIDEO_LIMITS, on_frame)
    if kind == "animation":
        return _animation(src, limits or ANIMATION_LIMITS, on_frame)
    raise ValueError(f"kind must be 'video' or 'animation', not {kind!r}")


def stream_rotation(frame: object, stream: object) -> int:
    """Counter-clockwise degrees (0/90/180/270) that make a stored frame upright: PyAV's
    ``frame.rotation`` (the display matrix), else the legacy ``rotate`` tag (clockwise)."""
    rot = getattr(frame, "rotation", None)
    if rot:
        return int(round(float(rot) / 90.0)) * 90 % 360
    tag = (getattr(stream, "metadata", None) or {}).get("rotate")
    if tag:
        try:
            return int(round(-float(tag) / 90.0)) * 90 % 360
        except ValueError:
            return 0
    return 0


def _over_budget(info: MediaInfo, pixel_frames: int, lim: FrameLimits) -> bool:
    """Whether a decode bound is reached (then ``info.limited`` names it)."""
    if info.frame_count >= lim.max_frames:
        info.limited = "max_frames"
    elif pixel_frames >= lim.max_pixel_frames:
        info.limited = "max_pixel_frames"
    return info.limited is not None


def _video(src: str | os.PathLike[str] | bytes, lim: FrameLimits,
           on_frame: Callable[[Frame], T]) -> tuple[MediaInfo, list[Sample[T]]]:
    import av

    try:
        container = av.open(io.BytesIO(src) if isinstance(src, bytes) else os.fspath(src),
                            mode="r")
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise MediaError("truncated", f"cannot open video: {exc}") from None
    with container:
        if not container.streams.video:
            raise MediaError("no_video", "container holds no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        sw, sh = stream.width or 0, stream.height or 0
        if sw * sh > lim.max_frame_pixels:
            raise MediaError("too_large", f"{sw}x{sh} frames, over the "
                             f"{lim.max_frame_pixels}-pixel limit")
        info = MediaInfo(kind="video", format=container.format.name if container.format else "")
        rate = float(stream.average_rate) if stream.average_rate else 0.0
        sampler = _Sampler(lim.every, lim.max_samples, on_frame, info)
        cuts = (_CutDetector(lim.every / lim.cuts_per_interval)
                if lim.every > 0 and lim.cuts_per_interval > 0 else None)
        pixel_frames = 0
        last_t = 0.0
        try:
            for frame in container.decode(stream):
                n = info.frame_count
                w, h = frame.width, frame.height
                if w * h > lim.max_frame_pixels:
                    info.limited = "max_frame_pixels"
                    break
                info.frame_count += 1
                pixel_frames += w * h
                t = frame.time if frame.time is not None else (n / rate if rate else float(n))
                last_t = max(last_t, t)
                if n == 0:
                    info.rotation = stream_rotation(frame, stream)
                    info.width, info.height = (h, w) if info.rotation in (90, 270) else (w, h)
                on_grid = sampler.want(t)
                cut = cuts is not None and cuts.changed(frame, t, on_grid)
                if on_grid or cut:
                    rw, rh = _reduced_size(w, h, lim.max_side)
                    px = frame.to_ndarray(format="rgb24", width=rw, height=rh)
                    sampler.keep(Frame(n, round(t, 3), _upright(px, info.rotation), info.width,
                                       info.height, cut=not on_grid))
                if _over_budget(info, pixel_frames, lim):
                    break
        except (av.error.FFmpegError, ValueError) as exc:
            if info.frame_count == 0:
                raise MediaError("truncated", f"video data cannot be decoded: {exc}") from None
            # a cut-off video keeps what was decoded: frames before the damage still match
        if info.frame_count == 0:
            raise MediaError("truncated", "no frame could be decoded")
        if info.limited is None and container.duration:
            info.duration = round(container.duration / 1_000_000, 3)
        elif info.limited is None and stream.duration and stream.time_base:
            info.duration = round(float(stream.duration * stream.time_base), 3)
        else:
            info.duration = round(last_t + (1 / rate if rate else 0), 3)
        if not info.width:
            info.width, info.height = sw, sh
    return _finish(info, sampler)


def _animation(src: str | os.PathLike[str] | bytes, lim: FrameLimits,
               on_frame: Callable[[Frame], T]) -> tuple[MediaInfo, list[Sample[T]]]:
    from PIL import Image, ImageFile

    data = src if isinstance(src, bytes) else Path(src).read_bytes()
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except Exception as exc:
        raise MediaError("truncated", f"cannot open animation: {exc}") from None
    with im:
        w, h = im.size
        if w * h > lim.max_frame_pixels:
            raise MediaError("too_large", f"{w}x{h} frames, over the "
                             f"{lim.max_frame_pixels}-pixel limit")
        info = MediaInfo(kind="animation", format=(im.format or "").upper(), width=w, height=h)
        sampler = _Sampler(lim.every, lim.max_samples, on_frame, info)
        seen: set[bytes] = set()
        t_ms = 0.0
        pixel_frames = 0
        n = 0
        while True:
            try:
                im.seek(n)
            except EOFError:
                break
            except Exception as exc:
                if n == 0:
                    raise MediaError("truncated", f"cannot read animation: {exc}") from None
                info.extra["damaged_at_frame"] = n
                break
            try:
                rgb = im.convert("RGB")
            except Exception as exc:
                if n == 0:
                    raise MediaError("truncated", f"animation data is corrupt: {exc}") from None
                info.extra["damaged_at_frame"] = n
                break
            info.frame_count += 1
            pixel_frames += w * h
            t = t_ms / 1000.0
            duration = im.info.get("duration") or 0
            t_ms += float(duration) if isinstance(duration, int | float) else 0.0
            if sampler.want(t):
                rw, rh = _reduced_size(w, h, lim.max_side)
                small = rgb if (rw, rh) == (w, h) else rgb.reduce(max(1, min(w // rw, h // rh)))
                if small.size != (rw, rh):
                    small = small.resize((rw, rh), Image.Resampling.BOX)
                px = np.asarray(small)
                digest = hashlib.blake2b(px.tobytes(), digest_size=16).digest()
                if digest not in seen:  # only distinct frames
                    seen.add(digest)
                    sampler.keep(Frame(n, round(t, 3), px, w, h))
            n += 1
            if _over_budget(info, pixel_frames, lim):
                break
        info.duration = round(t_ms / 1000.0, 3) if t_ms else None
    if info.frame_count == 0:
        raise MediaError("truncated", "no frame could be decoded")
    return _finish(info, sampler)
