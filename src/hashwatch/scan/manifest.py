"""The scan manifest: every file of a batch scan, in fixed shards, each with a stable file id.

A manifest is built once (``hashwatch scan manifest``) and then read by every run of the scan,
so a re-run after a crash sees exactly the same shards; resuming is decided per shard.

Layout of a manifest folder::

    manifest.json             id, inputs, shard size, shard count, file and byte totals
    shards/m-00000.parquet    file_id (string), path (string), size (int64, null if unknown)

``file_id`` is the first 16 hex digits of BLAKE2b-64 over the file's absolute path (UTF-8,
surrogate-escaped), so the same file gets the same id in every manifest built from the same
inputs. Files are listed in input order (folders depth-first, names sorted, as
:func:`hashwatch.hashing.iter_files`), a path listed twice is kept once.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.parquet as pq

from hashwatch.hashing import iter_files

MANIFEST_VERSION = 1
DEFAULT_SHARD_SIZE = 1000
MANIFEST_SCHEMA = pa.schema([("file_id", pa.string()), ("path", pa.string()),
                             ("size", pa.int64())])


class ManifestError(Exception):
    """Bad manifest input (unknown column, unsupported URI) or a folder that is not one."""


@dataclass(frozen=True)
class Manifest:
    """A manifest folder as read back: ``shard(i)`` gives the files of shard ``i``."""

    root: Path
    id: str
    shards: int
    files: int
    bytes: int
    shard_size: int
    inputs: tuple[str, ...]

    @classmethod
    def open(cls, root: str | os.PathLike[str]) -> Manifest:
        """Raises :class:`ManifestError` when ``root`` holds no (finished) manifest."""
        r = Path(root)
        try:
            meta = json.loads((r / "manifest.json").read_text())
        except (OSError, ValueError) as exc:
            raise ManifestError(f"{r} is not a scan manifest (manifest.json: {exc})") from None
        if meta.get("version") != MANIFEST_VERSION:
            raise ManifestError(f"{r}: manifest version {meta.get('version')} not supported")
        return cls(r, meta["id"], meta["shards"], meta["files"], meta["bytes"],
                   meta["shard_size"], tuple(meta["inputs"]))

    def shard_path(self, i: int) -> Path:
        return self.root / "shards" / f"m-{i:05d}.parquet"

    def shard(self, i: int) -> pa.Table:
        """Shard ``i`` as a table (file_id, path, size), in manifest order."""
        return pq.read_table(self.shard_path(i), schema=MANIFEST_SCHEMA)


def file_id(path: str) -> str:
    """Stable id of a file: BLAKE2b-64 of its absolute path, as 16 hex digits."""
    return hashlib.blake2b(path.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()


def _local_path(text: str, base: Path | None) -> str:
    """A path or ``file://`` URI -> absolute local path. Other URI schemes are refused."""
    if "://" in text:
        u = urlparse(text)
        if u.scheme != "file":
            raise ManifestError(
                f"{text!r}: only local paths and file:// URIs are scanned; mount object "
                "storage (e.g. s3fs, gcsfuse) and list its paths instead")
        text = unquote(u.path)
    p = Path(text).expanduser()
    if not p.is_absolute() and base is not None:
        p = base / p
    return os.path.abspath(p)


def _column(names: list[str], source: Path) -> str:
    for want in ("path", "uri", "url", "file"):
        for n in names:
            if n.strip().lower() == want:
                return n
    raise ManifestError(f"{source}: no path/uri column (columns: {', '.join(names)})")


def read_list_file(source: str | os.PathLike[str]) -> Iterator[str]:
    """Paths named by a list file: ``.parquet`` or ``.csv`` (a ``path`` or ``uri`` column),
    else one path per line (blank lines and ``#`` comments skipped). Relative paths are taken
    relative to the list file's folder. Raises :class:`ManifestError`."""
    src = Path(source)
    base = src.resolve().parent
    suffix = src.suffix.lower()
    if suffix == ".parquet":
        pf = pq.ParquetFile(src)
        col = _column(pf.schema_arrow.names, src)
        for batch in pf.iter_batches(columns=[col], batch_size=65536):
            for v in batch.column(0).to_pylist():
                if v:
                    yield _local_path(str(v), base)
    elif suffix == ".csv":
        with open(src, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            col = _column(list(reader.fieldnames or []), src)
            for row in reader:
                v = (row.get(col) or "").strip()
                if v:
                    yield _local_path(v, base)
    else:
        with open(src, encoding="utf-8-sig", errors="surrogateescape") as fh:
            for line in fh:
                line = line.strip()
                if line and not line.startswith("#"):
                    yield _local_path(line, base)


def _expand(paths: Iterable[str | os.PathLike[str]], lists: Iterable[str | os.PathLike[str]]
            ) -> Iterator[str]:
    for p in iter_files([_local_path(os.fspath(x), None) for x in paths]):
        yield os.path.abspath(p)
    for lf in lists:
        # a listed folder is walked like a folder given on the command line
        yield from (os.path.abspath(p) for p in iter_files(read_list_file(lf)))


def _size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None  # the scan reports why (unreadable)


def build_manifest(
    out: str | os.PathLike[str],
    paths: Iterable[str | os.PathLike[str]] = (),
    lists: Iterable[str | os.PathLike[str]] = (),
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    progress: object = None,
) -> Manifest:
    """Write a manifest of every file under ``paths`` (files or folders, recursive) and in the
    list files ``lists`` (see :func:`read_list_file`) into the new folder ``out``.

    Streams: shards are written as the walk goes; memory grows only with the set of file ids
    (to drop duplicates, ~100 bytes per file). ``progress(files, bytes)`` is called per shard.
    Raises :class:`ManifestError` (``out`` already holds a manifest, bad list file)."""
    if shard_size < 1:
        raise ManifestError("shard size must be >= 1")
    root = Path(out)
    if (root / "manifest.json").exists():
        raise ManifestError(f"{root} already holds a manifest (a re-run must see the same "
                            "shards: remove it to build a new one)")
    inputs = [os.path.abspath(os.fspath(p)) for p in paths]
    inputs += [f"list:{os.path.abspath(os.fspath(p))}" for p in lists]
    (root / "shards").mkdir(parents=True, exist_ok=True)
    seen: set[int] = set()
    digest = hashlib.blake2b(digest_size=16)
    n_files = n_bytes = n_shards = 0
    buf: list[tuple[str, str, int | None]] = []

    def flush() -> None:
        nonlocal n_shards
        table = pa.table({"file_id": [b[0] for b in buf], "path": [b[1] for b in buf],
                          "size": [b[2] for b in buf]}, schema=MANIFEST_SCHEMA)
        target = root / "shards" / f"m-{n_shards:05d}.parquet"
        tmp = target.with_suffix(".tmp")
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, target)
        n_shards += 1
        buf.clear()
        if callable(progress):
            progress(n_files, n_bytes)

    for path in _expand(paths, lists):
        fid = file_id(path)
        key = int(fid, 16)
        if key in seen:
            continue
        seen.add(key)
        size = _size(path)
        buf.append((fid, path, size))
        digest.update(fid.encode() + b"\0" + path.encode("utf-8", "surrogateescape") + b"\0")
        n_files += 1
        n_bytes += size or 0
        if len(buf) >= shard_size:
            flush()
    if buf or n_shards == 0:
        flush()
    meta = {"version": MANIFEST_VERSION, "id": digest.hexdigest(), "inputs": inputs,
            "shard_size": shard_size, "shards": n_shards, "files": n_files, "bytes": n_bytes}
    tmp = root / "manifest.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, root / "manifest.json")  # written last: a manifest is finished or absent
    return Manifest.open(root)
