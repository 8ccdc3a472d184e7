"""Files -> :class:`FileHashes` records (crypto + PDQ + size + dimensions + error).

Each file is read once: its bytes (up to ``max_bytes``) feed the three digests and the
decoder. Nothing raises for a bad file; the record's ``error`` says ``"reason: message"``
with reason one of ``unreadable`` (missing, a directory, permissions, not a regular file),
the decode reasons (``truncated``, ``not_an_image``, ``unsupported``, ``too_large``), or
``error`` (an unexpected failure inside a decoder). Crypto hashes are filled whenever the
bytes could be read, including for non-images and over-size files (streamed).

PDQ comes in two modes. Default (fast): the image is decoded reduced (``max_side``) and the
full-resolution PDQ is estimated from it (:func:`hashwatch.signals.pdq.pdq_hash_fast`,
within a few bits of the reference, see BENCHMARKS.md). ``exact_pdq=True``: full-resolution
decode and the reference algorithm on it, bit-identical to threatexchange/pdqhash on the
same (oriented, RGB) pixels, about 20x slower on phone photos.
"""

from __future__ import annotations

import multiprocessing
import os
import stat
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Any

import numpy as np

from hashwatch.decode import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_SIDE,
    DecodeError,
    decode_for_pdq,
    decode_image,
)
from hashwatch.media.frames import MediaError, is_animated_image
from hashwatch.media.hashing import FrameHash, MediaHashes, hash_media
from hashwatch.signals.crypto import hash_bytes as crypto_digests
from hashwatch.signals.crypto import hash_path
from hashwatch.signals.pdq import (
    EXACT_MAX_PIXELS,
    pdq_dihedral,
    pdq_dihedral_fast,
    pdq_hash,
    pdq_hash_fast,
)
from hashwatch.signals.vpdq import VpdqFeature

__all__ = [
    "FileHashes", "ImageHashes", "hash_bytes", "hash_file", "hash_image_bytes", "hash_many",
    "iter_files", "media_fields",
]

StrPath = str | os.PathLike[str]


@dataclass(frozen=True, slots=True)
class FileHashes:
    """The hashes of one file: ``size`` in bytes, ``md5``/``sha1``/``sha256`` as lower-case
    hex, ``pdq`` (64 hex digits) with ``pdq_quality`` (0-100), the picture's ``width`` and
    ``height`` in pixels after EXIF orientation, the decoder's ``format``, and ``error``
    (None, or ``"reason: message"``; the crypto hashes are kept when only decoding failed).
    """

    path: str
    size: int | None = None
    md5: str | None = None
    sha1: str | None = None
    sha256: str | None = None
    pdq: str | None = None
    pdq_quality: int | None = None
    width: int | None = None
    height: int | None = None
    error: str | None = None  # None, or "reason: message"
    format: str | None = None  # decoder's format name, e.g. "JPEG"
    pdq_dihedral: tuple[str, ...] | None = None  # 8 variants when dihedral=True
    # what an ``extras`` function computed from the decoded RGB pixels (e.g. the robust
    # matcher's extra views and keypoints); None when none was asked for or decoding failed
    extras: dict[str, Any] | None = None
    # videos and animated images (hashwatch.media): "image" | "animation" | "video" (None when
    # nothing was decoded), every kept frame's PDQ (with its query views when asked), the
    # video's vPDQ, and facts about the whole file
    kind: str | None = None
    frames: tuple[FrameHash, ...] | None = None
    vpdq: tuple[VpdqFeature, ...] | None = None
    duration: float | None = None
    frame_count: int | None = None
    rotation: int | None = None
    limited: str | None = None  # the bound that cut a long or hostile file short, or thinned it

    @property
    def error_reason(self) -> str | None:
        return None if self.error is None else self.error.split(":", 1)[0]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["pdq_dihedral"] is not None:
            d["pdq_dihedral"] = list(d["pdq_dihedral"])
        if self.frames is not None:
            d["frames"] = [f.as_dict() for f in self.frames]
        if self.vpdq is not None:
            d["vpdq"] = [str(f) for f in self.vpdq]
        return d


def hash_file(
    path: StrPath,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int | None = DEFAULT_MAX_SIDE,
    dihedral: bool = False,
    exact_pdq: bool = False,
    extras: Callable[[np.ndarray], dict[str, Any]] | None = None,
    media: bool = True,
    frame_extras: bool = True,
) -> FileHashes:
    """Hash one file. Never raises for a bad or missing file: see ``FileHashes.error``.

    ``extras``: a picklable function of the decoded RGB pixels (at most ``max_side``) whose
    result is kept in ``FileHashes.extras``; it runs in the hashing worker, beside PDQ.
    ``media``: videos and animated images also get every kept frame's PDQ (``frames``, each
    with its own ``extras``) and videos their vPDQ (:func:`hashwatch.media.hash_media`);
    ``False`` treats them as before (a video is not an image, an animation is its frame 0).
    ``frame_extras=False``: ``extras`` runs on stills only, not on each frame (known-image
    extras: a known video is stored as its vPDQ, not as pictures)."""
    fx = extras if frame_extras else None
    spath = os.fspath(path)
    try:
        # O_NONBLOCK: opening a FIFO (seized media can hold one) must not wait for a writer.
        fd = os.open(spath, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                return FileHashes(spath, error="unreadable: not a regular file")
            if media and _sniff(fh.read(_SNIFF)) == "video":
                # videos are bounded by frames decoded, not bytes: PyAV reads the file itself
                return _hash_video_file(spath, fx)
            fh.seek(0)
            if st.st_size > max_bytes:
                # Still identify it exactly (streamed, constant memory); no decode.
                crypto = hash_path(spath)
                return FileHashes(
                    spath,
                    size=crypto.size,
                    md5=crypto.md5,
                    sha1=crypto.sha1,
                    sha256=crypto.sha256,
                    error=f"too_large: file is {crypto.size} bytes, over the "
                    f"{max_bytes}-byte limit",
                )
            data = fh.read()
    except OSError as exc:
        return FileHashes(spath, error=f"unreadable: {exc.strerror or exc}")

    return hash_bytes(data, path=spath, max_bytes=max_bytes, max_pixels=max_pixels,
                      max_side=max_side, dihedral=dihedral, exact_pdq=exact_pdq, extras=extras,
                      media=media, frame_extras=frame_extras)


def hash_bytes(
    data: bytes,
    *,
    path: str = "",
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int | None = DEFAULT_MAX_SIDE,
    dihedral: bool = False,
    exact_pdq: bool = False,
    extras: Callable[[np.ndarray], dict[str, Any]] | None = None,
    media: bool = True,
    frame_extras: bool = True,
) -> FileHashes:
    """Hash a file's bytes already in memory (an upload, an archive member): the same
    record as :func:`hash_file` (``path`` is only copied into it; videos and animated
    images too), and like it never raises for bad bytes: undecodable data gets its
    MD5/SHA-1/SHA-256 and an ``error``.

    PDQ is Meta's perceptual hash (ThreatExchange ``pdq``, via ``pdqhash``): 256 bits as 64
    hex digits, with a quality 0-100 (below 50 it is not matched)."""
    fx = extras if frame_extras else None
    if media and _sniff(data[:_SNIFF]) == "video":
        return _hash_video_file(path, fx, data)
    crypto = crypto_digests(data)
    base: dict[str, Any] = {
        "size": crypto.size,
        "md5": crypto.md5,
        "sha1": crypto.sha1,
        "sha256": crypto.sha256,
    }
    try:
        img = hash_image_bytes(data, max_bytes=max_bytes, max_pixels=max_pixels,
                               max_side=max_side, dihedral=dihedral, exact_pdq=exact_pdq,
                               extras=extras)
    except DecodeError as exc:
        return FileHashes(path, **base, error=str(exc))
    except Exception as exc:  # a decoder bug on hostile input must not stop a batch
        return FileHashes(path, **base, error=f"error: {type(exc).__name__}: {exc}")
    rec = FileHashes(
        path,
        **base,
        pdq=img.pdq,
        pdq_quality=img.pdq_quality,
        width=img.width,
        height=img.height,
        format=img.format,
        pdq_dihedral=img.pdq_dihedral,
        extras=img.extras,
        kind="image",
    )
    if media and is_animated_image(data):
        rec = _with_animation(rec, data, fx)
    return rec


_SNIFF = 4096


def _sniff(head: bytes) -> str:
    from hashwatch.triage.sources import sniff  # stdlib-only module: the one content sniffer

    return sniff(head)


def media_fields(m: MediaHashes) -> dict[str, Any]:
    """The :class:`FileHashes` fields a video or animation fills from :func:`hash_media`."""
    first = m.first_usable()
    return {
        "kind": m.info.kind,
        "frames": m.frames,
        "vpdq": m.vpdq,
        "duration": m.info.duration,
        "frame_count": m.info.frame_count,
        "rotation": m.info.rotation if m.info.kind == "video" else None,
        "limited": m.info.limited,
        "pdq": first.pdq if first else None,
        "pdq_quality": first.quality if first else None,
    }


def _with_animation(rec: FileHashes, data: bytes,
                    extras: Callable[[np.ndarray], dict[str, Any]] | None) -> FileHashes:
    """An animated GIF/WebP/APNG: the record keeps frame 0's PDQ (what a still decoder and
    partners' PDQ tools see) and gains every distinct frame's."""
    try:
        m = hash_media(data, "animation", extras=extras)
    except MediaError:
        return rec  # frame 0 decoded as a still: keep that
    fields = media_fields(m)
    del fields["pdq"], fields["pdq_quality"]
    return replace(rec, **fields, extras=None)


def _hash_video_file(path: str, extras: Callable[[np.ndarray], dict[str, Any]] | None,
                     data: bytes | None = None) -> FileHashes:
    """A video file (read by PyAV from ``path``, or from ``data`` when given)."""
    try:
        crypto = crypto_digests(data) if data is not None else hash_path(path)
    except OSError as exc:
        return FileHashes(path, error=f"unreadable: {exc.strerror or exc}")
    base: dict[str, Any] = {"size": crypto.size, "md5": crypto.md5, "sha1": crypto.sha1,
                            "sha256": crypto.sha256}
    try:
        m = hash_media(data if data is not None else path, "video", extras=extras)
    except MediaError as exc:
        reason = "not_an_image" if exc.reason == "no_video" else exc.reason
        return FileHashes(path, **base, kind="video", error=f"{reason}: {exc.message}")
    except Exception as exc:  # a decoder bug on hostile input must not stop a batch
        return FileHashes(path, **base, kind="video",
                          error=f"error: {type(exc).__name__}: {exc}")
    return FileHashes(path, **base, width=m.info.width, height=m.info.height,
                      format=m.info.format, **media_fields(m))


@dataclass(frozen=True, slots=True)
class ImageHashes:
    """What :func:`hash_image_bytes` computed from one image's bytes."""

    pdq: str
    pdq_quality: int
    width: int
    height: int
    format: str | None
    pdq_dihedral: tuple[str, ...] | None
    extras: dict[str, Any] | None
    pixels: np.ndarray  # as decoded: RGB when ``rgb``/``extras``/``exact_pdq``, else maybe luma
    t_decode: float  # CPU seconds of this process
    t_hash: float


def hash_image_bytes(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int | None = DEFAULT_MAX_SIDE,
    dihedral: bool = False,
    exact_pdq: bool = False,
    extras: Callable[[np.ndarray], dict[str, Any]] | None = None,
    rgb: bool = False,
) -> ImageHashes:
    """Decode image bytes and hash them: the one bytes -> hashes path that batch hashing,
    triage and the service share. Raises :class:`hashwatch.decode.DecodeError`.

    ``rgb=True`` keeps RGB pixels for the caller (thumbnails, previews); otherwise a luma-only
    decode is used when nothing needs colour (same PDQ, faster)."""
    t0 = time.process_time()
    if exact_pdq:
        img = decode_image(data, max_side=None, max_pixels=max_pixels, max_bytes=max_bytes)
    elif extras is not None or rgb:
        # decode_image + pdq_hash_fast gives the same PDQ as the luma-only path
        img = decode_image(data, max_side=max_side, max_pixels=max_pixels, max_bytes=max_bytes)
    else:
        img = decode_for_pdq(data, max_side=max_side, max_pixels=max_pixels,
                             max_bytes=max_bytes, rgb_max_pixels=EXACT_MAX_PIXELS)
    t1 = time.process_time()
    variants: tuple[str, ...] | None = None
    if dihedral:
        if exact_pdq:
            hexes, quality = pdq_dihedral(img.pixels)
        else:
            hexes, quality = pdq_dihedral_fast(img.pixels, img.height, img.width)
        pdq, variants = hexes[0], tuple(hexes)
    elif exact_pdq:
        pdq, quality = pdq_hash(img.pixels)
    else:
        # the reduced decode hashed as the full-resolution picture would be
        pdq, quality = pdq_hash_fast(img.pixels, img.height, img.width)
    extra = extras(img.pixels) if extras is not None else None
    return ImageHashes(pdq, quality, img.width, img.height, img.format, variants, extra,
                       img.pixels, t1 - t0, time.process_time() - t1)


def iter_files(paths: Iterable[StrPath]) -> Iterator[str]:
    """Yield files under ``paths``: folders recursively, depth-first, names sorted.

    Top-level paths keep the caller's order. Paths that are not folders (missing ones too) are
    yielded as given so that :func:`hash_file` reports them. Inside folders, symlinks to folders
    are not followed (no loops) and only regular files (or symlinks to them) are yielded.
    """
    for p in paths:
        sp = os.fspath(p)
        if os.path.isdir(sp):  # a symlink to a folder named explicitly is followed, once
            yield from _walk(sp)
        else:
            yield sp


def _walk(top: str) -> Iterator[str]:
    try:
        with os.scandir(top) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        yield top  # unreadable folder: hash_file records why
        return
    for e in entries:
        try:
            if e.is_dir(follow_symlinks=False):
                yield from _walk(e.path)
            elif e.is_file(follow_symlinks=True):
                yield e.path
        except OSError:
            yield e.path


def _hash_chunk(paths: list[str], kwargs: dict[str, Any],
                then: Callable[[FileHashes], Any] | None = None) -> list[Any]:
    if then is None:
        return [hash_file(p, **kwargs) for p in paths]
    return [then(hash_file(p, **kwargs)) for p in paths]


def _chunks(it: Iterator[str], n: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for p in it:
        chunk.append(p)
        if len(chunk) >= n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _default_context() -> multiprocessing.context.BaseContext:
    # forkserver: safe when the caller has threads (the HTTP service does); fork is not.
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    # The server imports numpy/Pillow/pdqhash once; workers fork from it ready to go instead
    # of paying ~0.5 s of imports each (no effect once the server runs: same list anyway).
    ctx.set_forkserver_preload(["hashwatch.hashing"])
    return ctx


def hash_many(
    paths: Iterable[StrPath],
    workers: int | None = None,
    *,
    ordered: bool = True,
    chunksize: int = 16,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int | None = DEFAULT_MAX_SIDE,
    dihedral: bool = False,
    exact_pdq: bool = False,
    extras: Callable[[np.ndarray], dict[str, Any]] | None = None,
    frame_extras: bool = True,
    mp_context: multiprocessing.context.BaseContext | None = None,
    then: Callable[[FileHashes], Any] | None = None,
    initializer: Callable[[], None] | None = None,
) -> Iterator[Any]:
    """Hash every file under ``paths`` (see :func:`iter_files`), one record per file.

    ``workers``: processes to use (default: CPU count); 1 hashes in this process.
    ``ordered=False`` yields records as chunks finish (less head-of-line waiting).
    At most ``4 * workers`` chunks are in flight, so memory stays bounded on huge trees.
    ``then``: a picklable function applied to each record *in the worker* (e.g. matching it,
    :mod:`hashwatch.matchwork`); its results are yielded instead of the records. A file whose
    worker crashed gets ``then`` applied here, to its error record. ``initializer``: a
    picklable function run once at the start of every worker process (e.g.
    :func:`hashwatch.matchwork.limit_library_threads`).
    """
    kwargs: dict[str, Any] = {
        "max_bytes": max_bytes,
        "max_pixels": max_pixels,
        "max_side": max_side,
        "dihedral": dihedral,
        "exact_pdq": exact_pdq,
        "extras": extras,
        "frame_extras": frame_extras,
    }
    if chunksize < 1:
        raise ValueError("chunksize must be >= 1")
    n = workers if workers is not None else (os.cpu_count() or 1)
    files = iter_files(paths)
    if n <= 1:
        for p in files:
            rec = hash_file(p, **kwargs)
            yield rec if then is None else then(rec)
        return
    ctx = mp_context or _default_context()
    if ctx.get_start_method() == "fork":
        # a forked child of a process whose OpenCV/OpenMP pools are running cannot resize
        # them (it waits for pool threads that were not forked): leave them as inherited
        initializer = None
    yield from _parallel(_chunks(files, chunksize), n, kwargs, ordered, ctx, then, initializer)


_CRASHED = "error: the decoder process crashed on this file"


def _parallel(
    chunks: Iterator[list[str]],
    n: int,
    kwargs: dict[str, Any],
    ordered: bool,
    ctx: multiprocessing.context.BaseContext,
    then: Callable[[FileHashes], Any] | None = None,
    initializer: Callable[[], None] | None = None,
) -> Iterator[Any]:
    """Run chunks on a pool of ``n`` processes, at most 4n chunks in flight.

    A worker that dies (a decoder crashing on a hostile file) breaks the whole pool: the
    chunks that were in flight are then re-run one file per fresh process, so only the
    guilty file gets an error record, and a new pool takes the rest.
    """
    work = partial(_hash_chunk, kwargs=kwargs, then=then)
    window = 4 * n
    while True:
        pending: deque[tuple[list[str], Future[list[FileHashes]]]] = deque()
        broken = False
        ex = ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=initializer)
        try:
            exhausted = False
            while not broken:
                while not exhausted and len(pending) < window:
                    chunk = next(chunks, None)
                    if chunk is None:
                        exhausted = True
                    else:
                        pending.append((chunk, ex.submit(work, chunk)))
                if not pending:
                    return
                if ordered:
                    ready = [pending[0]]
                else:
                    done, _ = wait([f for _, f in pending], return_when=FIRST_COMPLETED)
                    ready = [item for item in pending if item[1] in done]
                for item in ready:
                    try:
                        results = item[1].result()
                    except BrokenProcessPool:
                        broken = True
                        break
                    pending = deque(x for x in pending if x is not item)
                    yield from results
        finally:
            # Also reached when the caller stops early: drop queued work, don't run it.
            ex.shutdown(wait=True, cancel_futures=True)
        # Pool broken: isolate every chunk still pending, then carry on with a new pool.
        for chunk, _ in pending:
            yield from _isolated(chunk, kwargs, ctx, then, initializer)


def _workers_can_start(ctx: multiprocessing.context.BaseContext) -> bool:
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as ex:
            return ex.submit(os.getpid).result() > 0
    except BrokenProcessPool:
        return False


def _isolated(
    paths: list[str], kwargs: dict[str, Any], ctx: multiprocessing.context.BaseContext,
    then: Callable[[FileHashes], Any] | None = None,
    initializer: Callable[[], None] | None = None,
) -> Iterator[Any]:
    ex = ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=initializer)
    try:
        for p in paths:
            try:
                yield ex.submit(partial(_hash_chunk, kwargs=kwargs, then=then), [p]).result()[0]
            except BrokenProcessPool:
                ex.shutdown(wait=False)
                # Blame the file only if a fresh worker can run at all; otherwise the pool
                # itself is unusable (e.g. a __main__ that spawned workers cannot import).
                if not _workers_can_start(ctx):
                    raise RuntimeError(
                        "hashwatch worker processes die on start-up; run with workers=1 or "
                        "from an importable script guarded by if __name__ == '__main__'"
                    ) from None
                crashed = FileHashes(p, error=_CRASHED)
                yield crashed if then is None else then(crashed)
                ex = ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=initializer)
    finally:
        ex.shutdown(wait=True)
