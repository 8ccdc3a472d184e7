"""Scan outputs: one Parquet file per manifest shard, a summary, an optional SQL table.

A shard's file is written whole and renamed into place (``part-00000.parquet``), so it is
either complete or absent: that is what resume and "none reported twice" rest on. Rows keep
manifest order; the bytes of a shard's file depend only on its rows, so an interrupted and
resumed scan writes the same files as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .work import Row

MATCH_TYPE = pa.struct([
    ("list", pa.string()), ("entry_id", pa.int64()), ("ref", pa.string()),
    ("signal", pa.string()), ("route", pa.string()), ("distance", pa.int32()),
    ("category", pa.string()), ("exact", pa.bool_()), ("inliers", pa.int32()),
])
ROW_SCHEMA = pa.schema([
    ("file_id", pa.string()), ("path", pa.string()), ("size", pa.int64()),
    ("md5", pa.string()), ("sha1", pa.string()), ("sha256", pa.string()),
    ("pdq", pa.string()), ("pdq_quality", pa.int32()), ("width", pa.int32()),
    ("height", pa.int32()), ("state", pa.string()), ("error", pa.string()),
    ("matches", pa.list_(MATCH_TYPE)),
])
STATES = ("matched", "clean", "error")


def shard_file(out: Path, shard: int) -> Path:
    return out / "shards" / f"part-{shard:05d}.parquet"


def rows_to_table(rows: list[Row]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=ROW_SCHEMA)


def _private_open(path: Path) -> Any:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    return os.fdopen(fd, "wb")


def write_shard(out: Path, shard: int, rows: list[Row]) -> Path:
    """Write one shard's rows atomically (0600: the file holds hashes and matches)."""
    target = shard_file(out, shard)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with _private_open(tmp) as fh:
        pq.write_table(rows_to_table(rows), fh, compression="zstd")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)
    return target


def shard_rows_done(out: Path, shard: int) -> int | None:
    """Rows in a finished shard's file, or None when it is absent or unreadable."""
    try:
        return pq.ParquetFile(shard_file(out, shard)).metadata.num_rows
    except (OSError, pa.ArrowInvalid):
        return None


def shard_stats(table: pa.Table) -> dict[str, Any]:
    """Counts of one shard: rows, per state, matched files per category."""
    states = Counter(table.column("state").to_pylist())
    cats: Counter[str] = Counter()
    for ms in table.column("matches").to_pylist():
        for c in sorted({m["category"] or "uncategorised" for m in ms}):
            cats[c] += 1
    return {"rows": table.num_rows, "states": {s: states.get(s, 0) for s in STATES},
            "categories": dict(sorted(cats.items()))}


def summarise(out: Path, n_shards: int) -> dict[str, Any]:
    """The scan summary, read back from the shard files (so it is the same however many runs
    it took): counts per state and per category, and each shard's status."""
    total: Counter[str] = Counter()
    cats: Counter[str] = Counter()
    shards = []
    rows = 0
    for i in range(n_shards):
        try:
            table = pq.read_table(shard_file(out, i), columns=["state", "matches"])
        except (OSError, pa.ArrowInvalid):
            shards.append({"shard": i, "status": "missing"})
            continue
        st = shard_stats(table)
        rows += st["rows"]
        total.update(st["states"])
        cats.update(st["categories"])
        shards.append({"shard": i, "status": "done", **st})
    return {"files": rows, "states": {s: total.get(s, 0) for s in STATES},
            "categories": dict(sorted(cats.items())), "shards": shards,
            "complete": all(s["status"] == "done" for s in shards)}


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with _private_open(tmp) as fh:
        fh.write(json.dumps(data, indent=1, sort_keys=True).encode())
    os.replace(tmp, path)


def read_shard_rows(out: Path, shard: int) -> list[Row]:
    return pq.read_table(shard_file(out, shard), schema=ROW_SCHEMA).to_pylist()


def iter_rows(out: Path, n_shards: int) -> Iterable[Row]:
    for i in range(n_shards):
        yield from read_shard_rows(out, i)
