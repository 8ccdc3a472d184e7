"""Uploaded bytes → hashes (+ review thumbnails), decoding once.

``hashwatch.hashing`` hashes files by path; an upload is already in memory, so this is the
bytes-based equivalent of :func:`hashwatch.hashing.hash_file` (same limits, same
``FileHashes`` record), which also keeps the decoded pixels for the review thumbnails.

:func:`hash_upload` is the one function that decodes an upload (image, animation or
video); the service runs it in a child process with a deadline
(:mod:`hashwatch.service.isolation`), so every decoder reached from here is bounded in
time, memory and concurrent pixels without more work. Its errors are :class:`UploadError`
(status, code, message), which cross a process boundary intact.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from hashwatch.decode import DEFAULT_MAX_SIDE, DecodeError
from hashwatch.hashing import FileHashes, hash_image_bytes, media_fields
from hashwatch.media import ANIMATION_LIMITS, MediaError, hash_media, is_animated_image
from hashwatch.signals.crypto import hash_bytes as crypto_hashes

# magic numbers of common video containers: a clear 415 instead of "not an image"
_VIDEO_MAGIC = (
    (4, b"ftypisom"), (4, b"ftypmp4"), (4, b"ftypqt"), (4, b"ftypM4V"), (4, b"ftypavc1"),
    (4, b"ftyp3gp"), (0, b"\x1a\x45\xdf\xa3"), (8, b"AVI "), (0, b"FLV"), (0, b"OggS"),
)


def looks_like_video(data: bytes) -> bool:
    head = data[:16]
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
        return False  # HEIF/AVIF stills share the ISO-BMFF container with MP4
    return any(head[off : off + len(m)] == m for off, m in _VIDEO_MAGIC)


@dataclass
class HashedUpload:
    hashes: FileHashes
    pixels: np.ndarray | None  # reduced decode (longer side <= 512), for thumbnails
    frames: list[tuple[float, str, int]] | None = None  # video/animation: (s, pdq, quality)
    duration: float | None = None


class VideoUnsupported(Exception):
    """Video hashing is not available in this build."""


def hash_video_bytes(data: bytes, name: str = "upload", *, max_samples: int = 600,
                     extras: Any = None, max_pixel_frames: int | None = None) -> HashedUpload:
    """Crypto hashes of the file + PDQ of one frame per second, display rotation applied, with
    the matcher's query views per distinct frame (``extras``) and the vPDQ
    (:func:`hashwatch.media.hash_media`, bounded by its frame limits). Raises ``MediaError``
    (``.reason``) for undecodable data, VideoUnsupported without PyAV."""
    try:
        import av  # noqa: F401  (PyAV decodes the video)

        from hashwatch.media import FrameLimits, hash_media
    except ImportError as exc:  # pragma: no cover - PyAV is a dependency
        raise VideoUnsupported(str(exc)) from None
    crypto = crypto_hashes(data)
    limits = FrameLimits(max_samples=max_samples)
    if max_pixel_frames is not None:  # the service's tighter decoding budget
        limits = dataclasses.replace(limits, max_pixel_frames=max_pixel_frames)
    m = hash_media(data, "video", extras=extras, limits=limits)
    fields = media_fields(m)
    fields["pdq"] = fields["pdq_quality"] = None  # a video is not a picture: see its frames
    rec = FileHashes(name, size=crypto.size, md5=crypto.md5, sha1=crypto.sha1,
                     sha256=crypto.sha256, width=m.info.width, height=m.info.height,
                     format=m.info.format, **fields)
    return HashedUpload(rec, m.info.thumb, frames=[(f.t, f.pdq, f.quality) for f in m.frames],
                        duration=m.info.duration)


def hash_bytes(
    data: bytes, name: str = "upload", *, max_pixels: int = 100_000_000,
    max_bytes: int = 200 * 1024 * 1024, extras: Any = None,
) -> HashedUpload:
    """Hash an in-memory upload. Raises :class:`DecodeError` (``.reason``) for a bad image:
    the service answers those with a 4xx, unlike batch hashing which records them. An
    animated GIF/WebP/APNG also gets every distinct frame's PDQ (with ``extras``, the
    matcher's query views, per frame); a still gets ``extras`` of its decoded pixels in
    ``hashes.extras``, computed here: in the service this runs in a decoding child process,
    so the query views and keypoints of an upload are computed beside the other uploads'
    on every core, not in the worker's request threads."""
    crypto = crypto_hashes(data)
    animated = is_animated_image(data)
    img = hash_image_bytes(data, max_side=DEFAULT_MAX_SIDE, max_pixels=max_pixels,
                           max_bytes=max_bytes, rgb=True,
                           extras=None if animated else extras)
    rec = FileHashes(
        name, size=crypto.size, md5=crypto.md5, sha1=crypto.sha1, sha256=crypto.sha256,
        pdq=img.pdq, pdq_quality=img.pdq_quality, width=img.width, height=img.height,
        format=img.format, kind="image", extras=img.extras,
    )
    if animated:
        try:
            m = hash_media(data, "animation", extras=extras,
                           limits=dataclasses.replace(ANIMATION_LIMITS,
                                                      max_frame_pixels=max_pixels))
        except MediaError:
            return HashedUpload(rec, img.pixels)  # frame 0 decoded as a still: keep that
        fields = media_fields(m)
        del fields["pdq"], fields["pdq_quality"]
        rec = dataclasses.replace(rec, **fields)
        return HashedUpload(rec, img.pixels, frames=[(f.t, f.pdq, f.quality) for f in m.frames],
                            duration=m.info.duration)
    return HashedUpload(rec, img.pixels)


@dataclass(frozen=True)
class UploadLimits:
    """Bounds for one upload: bytes, pixels of an image, video frames kept and the video's
    decoding budget (pixels x frames, summed over every decoded frame)."""

    max_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 100_000_000
    video_max_samples: int = 600
    video_max_decoded_pixels: int = 4_000_000_000  # ~16 min of 1080p at 30 fps


class UploadError(Exception):
    """An upload that cannot be hashed: ``status`` and ``code`` are the API's answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status, code, message)
        self.status, self.code, self.message = status, code, message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


_DECODE_STATUS = {"too_large": (413, "image_too_large"), "not_an_image": (415, "not_an_image"),
                  "unsupported": (415, "unsupported_image"), "truncated": (422, "truncated_image")}


def hash_upload(data: bytes, name: str = "upload", limits: UploadLimits | None = None,
                extras: Any = None) -> HashedUpload:
    """Hash one upload: a video (by its container's magic number) or an image (animated
    ones: every distinct frame). The one decoding entry point of the service. ``extras``:
    the matcher's query views per distinct frame (a picklable callable). Raises
    :class:`UploadError`."""
    lim = limits or UploadLimits()
    if looks_like_video(data):
        try:
            return hash_video_bytes(data, name, max_samples=lim.video_max_samples,
                                    extras=extras,
                                    max_pixel_frames=lim.video_max_decoded_pixels)
        except VideoUnsupported:
            raise UploadError(415, "video_not_supported",
                              "video hashing is not available in this build") from None
        except MediaError as exc:  # undecodable, audio-only or over a bound
            status, code = {"no_video": (415, "no_video_stream"),
                            "too_large": (413, "video_too_large")}.get(exc.reason,
                                                                       (422, "bad_video"))
            raise UploadError(status, code, str(exc)[:300]) from None
    try:
        return hash_bytes(data, name, max_pixels=lim.max_pixels, max_bytes=lim.max_bytes,
                          extras=extras)
    except DecodeError as exc:
        status, code = _DECODE_STATUS.get(exc.reason, (415, "not_an_image"))
        raise UploadError(status, code, str(exc)[:300]) from None


def upload_cost(data: bytes, limits: UploadLimits | None = None) -> int:
    """Pixels decoding this upload may hold at once, read from the header only (no pixel
    data is decoded): width x height of an image (an animation composites one frame at a
    time); a video or an unreadable header counts as the pixel limit (the most it can
    cost)."""
    lim = limits or UploadLimits()
    if looks_like_video(data):
        return lim.max_pixels
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except Exception:  # the decoder proper reports what is wrong with it
        return 1
    return max(1, min(int(w) * int(h), lim.max_pixels))


def _fit(im: Image.Image, side: int) -> Image.Image:
    im = im.copy()
    im.thumbnail((side, side), Image.Resampling.LANCZOS)
    return im


def blurred_thumbnail(pixels: np.ndarray, side: int = 256) -> bytes:
    """Greyscale, heavily blurred JPEG: what a reviewer sees by default."""
    im = _fit(Image.fromarray(pixels).convert("L"), side)
    radius = max(4, max(im.size) // 20)
    im = im.filter(ImageFilter.GaussianBlur(radius))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=70)
    return buf.getvalue()


def clear_preview(pixels: np.ndarray, side: int = 768) -> bytes:
    im = _fit(Image.fromarray(pixels), side)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    return buf.getvalue()


__all__ = ["DecodeError", "HashedUpload", "UploadError", "UploadLimits", "VideoUnsupported",
           "blurred_thumbnail", "clear_preview", "hash_bytes", "hash_upload",
           "hash_video_bytes", "looks_like_video", "upload_cost"]
