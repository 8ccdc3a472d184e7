"""The index file: :meth:`HammingIndex.save <hashwatch.index.HammingIndex.save>` and
:meth:`HammingIndex.load <hashwatch.index.HammingIndex.load>`.

Layout: ``HWMIH001``, the header length (8 bytes little-endian), a JSON header (format
version, code size, every segment's widths, size, id runs and where each of its arrays lies),
then the arrays, each 64-byte aligned so they can be mapped in place.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from hashwatch.index.layout import CODE_BITS, CODE_BYTES
from hashwatch.index.segment import _SPARE, _Segment

if TYPE_CHECKING:
    from hashwatch.index.hamming_index import HammingIndex

_I = TypeVar("_I", bound="HammingIndex")

_MAGIC = b"HWMIH001"
_FORMAT = 2
_ALIGN = 64


def save(index: HammingIndex, path: str | os.PathLike[str]) -> None:
    """Write ``index`` atomically (temp file + rename), owner-only (0600)."""
    path = Path(path)
    with index._lock:  # consistent tables/codes pairs even while an append-merge runs
        snap = [(s, s.tabs, s.codes, s.tomb.copy()) for s in index._segments]
    header: dict[str, object] = {"version": _FORMAT, "code_bytes": CODE_BYTES}
    arrays: list[np.ndarray] = []
    offset = 0
    seg_meta = []
    for s, (offsets, postings), codes, tomb in snap:
        named = [("ids", s.ids), ("codes", codes), ("tomb", tomb)]
        named += [(f"offsets{i}", a) for i, a in enumerate(offsets)]
        named += [(f"postings{i}", a) for i, a in enumerate(postings)]
        meta: dict[str, object] = {
            "widths": list(s.widths),
            "n": s.n,
            "runs": list(s.runs),
            "arrays": {},
        }
        for name, arr in named:
            arr = np.ascontiguousarray(arr)
            meta["arrays"][name] = [offset, arr.dtype.str, list(arr.shape)]  # type: ignore[index]
            arrays.append(arr)
            offset += -(-arr.nbytes // _ALIGN) * _ALIGN
        seg_meta.append(meta)
    header["segments"] = seg_meta
    header["data_bytes"] = offset
    hbytes = json.dumps(header).encode()
    data_start = -(-(len(_MAGIC) + 8 + len(hbytes)) // _ALIGN) * _ALIGN
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_MAGIC + len(hbytes).to_bytes(8, "little") + hbytes)
            f.write(b"\0" * (data_start - f.tell()))
            for arr in arrays:
                f.write(memoryview(arr).cast("B"))
                pad = -arr.nbytes % _ALIGN
                if pad:
                    f.write(b"\0" * pad)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def load(
    cls: type[_I], path: str | os.PathLike[str], *, mmap: bool = False, **kwargs: object
) -> _I:
    """Read an index of class ``cls`` written by :func:`save`. ``mmap=True`` maps the immutable
    arrays read-only (instant load, pages come in on first use; merges then rebuild instead of
    appending). ``kwargs`` go to the constructor."""
    path = Path(path)
    index = cls(**kwargs)  # type: ignore[arg-type]
    size = path.stat().st_size
    with open(path, "rb") as f:
        if f.read(len(_MAGIC)) != _MAGIC:
            raise ValueError(f"{path} is not a hashwatch index file")
        hlen = int.from_bytes(f.read(8), "little")
        try:
            header = json.loads(f.read(hlen))
        except ValueError as exc:
            raise ValueError(f"{path}: damaged header") from exc
        data_start = -(-(len(_MAGIC) + 8 + hlen) // _ALIGN) * _ALIGN
        if header.get("version") != _FORMAT or data_start + header["data_bytes"] > size:
            raise ValueError(f"{path}: unsupported version or truncated file")

        def read(name: str, meta: dict, out: np.ndarray | None = None) -> np.ndarray:
            off, dtype, shape = meta["arrays"][name]
            shape = tuple(shape)
            if out is None and mmap and int(np.prod(shape)) and name != "tomb":
                return np.memmap(
                    path, dtype=np.dtype(dtype), mode="r", offset=data_start + off, shape=shape
                )
            arr = np.empty(shape, dtype=np.dtype(dtype)) if out is None else out
            if arr.shape != shape or arr.dtype != np.dtype(dtype):
                raise ValueError(f"{path}: inconsistent segment")
            f.seek(data_start + off)
            view = memoryview(arr).cast("B")
            got = 0
            while got < arr.nbytes:
                k = f.readinto(view[got:])
                if not k:
                    raise ValueError(f"{path}: truncated")
                got += k
            return arr

        segs = []
        for meta in header["segments"]:
            n = int(meta["n"])
            widths = tuple(int(w) for w in meta["widths"])
            m_codes = int(meta["arrays"]["codes"][2][0])
            bufs = None
            if not mmap and n > index.sync_merge_limit:  # spare room for append-merges
                cap = max(m_codes, n + int(n * _SPARE))
                bufs = (
                    np.empty(cap, np.int64),
                    np.empty((cap, CODE_BYTES), np.uint8),
                    np.zeros(cap, np.uint8),
                )
                ids = read("ids", meta, bufs[0][:n])
                codes = read("codes", meta, bufs[1][:m_codes])
                tomb = read("tomb", meta, bufs[2][:m_codes])
            else:
                ids, codes, tomb = read("ids", meta), read("codes", meta), read("tomb", meta)
            offsets = [read(f"offsets{i}", meta) for i in range(len(widths))]
            postings = [read(f"postings{i}", meta) for i in range(len(widths))]
            if (
                ids.shape != (n,)
                or codes.shape[0] < n
                or codes.shape[1:] != (CODE_BYTES,)
                or tomb.shape != (codes.shape[0],)
                or sum(widths) != CODE_BITS
                or any(
                    o.shape != ((1 << w) + 1,)
                    or p.shape != (int(o[-1]),)
                    or int(o[-1]) > codes.shape[0]
                    for o, p, w in zip(offsets, postings, widths, strict=True)
                )
            ):
                raise ValueError(f"{path}: inconsistent segment")
            runs = tuple(int(r) for r in meta.get("runs", (0, n)))
            if runs[0] != 0 or runs[-1] != n or list(runs) != sorted(runs):
                raise ValueError(f"{path}: inconsistent segment")
            segs.append(_Segment(ids, codes, tomb, widths, offsets, postings, bufs, runs))
    index._segments = segs
    return index
