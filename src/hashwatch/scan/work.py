"""The per-file work of a batch scan, the same in every engine: path -> bytes -> hashes ->
match, through the library path ``hashwatch match`` and the service use
(:func:`hashwatch.hashing.hash_file` with the matcher's query views, then
:func:`hashwatch.matchwork.match_record`). There is no second implementation here.

Each worker process opens the store and maps the saved indexes **once**
(:func:`hashwatch.matchwork.worker_matcher`), then scans batch after batch; the index files
are mapped read-only from disk, never pickled or shipped through an engine's object store.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

from hashwatch.decode import DEFAULT_MAX_BYTES, DEFAULT_MAX_SIDE

# a batch is a list of (file_id, path) pairs; a row is one output record (see output.ROW_SCHEMA)
Item = tuple[str, str]
Row = dict[str, Any]


@dataclass(frozen=True)
class ScanConfig:
    """What every worker needs to scan: small, picklable, no secrets beyond the DB URL.

    ``db``: SQLAlchemy URL or SQLite path reachable from every worker (PostgreSQL for a
    cluster); ``index_path``: the saved PDQ index, on storage every worker can read (made
    current by the driver before any worker starts); ``lists``: only these lists (None: all);
    ``robust``: query views (flips, trims, regions, keypoints), as ``hashwatch match``;
    ``hash_views``: the known images' views the PDQ index holds (None: every view)."""

    db: str
    index_path: str
    lists: tuple[str, ...] | None = None
    robust: bool = True
    max_bytes: int = DEFAULT_MAX_BYTES
    max_side: int | None = DEFAULT_MAX_SIDE
    hash_views: tuple[str, ...] | None = None

    def spec(self) -> Any:
        """The :class:`hashwatch.matchwork.MatchSpec` of this scan."""
        from hashwatch.matchwork import MatchSpec

        return MatchSpec(db=self.db, index_path=self.index_path, lists=self.lists,
                         robust=self.robust, max_bytes=self.max_bytes, max_side=self.max_side,
                         hash_views=self.hash_views)


def one_thread_per_worker() -> None:
    """Parallelism is across worker processes: :func:`hashwatch.matchwork.limit_library_threads`
    (the helper every pool of matching work uses). Measured on 100 corpus photos, one worker,
    loaded machine: 12.0 CPU-s with the libraries' own pools, 3.8 CPU-s without (BENCHMARKS.md,
    beyond one machine)."""
    from hashwatch.matchwork import limit_library_threads

    limit_library_threads()


class ScanWorker:
    """One per worker process: the matcher of :mod:`hashwatch.matchwork` (store opened and
    saved indexes mapped once per process, shared with ``hashwatch match`` and the service)
    and the query-view function."""

    def __init__(self, config: ScanConfig) -> None:
        from hashwatch import matchwork

        one_thread_per_worker()
        self.config = config
        self.spec = config.spec()
        self.matcher = matchwork.worker_matcher(self.spec)
        self.extras = self.matcher.query_extras() if config.robust else None
        self.pid = os.getpid()

    def scan_file(self, file_id: str, path: str) -> Row:
        """One file -> one row. Never raises for a bad file: the row's ``error`` says why."""
        from hashwatch import matchwork
        from hashwatch.hashing import hash_file

        rec = hash_file(path, max_bytes=self.config.max_bytes, max_side=self.config.max_side,
                        extras=self.extras)
        res = matchwork.match_record(self.spec, rec)
        return make_row(file_id, rec, res.matches, res.error)

    def scan_batch(self, items: list[Item]) -> list[Row]:
        return [self.scan_file(fid, path) for fid, path in items]


_workers: dict[ScanConfig, ScanWorker] = {}
_lock = threading.Lock()


def worker_for(config: ScanConfig) -> ScanWorker:
    """This process's worker for ``config``, created on first use (index mapped once)."""
    with _lock:
        w = _workers.get(config)
        if w is None or w.pid != os.getpid():  # a forked child opens its own
            w = _workers[config] = ScanWorker(config)
        return w


def scan_batch(config: ScanConfig, items: list[Item]) -> list[Row]:
    """The batch function every engine runs (process pool task, Ray task, Spark
    ``mapInArrow``): ``items`` (file_id, path) -> one row per item, in order."""
    return worker_for(config).scan_batch(items)


def crashed_row(file_id: str, path: str) -> Row:
    """The row of a file whose worker process died on it every time it was tried."""
    return {**_EMPTY, "file_id": file_id, "path": path, "state": "error",
            "error": "error: the worker process crashed on this file"}


_EMPTY: Row = {"file_id": None, "path": None, "size": None, "md5": None, "sha1": None,
               "sha256": None, "pdq": None, "pdq_quality": None, "width": None,
               "height": None, "state": None, "error": None, "matches": []}


def make_row(file_id: str, rec: Any, matches: list[Any], error: str | None) -> Row:
    """A :class:`~hashwatch.hashing.FileHashes` record and its matches -> an output row.

    ``state``: ``matched`` (at least one match, even on a file with an error: an exact hash
    can match a file that does not decode), ``error`` (no match and an error), else
    ``clean``."""
    return {
        "file_id": file_id,
        "path": rec.path,
        "size": rec.size,
        "md5": rec.md5,
        "sha1": rec.sha1,
        "sha256": rec.sha256,
        "pdq": rec.pdq,
        "pdq_quality": rec.pdq_quality,
        "width": rec.width,
        "height": rec.height,
        "state": "matched" if matches else ("error" if error else "clean"),
        "error": error,
        "matches": [{"list": m.list, "entry_id": m.entry_id, "ref": m.ref, "signal": m.signal,
                     "route": m.route or ("exact" if m.exact else "full/full"),
                     "distance": m.distance,
                     "category": m.category, "exact": m.exact, "inliers": m.inliers}
                    for m in matches],
    }
