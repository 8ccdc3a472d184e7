"""The scan driver: plan shards, resume, hand batches to an engine, write whole shards.

Resume is hashwatch's own contract, at shard level: a shard whose output file exists (with
the manifest's row count) is done; any other shard is scanned again from its first file. The
driver is the only writer; it writes a shard once all its rows are back, in manifest order,
and renames it into place. Killing the driver, a worker or a node at any point and running
the same command again therefore loses no file, reports none twice, and ends with the same
files as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from .engines import Batch, Engine
from .manifest import Manifest
from .output import shard_file, shard_rows_done, summarise, write_json, write_shard
from .work import Row, ScanConfig

STATE = "scan.json"
SUMMARY = "summary.json"
RUNS = "runs.jsonl"
DEFAULT_BATCH = 16


class ScanError(Exception):
    """The scan cannot start: the output folder belongs to another scan, or the lists changed
    since it started (its earlier shards were matched against other lists)."""


@dataclass
class ScanProgress:
    """Counts for a progress display: files and bytes done of the totals, and failures
    (files with an error row) so far; ``skipped`` counts files of shards already done."""

    files_total: int
    bytes_total: int
    files_done: int = 0
    bytes_done: int = 0
    failures: int = 0
    matched: int = 0
    skipped: int = 0
    bytes_skipped: int = 0
    shards_done: int = 0
    shards_total: int = 0
    started: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class ScanResult:
    out: Path
    summary: dict[str, Any]
    shards_run: int
    files_run: int
    wall: float
    cpu_driver: float


def scan_id(manifest: Manifest, config: ScanConfig) -> str:
    """Names one scan: the manifest, the database (its URL without the password) and
    everything that changes a row (not the engine, which changes nothing)."""
    import sqlalchemy as sa

    db = config.db if "://" in config.db else f"sqlite:///{os.path.abspath(config.db)}"
    db = sa.engine.make_url(db).render_as_string(hide_password=True)
    key = json.dumps({"manifest": manifest.id, "db": db, "lists": config.lists,
                      "robust": config.robust,
                      "max_bytes": config.max_bytes, "max_side": config.max_side,
                      # only when set: scans made before the option keep their ids
                      **({"hash_views": sorted(config.hash_views)} if config.hash_views
                         else {})},
                     sort_keys=True)
    return hashlib.blake2b(key.encode(), digest_size=12).hexdigest()


def prepare_index(config: ScanConfig) -> tuple[int, str]:
    """Bring the saved indexes up to date with the store (once, in the driver:
    :func:`hashwatch.matchwork.prepare`) so every worker maps current files; returns the
    last committed change number (for messages) and the change-feed position they reflect
    (``lists_changed`` tells exactly whether anything changed since)."""
    from hashwatch import matchwork

    m = matchwork.prepare(config.spec())
    assert m is not None  # a scan always names its index path
    seq = m.store.last_change()
    position = m.position
    m.store.close()
    return seq, position


def lists_changed(config: ScanConfig, state: dict[str, Any], seq: int) -> bool:
    """Whether the lists changed since the scan recorded in ``state`` started: any change
    committed after its feed position (exact on PostgreSQL, where change numbers commit
    out of order, so an equal newest number proves nothing); states written before the
    position was kept compare the numbers."""
    from hashwatch.store import Store
    from hashwatch.store.feed import FeedError

    position = state.get("list_position")
    if not position:
        return state["list_seq"] != seq
    with Store.open(config.db, migrate=False) as store, store.snapshot() as snap:
        try:
            return snap.any_changed(position)
        except FeedError:  # a position of another backend: not this database's scan
            return True


def _batches(manifest: Manifest, shards: list[int], size: int) -> Iterator[Batch]:
    for s in shards:
        t = manifest.shard(s)
        ids = t.column("file_id").to_pylist()
        paths = t.column("path").to_pylist()
        sizes = t.column("size").to_pylist()
        for i in range(0, len(ids), size):
            yield Batch(s, i, list(zip(ids[i:i + size], paths[i:i + size], strict=True)),
                        sum(x or 0 for x in sizes[i:i + size]))


def run_scan(
    manifest: Manifest,
    out: str | os.PathLike[str],
    config: ScanConfig,
    engine: Engine,
    *,
    batch_size: int = DEFAULT_BATCH,
    restart: bool = False,
    sink: Any = None,
    progress: Callable[[ScanProgress], None] | None = None,
) -> ScanResult:
    """Scan every shard of ``manifest`` not yet done in ``out``; returns the summary.

    ``sink``: an extra destination with ``done_shards() -> set[int]`` and
    ``write_shard(shard, rows)`` (e.g. :class:`hashwatch.scan.sqltable.ResultsTable`), written
    after the shard's file and caught up on resume. Raises :class:`ScanError`."""
    t0, c0 = time.monotonic(), time.process_time()
    outp = Path(out)
    sid = scan_id(manifest, config)
    state_path = outp / STATE
    if restart and outp.exists():
        shutil.rmtree(outp / "shards", ignore_errors=True)
        for name in (STATE, SUMMARY):
            (outp / name).unlink(missing_ok=True)
    (outp / "shards").mkdir(parents=True, exist_ok=True)
    os.chmod(outp, 0o700)
    state = json.loads(state_path.read_text()) if state_path.exists() else None
    seq, position = prepare_index(config)
    if state is not None:
        if state["scan_id"] != sid:
            raise ScanError(f"{outp} holds another scan (manifest {state['manifest']}, lists "
                            f"{state['lists']}, robust {state['robust']}); use another --out "
                            "or --restart")
        if lists_changed(config, state, seq):
            raise ScanError(f"the lists changed since this scan started (change feed "
                            f"{state['list_seq']} -> {seq}): its finished shards were matched "
                            "against the older lists; --restart to scan again")
    else:
        state = {"scan_id": sid, "manifest": manifest.id, "manifest_root": str(manifest.root),
                 "lists": config.lists, "robust": config.robust, "list_seq": seq,
                 "list_position": position,
                 "shards": manifest.shards, "files": manifest.files}
        write_json(state_path, state)

    prog = ScanProgress(manifest.files, manifest.bytes, shards_total=manifest.shards)
    todo: list[int] = []
    shard_len: dict[int, int] = {}
    for s in range(manifest.shards):
        n = pq.ParquetFile(manifest.shard_path(s)).metadata.num_rows
        shard_len[s] = n
        if shard_rows_done(outp, s) == n:
            prog.files_done += n
            prog.skipped += n
            prog.shards_done += 1
            nb = _shard_bytes(manifest, s)
            prog.bytes_done += nb
            prog.bytes_skipped += nb
        else:
            shard_file(outp, s).unlink(missing_ok=True)  # a foreign or damaged file
            todo.append(s)
    if sink is not None:  # a shard written to Parquet but not yet to the sink
        have = sink.done_shards()
        for s in range(manifest.shards):
            if s not in todo and s not in have:
                from .output import read_shard_rows

                sink.write_shard(s, read_shard_rows(outp, s))
    if progress:
        progress(prog)

    parts: dict[int, list[Row | None]] = {}
    filled: dict[int, int] = {}
    files_run = 0
    for b, rows in engine.run(config, _batches(manifest, todo, batch_size)):
        buf = parts.setdefault(b.shard, [None] * shard_len[b.shard])
        buf[b.start:b.start + len(rows)] = rows
        filled[b.shard] = filled.get(b.shard, 0) + len(rows)
        files_run += len(rows)
        prog.files_done += len(rows)
        prog.bytes_done += b.nbytes if b.nbytes else sum(r["size"] or 0 for r in rows)
        prog.failures += sum(r["state"] == "error" for r in rows)
        prog.matched += sum(r["state"] == "matched" for r in rows)
        if filled[b.shard] == shard_len[b.shard]:
            done_rows = parts.pop(b.shard)
            del filled[b.shard]
            assert all(r is not None for r in done_rows)
            write_shard(outp, b.shard, done_rows)  # type: ignore[arg-type]
            if sink is not None:
                sink.write_shard(b.shard, done_rows)
            prog.shards_done += 1
        if progress:
            progress(prog)
    if parts:
        raise ScanError(f"engine returned incomplete shards {sorted(parts)}")
    summary = {"scan_id": sid, "manifest": manifest.id, **summarise(outp, manifest.shards)}
    write_json(outp / SUMMARY, summary)
    wall, cpu = time.monotonic() - t0, time.process_time() - c0
    with open(outp / RUNS, "a") as fh:
        fh.write(json.dumps({"engine": engine.name, "workers": engine.workers,
                             "shards_run": len(todo), "files_run": files_run,
                             "wall_s": round(wall, 3), "driver_cpu_s": round(cpu, 3),
                             "finished": time.time()}) + "\n")
    return ScanResult(outp, summary, len(todo), files_run, wall, cpu)


def _shard_bytes(manifest: Manifest, s: int) -> int:
    sizes = pq.read_table(manifest.shard_path(s), columns=["size"]).column("size").to_pylist()
    return sum(x or 0 for x in sizes)


def progress_dict(p: ScanProgress) -> dict[str, Any]:
    d = asdict(p)
    el = max(time.monotonic() - p.started, 1e-9)
    run = p.files_done - p.skipped
    d["rate_files_s"] = run / el
    d["eta_s"] = (p.files_total - p.files_done) / (run / el) if run else None
    return d
