"""What seized media holds: files in folder trees, and the members of archives inside them.

Files are identified by content (magic bytes), never by extension: a JPEG renamed ``.txt`` is
an image, a zip renamed ``.jpg`` is an archive. Archive members are named
``archive.zip!inner/path`` (nested: ``a.zip!b.tar.gz!c.jpg``).
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from hashwatch.metadata import iso_utc, zip_extended_mtime

__all__ = [
    "ARCHIVE_KINDS",
    "ArchiveError",
    "Member",
    "SourceFile",
    "iter_members",
    "sniff",
    "walk_sources",
]

SEP = "!"
SNIFF_BYTES = 4096
ARCHIVE_KINDS = frozenset({"zip", "tar", "gzip", "bzip2", "xz", "7z"})

# ISO-BMFF brands that are still images (HEIF/AVIF); any other ftyp is a video or audio file.
_IMAGE_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs",
                 b"mif1", b"msf1", b"avif", b"avis"}
_QT_ATOMS = {b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}
_BMP_HEADER_SIZES = {12, 40, 52, 56, 64, 108, 124}


class ArchiveError(Exception):
    """An archive that cannot be listed or read. ``reason`` is one word."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


def sniff(head: bytes) -> str:
    """Kind of a file from its first bytes: image, video, zip, tar, gzip, bzip2, xz, 7z, other.

    Images include formats the decoder reports as unsupported (JPEG XL, PSD, JPEG 2000) so that
    the analyst sees them as images that need another tool, not as documents.
    """
    h = head
    if h.startswith(b"\xff\xd8\xff") or h.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image"
    if h[:6] in (b"GIF87a", b"GIF89a") or h[:4] in (b"II*\x00", b"MM\x00*"):
        return "image"
    if h[:4] == b"RIFF" and h[8:12] == b"WEBP":
        return "image"
    if h[:2] == b"BM" and len(h) >= 18 and int.from_bytes(h[14:18], "little") in _BMP_HEADER_SIZES:
        return "image"
    if (h.startswith(b"\xff\x0a") or h.startswith(b"\x00\x00\x00\x0cJXL \r\n\x87\n")
            or h.startswith(b"8BPS") or h.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n")
            or h.startswith(b"\xff\x4f\xff\x51")):
        return "image"
    if len(h) >= 12 and h[4:8] == b"ftyp":
        brand = h[8:12]
        if brand in _IMAGE_BRANDS:
            return "image"
        return "video"  # mp4, mov, m4v, 3gp (audio-only m4a is sorted out when decoded)
    if len(h) >= 8 and h[4:8] in _QT_ATOMS:
        return "video"  # old QuickTime without ftyp
    if h[:4] == b"RIFF" and h[8:12] in (b"AVI ", b"AVIX"):
        return "video"
    if h[:4] == b"\x1a\x45\xdf\xa3":
        return "video"  # Matroska / WebM
    if h[:3] == b"FLV" or h[:4] == b"\x30\x26\xb2\x75" or h[:4] == b"\x00\x00\x01\xba":
        return "video"  # FLV, ASF/WMV, MPEG-PS
    if len(h) > 376 and h[0] == 0x47 and h[188] == 0x47 and h[376] == 0x47:
        return "video"  # MPEG-TS
    if h[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if h[:6] == b"7z\xbc\xaf\x27\x1c":
        return "7z"
    if h[:2] == b"\x1f\x8b":
        return "gzip"
    if h[:3] == b"BZh":
        return "bzip2"
    if h[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if len(h) >= 262 and h[257:262] == b"ustar":
        return "tar"
    return "other"


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One file on disk to triage: its path, size and which SOURCE argument it came from."""

    path: str  # absolute
    size: int
    source: str  # the SOURCE argument as given


def walk_sources(sources: Iterable[str | os.PathLike[str]]) -> Iterator[SourceFile]:
    """Every regular file under the sources, depth-first, names sorted (a stable order makes
    resumed runs and reports reproducible). Symlinked folders are not followed (no loops);
    unreadable folders and missing sources are yielded so they are reported, with size -1."""
    for src in sources:
        s = os.fspath(src)
        top = os.path.abspath(s)
        if os.path.isdir(top):
            yield from _walk(top, s)
        else:
            yield SourceFile(top, _size(top), s)


def _size(path: str) -> int:
    try:
        st = os.stat(path)
    except OSError:
        return -1
    return st.st_size if stat.S_ISREG(st.st_mode) else -1


def _walk(top: str, source: str) -> Iterator[SourceFile]:
    try:
        with os.scandir(top) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        yield SourceFile(top, -1, source)
        return
    for e in entries:
        try:
            if e.is_dir(follow_symlinks=False):
                yield from _walk(e.path, source)
            elif e.is_file(follow_symlinks=True):
                yield SourceFile(e.path, e.stat(follow_symlinks=True).st_size, source)
        except OSError:
            yield SourceFile(e.path, -1, source)


@dataclass
class Member:
    """One regular file inside an archive. ``read()`` returns its bytes (at most ``limit``);
    ``error`` is set instead when the member cannot be read (encrypted, corrupt, over size)."""

    name: str
    size: int
    data: bytes | None = None
    error: str | None = None
    # the member's own modification time as the archive records it: UTC ISO ("...Z") for
    # tar, 7z and zip members with an extended timestamp; zip DOS times are local wall clock
    # (no zone)
    modified: str | None = None


def _open_source(src: str | bytes) -> IO[bytes]:
    return io.BytesIO(src) if isinstance(src, bytes) else open(src, "rb")  # noqa: SIM115


def iter_members(kind: str, src: str | bytes, *, max_member: int) -> Iterator[Member]:
    """Members of an archive (a path or its bytes), in archive order.

    Members over ``max_member`` bytes are reported with a ``too_large`` error (their hashes
    cannot be taken without extracting them). Raises :class:`ArchiveError` when the archive
    itself cannot be read; errors of single members are reported on the member.
    """
    try:
        if kind == "zip":
            yield from _zip_members(src, max_member)
        elif kind in ("tar", "gzip", "bzip2", "xz"):
            yield from _tar_members(kind, src, max_member)
        elif kind == "7z":
            yield from _7z_members(src, max_member)
        else:  # pragma: no cover - callers only pass archive kinds
            raise ArchiveError("unsupported", f"{kind} is not an archive kind")
    except ArchiveError:
        raise
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError,
            NotImplementedError, RuntimeError) as exc:
        raise ArchiveError("corrupt_archive", f"{type(exc).__name__}: {exc}") from None
    except Exception as exc:  # hostile archives reach odd corners of the libraries
        if type(exc).__module__.startswith(("py7zr", "lzma", "zlib", "bz2")):
            raise ArchiveError("corrupt_archive", f"{type(exc).__name__}: {exc}") from None
        raise


def _zip_members(src: str | bytes, max_member: int) -> Iterator[Member]:
    with _open_source(src) as fh, zipfile.ZipFile(fh) as z:
        for info in z.infolist():
            if info.is_dir():
                continue
            m = Member(info.filename, info.file_size, modified=_zip_time(info))
            if info.flag_bits & 0x1:
                m.error = "encrypted: member is password-protected"
            elif info.file_size > max_member:
                m.error = f"too_large: member is {info.file_size} bytes"
            else:
                try:
                    with z.open(info) as f:
                        m.data = f.read(max_member + 1)
                    if len(m.data) > max_member:
                        m.data, m.error = None, "too_large: member is over the limit"
                except (zipfile.BadZipFile, OSError, EOFError, ValueError,
                        NotImplementedError, RuntimeError) as exc:
                    m.error = f"corrupt_archive: {type(exc).__name__}: {exc}"
                except Exception as exc:  # zlib.error and friends
                    m.error = f"corrupt_archive: {type(exc).__name__}: {exc}"
            yield m


def _tar_members(kind: str, src: str | bytes, max_member: int) -> Iterator[Member]:
    with _open_source(src) as fh:
        try:
            t = tarfile.open(fileobj=fh, mode="r:*")  # noqa: SIM115 - closed by the with below
        except tarfile.ReadError:
            if kind in ("gzip", "bzip2", "xz"):
                # a single compressed file, not a tar: its one member is the decompressed bytes
                yield _single_compressed(kind, src, max_member)
                return
            raise
        with t:
            for info in t:
                if not info.isfile():
                    continue
                m = Member(info.name, info.size, modified=iso_utc(info.mtime) if info.mtime
                           else None)
                if info.size > max_member:
                    m.error = f"too_large: member is {info.size} bytes"
                else:
                    f = t.extractfile(info)
                    m.data = f.read() if f is not None else b""
                yield m


def _zip_time(info: zipfile.ZipInfo) -> str | None:
    utc = zip_extended_mtime(info.extra or b"")
    if utc is not None:
        return iso_utc(utc)
    y, mo, d, h, mi, se = info.date_time
    if y <= 1980 and mo <= 1 and d <= 1 and not (h or mi or se):
        return None  # the DOS epoch: no time recorded
    return f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{se:02d}"


def _7z_time(info: Any) -> str | None:
    t = getattr(info, "creationtime", None)  # py7zr: the member's last-write time
    if t is None:
        return None
    try:
        return iso_utc(t.timestamp())
    except (AttributeError, ValueError, OSError):
        return None


def _single_compressed(kind: str, src: str | bytes, max_member: int) -> Member:
    import bz2
    import gzip
    import lzma

    opener: Any = {"gzip": gzip.open, "bzip2": bz2.open, "xz": lzma.open}[kind]
    with _open_source(src) as fh, opener(fh) as z:
        data = z.read(max_member + 1)
    if len(data) > max_member:
        return Member("(decompressed)", -1, error="too_large: decompressed data over the limit")
    return Member("(decompressed)", len(data), data=data)


def _7z_members(src: str | bytes, max_member: int) -> Iterator[Member]:
    import py7zr
    from py7zr.io import BytesIOFactory

    with _open_source(src) as fh:
        try:
            z = py7zr.SevenZipFile(fh, mode="r")
        except py7zr.exceptions.PasswordRequired:
            raise ArchiveError("encrypted", "7z archive is password-protected") from None
        with z:
            if z.needs_password():
                raise ArchiveError("encrypted", "7z archive is password-protected")
            infos = [i for i in z.list() if not i.is_directory]
            # extract in batches of bounded total size: memory stays bounded on big archives
            batch: list[Any] = []
            total = 0
            for info in infos + [None]:
                size = (info.uncompressed or 0) if info is not None else 0
                if info is not None and size > max_member:
                    yield Member(info.filename, size, error=f"too_large: member is {size} bytes",
                                 modified=_7z_time(info))
                    continue
                if batch and (info is None or total + size > max(max_member, 256 << 20)):
                    factory = BytesIOFactory(max_member + 1)
                    z.reset()
                    z.extract(targets=[b.filename for b in batch], factory=factory)
                    for b in batch:
                        try:
                            prod = factory.get(b.filename)
                        except KeyError:
                            yield Member(b.filename, b.uncompressed or 0,
                                         error="corrupt_archive: member could not be extracted",
                                         modified=_7z_time(b))
                            continue
                        prod.seek(0)
                        yield Member(b.filename, b.uncompressed or 0, data=prod.read(),
                                     modified=_7z_time(b))
                    batch, total = [], 0
                if info is not None:
                    batch.append(info)
                    total += size
