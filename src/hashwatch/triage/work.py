"""One file of seized media (on disk or inside an archive) → :class:`FileRecord` s.

Runs in worker processes: it reads, identifies, decodes and hashes; it never touches a
database. An archive yields its own record and then, recursively, its members' records.
Nothing raises for a bad file: the record's ``error`` says ``"reason: message"``.
"""

from __future__ import annotations

import io
import os
import stat
import time
from dataclasses import dataclass, field
from typing import Any

from hashwatch.decode import DEFAULT_MAX_BYTES, DEFAULT_MAX_SIDE, DecodeError
from hashwatch.hashing import hash_image_bytes
from hashwatch.metadata import fs_times, image_metadata, video_metadata
from hashwatch.signals.crypto import hash_bytes, hash_path
from hashwatch.triage.sources import (
    ARCHIVE_KINDS,
    SEP,
    SNIFF_BYTES,
    ArchiveError,
    SourceFile,
    iter_members,
    sniff,
)

__all__ = ["FileRecord", "WorkOptions", "process_file"]

MAX_DEPTH = 8  # nested archives deeper than this are recorded, not opened (zip-bomb guard)
# Per-record timings are CPU seconds of this worker process (threads included: PyAV decodes
# with several): the split between reading, decoding and hashing does not depend on how
# busy the machine is.
_clock = time.process_time


@dataclass(frozen=True)
class WorkOptions:
    max_bytes: int = DEFAULT_MAX_BYTES
    max_side: int = DEFAULT_MAX_SIDE
    video_every: float = 1.0
    thumbnails: bool = False
    thumb_side: int = 96
    # the Matcher's query_extras() (robust views of each image, computed beside PDQ), or None
    extras: Any = None


@dataclass
class FileRecord:
    path: str  # absolute; members as archive!inner/path
    source: str  # the SOURCE argument it came from
    container: str = ""  # the outermost archive on disk holding it ("" on disk)
    kind: str = "other"  # image | video | archive | other | unreadable
    format: str = ""
    size: int | None = None
    md5: str | None = None
    sha1: str | None = None
    sha256: str | None = None
    pdq: str | None = None
    pdq_quality: int | None = None
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    frame_count: int | None = None
    # (seconds, pdq, quality, cut: kept after a cut, off the sampling grid)
    frames: list[tuple[float, str, int, bool]] = field(default_factory=list)
    # videos and animations: the kept frames with their query views (hashwatch.media), and a
    # video's vPDQ; read by the Matcher, not stored
    frame_hashes: tuple[Any, ...] | None = None
    vpdq: tuple[Any, ...] | None = None
    error: str | None = None
    thumb: bytes | None = None
    extras: dict[str, Any] | None = None  # robust query views for the Matcher (not stored)
    # file-system times (fs_*), an archive member's own time (member_modified), EXIF or
    # container tags (hashwatch.metadata): flat, JSON-able, only what the file has
    meta: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # e.g. malformed metadata: never fatal
    # CPU seconds spent, for the benchmark's split: read (I/O + archive extraction), decode,
    # hash (crypto + PDQ)
    t_read: float = 0.0
    t_decode: float = 0.0
    t_hash: float = 0.0

    # attributes the Matcher reads (HashedLike)
    @property
    def pdq_dihedral(self) -> None:
        return None


def _thumb(pixels: Any, side: int) -> bytes:
    """A small greyscale JPEG (the report blurs it until clicked)."""
    from PIL import Image

    im = Image.fromarray(pixels).convert("L")
    im.thumbnail((side, side))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=60)
    return buf.getvalue()


def process_file(sf: SourceFile, opts: WorkOptions) -> list[FileRecord]:
    """All records for one file on disk: the file itself, then archive members if any."""
    out: list[FileRecord] = []
    rec = FileRecord(path=sf.path, source=sf.source)
    t0 = _clock()
    try:
        with open(sf.path, "rb") as fh:
            st = os.fstat(fh.fileno())
            # before the file is read, so atime is the evidence's, not ours
            rec.meta.update({f"fs_{k}": v for k, v in fs_times(sf.path, st).items() if v})
            if not stat.S_ISREG(st.st_mode):
                rec.kind, rec.error = "unreadable", "unreadable: not a regular file"
                return [rec]
            head = fh.read(SNIFF_BYTES)
            kind = sniff(head)
            data: bytes | None = None
            # Read whole the files we decode or open from memory; stream the rest (videos go
            # to PyAV by path, other files are only digested).
            if st.st_size <= opts.max_bytes and (kind == "image" or kind in ARCHIVE_KINDS):
                data = head + fh.read()
            elif kind == "other" and st.st_size <= SNIFF_BYTES:
                data = head  # already read whole
    except OSError as exc:
        rec.kind, rec.error = "unreadable", f"unreadable: {exc.strerror or exc}"
        return [rec]
    rec.t_read = _clock() - t0
    _handle(rec, data if data is not None else sf.path, kind, opts, out, depth=0,
            container=sf.path)
    return out


def _crypto(rec: FileRecord, src: str | bytes) -> None:
    t = _clock()
    c = hash_bytes(src) if isinstance(src, bytes) else hash_path(src)
    rec.size, rec.md5, rec.sha1, rec.sha256 = c.size, c.md5, c.sha1, c.sha256
    rec.t_hash += _clock() - t


def _handle(rec: FileRecord, src: str | bytes, kind: str, opts: WorkOptions,
            out: list[FileRecord], *, depth: int, container: str) -> None:
    out.append(rec)
    _crypto(rec, src)
    if kind == "image":
        rec.kind = "image"
        if not isinstance(src, bytes):  # over max_bytes on disk
            rec.error = f"too_large: file is {rec.size} bytes, over the {opts.max_bytes}-byte limit"
            return
        _image(rec, src, opts)
    elif kind == "video":
        _video(rec, src, opts)
    elif kind in ARCHIVE_KINDS:
        rec.kind, rec.format = "archive", kind
        if depth >= MAX_DEPTH:
            rec.error = f"too_deep: archive nested more than {MAX_DEPTH} levels, not opened"
            return
        _archive(rec, src, kind, opts, out, depth=depth, container=container)
    else:
        rec.kind = "other"


def _image(rec: FileRecord, data: bytes, opts: WorkOptions) -> None:
    t = _clock()
    try:
        img = hash_image_bytes(data, max_side=opts.max_side, max_bytes=opts.max_bytes,
                               extras=_optional(opts.extras), rgb=opts.thumbnails)
    except DecodeError as exc:
        rec.error = str(exc)
        _image_meta(rec, data)  # a truncated picture may still say which camera took it
        rec.t_decode += _clock() - t
        return
    except Exception as exc:  # a decoder bug on hostile input must not stop the case
        rec.error = f"error: {type(exc).__name__}: {exc}"
        rec.t_decode += _clock() - t
        return
    _image_meta(rec, data)
    rec.t_decode += img.t_decode
    rec.t_hash += img.t_hash
    rec.pdq, rec.pdq_quality = img.pdq, img.pdq_quality
    rec.width, rec.height, rec.format = img.width, img.height, img.format
    rec.extras = img.extras
    if opts.thumbnails:
        rec.thumb = _thumb(img.pixels, opts.thumb_side)
    _animation(rec, data, opts)


def _image_meta(rec: FileRecord, data: bytes) -> None:
    t = _clock()
    meta, warnings = image_metadata(data)
    rec.meta.update(meta)
    rec.warnings += warnings
    rec.t_decode += _clock() - t


def _optional(extras: Any) -> Any:
    """The robust views are a bonus: if they fail, the plain PDQ still matches."""
    if extras is None:
        return None

    def safe(pixels: Any) -> Any:
        try:
            return extras(pixels)
        except Exception:
            return None

    return safe


def _video(rec: FileRecord, src: str | bytes, opts: WorkOptions) -> None:
    from hashwatch.media import FrameLimits, MediaError, hash_media

    rec.kind = "video"
    t = _clock()
    try:
        m = hash_media(src, "video", extras=_optional(opts.extras),
                       limits=FrameLimits(every=opts.video_every))
    except MediaError as exc:
        if exc.reason == "no_video":
            rec.kind = "other"  # an audio-only mp4/m4a: not a picture
            rec.format = "audio"
        else:
            rec.error = str(exc)
        rec.t_decode += _clock() - t
        return
    except Exception as exc:
        rec.error = f"error: {type(exc).__name__}: {exc}"
        rec.t_decode += _clock() - t
        return
    meta, warnings = video_metadata(src)
    rec.meta.update(meta)
    rec.warnings += warnings
    rec.t_decode += _clock() - t
    _take_media(rec, m, opts)
    rec.width, rec.height = m.info.width, m.info.height
    first = m.first_usable()
    if first is not None:
        # the record's own PDQ is its first usable frame (used for clustering and export)
        rec.pdq, rec.pdq_quality = first.pdq, first.quality


def _take_media(rec: FileRecord, m: Any, opts: WorkOptions) -> None:
    """A video's or animation's kept frames (hashwatch.media.hash_media) onto its record."""
    rec.format = rec.format or m.info.format
    rec.duration, rec.frame_count = m.info.duration, m.info.frame_count
    rec.frames = [(f.t, f.pdq, f.quality, f.cut) for f in m.frames]
    rec.frame_hashes = m.frames
    rec.vpdq = m.vpdq
    if m.info.limited:  # an examiner must know a file was not looked at whole
        rec.warnings.append(f"frames limited by {m.info.limited}: {len(m.frames)} of "
                            f"{m.info.frame_count} decoded frames kept, the file was "
                            "covered only in part")
    if opts.thumbnails and m.info.thumb is not None and rec.thumb is None:
        rec.thumb = _thumb(m.info.thumb, opts.thumb_side)


def _animation(rec: FileRecord, data: bytes, opts: WorkOptions) -> None:
    """An animated GIF/WebP/APNG: every distinct frame is hashed and matched, not only the
    first one the still decoder sees."""
    from hashwatch.media import MediaError, hash_media, is_animated_image

    if not is_animated_image(data):
        return
    t = _clock()
    try:
        m = hash_media(data, "animation", extras=_optional(opts.extras))
    except (MediaError, Exception):  # frame 0 was hashed as a still: keep that
        rec.t_decode += _clock() - t
        return
    rec.t_decode += _clock() - t
    _take_media(rec, m, opts)


def _archive(rec: FileRecord, src: str | bytes, kind: str, opts: WorkOptions,
             out: list[FileRecord], *, depth: int, container: str) -> None:
    t = _clock()
    seen: dict[str, int] = {}
    try:
        members = iter_members(kind, src, max_member=opts.max_bytes)
        while True:
            t = _clock()
            try:
                m = next(members)
            except StopIteration:
                break
            name = m.name.lstrip("/")
            # a zip may hold the same name twice: keep both, distinctly named
            n = seen.get(name, 0)
            seen[name] = n + 1
            if n:
                name = f"{name}#{n + 1}"
            child = FileRecord(path=f"{rec.path}{SEP}{name}", source=rec.source,
                               container=container)
            if m.modified:
                child.meta["member_modified"] = m.modified
            child.t_read = _clock() - t
            if m.data is None:
                child.kind, child.size, child.error = "unreadable", m.size, m.error
                out.append(child)
                continue
            _handle(child, m.data, sniff(m.data[:SNIFF_BYTES]), opts, out, depth=depth + 1,
                    container=container)
    except ArchiveError as exc:
        rec.error = str(exc)
    rec.t_read += _clock() - t
