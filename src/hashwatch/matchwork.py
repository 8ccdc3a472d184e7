"""Per-query matching where the cores are: bytes or a path -> hashes -> match records, all in
the calling (worker) process.

Every heavy step of a query runs here, in the worker: decoding, the hash-tier views (flips,
trims, regions, de-rotations), the query's ORB keypoints, the PDQ index search, the keypoint
index's nomination, and the pairwise verification of each nominee (geometric check + scene
check). The parent only collects small :class:`~hashwatch.matcher.MatchResult` records.

Each worker process opens the store and **maps** the saved indexes (the PDQ index and the
keypoint index beside it) once, on first use (:func:`worker_matcher`): processes share their
pages; nothing index-sized is ever pickled. :func:`prepare` brings the saved files up to date
once, before workers start; changes made after that reach each worker through the store's
change feed (kept in the worker's memory, never written by it).

The same function serves ``hashwatch match``, triage, :meth:`Matcher.match_files`, and any
engine that runs work on other machines (``hashwatch scan``): call :func:`match_path` or
:func:`match_bytes` inside the task with a :class:`MatchSpec` (small, picklable).

Parallelism is across worker processes: every pool that runs this work starts its processes
with :func:`limit_library_threads` (OpenCV's and OpenMP's own thread pools would otherwise
start in every worker and contend for the same cores).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from hashwatch.decode import DEFAULT_MAX_BYTES, DEFAULT_MAX_SIDE
from hashwatch.matcher import PDQ_MIN_QUALITY, PDQ_THRESHOLD, Matcher, MatchResult
from hashwatch.signals.vpdq import VPDQ_COMPARED_MATCH_PERCENT, VPDQ_QUERY_MATCH_PERCENT

__all__ = ["MatchSpec", "limit_library_threads", "match_bytes", "match_path", "match_paths",
           "prepare", "shareable", "worker_matcher"]


def limit_library_threads() -> None:
    """One library thread per process: OpenCV's thread pool (ORB, RANSAC, warps of the
    keypoint tier and the scene check), OpenMP (FAISS, when loaded) and BLAS (numpy) are set
    to a single thread; libraries loaded later read the same limit from the environment.
    Run at the start of every worker process (the pools of ``match``, triage, ``scan``, the
    service's workers and decoding processes): parallelism is across processes, and a pool of
    library threads per process only contends for the same cores. Never in a child started by
    ``fork`` from a process whose pools run (OpenCV waits there for pool threads that were not
    forked): the pools skip it for that start method. Measured: BENCHMARKS.md,
    "Matching where the cores are"."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    import cv2

    cv2.setNumThreads(1)
    faiss = sys.modules.get("faiss")  # never imported only to be limited
    if faiss is not None:
        faiss.omp_set_num_threads(1)
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def shareable(store: Any) -> bool:
    """Whether worker processes can open ``store`` themselves (not an in-memory SQLite
    database, which only this process sees)."""
    url = store.engine.url
    return not (url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"))


@dataclass(frozen=True)
class MatchSpec:
    """What a worker needs to match: small and picklable.

    ``db``: SQLAlchemy URL or SQLite path every worker can reach (it may hold a password:
    never printed, see ``repr``); ``index_path``: the saved PDQ index (default: beside a
    SQLite database); the keypoint index is the folder ``<index_path>.kp``; ``lists``: only
    these lists (None: all); ``robust``: the robust views and keypoints (False: plain PDQ and
    exact hashes); ``persist``: False when the indexes are not saved (every worker builds its
    own in memory from the store); ``hash_views``: the known images' views the PDQ index
    holds (:class:`hashwatch.matcher.Matcher`; None: every view)."""

    db: str = field(repr=False)
    index_path: str | None = None
    lists: tuple[str, ...] | None = None
    robust: bool = True
    persist: bool = True
    pdq_threshold: int = PDQ_THRESHOLD
    min_quality: int = PDQ_MIN_QUALITY
    max_bytes: int = DEFAULT_MAX_BYTES
    max_side: int | None = DEFAULT_MAX_SIDE
    vpdq_query_percent: float = VPDQ_QUERY_MATCH_PERCENT
    vpdq_compared_percent: float = VPDQ_COMPARED_MATCH_PERCENT
    hash_views: tuple[str, ...] | None = None

    def matcher_options(self) -> dict[str, Any]:
        return {"index_path": self.index_path, "pdq_threshold": self.pdq_threshold,
                "min_quality": self.min_quality, "persist": self.persist,
                "vpdq_query_percent": self.vpdq_query_percent,
                "vpdq_compared_percent": self.vpdq_compared_percent,
                "hash_views": self.hash_views}

    @classmethod
    def for_store(cls, store: Any, **kw: Any) -> MatchSpec:
        """The spec of an open :class:`hashwatch.store.Store` (its URL, password included)."""
        return cls(store.engine.url.render_as_string(hide_password=False), **kw)


class _Worker:
    def __init__(self, spec: MatchSpec) -> None:
        from hashwatch.store import Store

        self.spec = spec
        self.store = Store.open(spec.db, migrate=False)
        self.matcher = Matcher(self.store, mmap=True, writable=False, **spec.matcher_options())
        self.extras = self.matcher.query_extras() if spec.robust else None
        self.pid = os.getpid()


_workers: dict[MatchSpec, _Worker] = {}
_lock = threading.Lock()


def _worker(spec: MatchSpec) -> _Worker:
    with _lock:
        w = _workers.get(spec)
        if w is None or w.pid != os.getpid():  # a forked child opens its own
            w = _workers[spec] = _Worker(spec)
        return w


def worker_matcher(spec: MatchSpec) -> Matcher:
    """This process's matcher for ``spec``: created on first use, indexes mapped read-only."""
    return _worker(spec).matcher


def prepare(spec: MatchSpec) -> Matcher | None:
    """Bring the saved PDQ and keypoint indexes up to date with the store (building them the
    first time), so that workers map current files. Run once in the parent, before workers
    start. Returns the (writable) matcher it used, or None when the indexes are not saved
    anywhere (PostgreSQL without an index path: each worker then builds its own)."""
    from hashwatch.matcher import index_path_for
    from hashwatch.store import Store

    store = Store.open(spec.db, migrate=False)
    if not spec.persist or (spec.index_path is None and index_path_for(store) is None):
        store.close()
        return None
    m = Matcher(store, **spec.matcher_options())
    if spec.robust:
        m.local_enabled  # noqa: B018 - loads, catches up and saves the keypoint index
    m.save()
    return m


def _lists(spec: MatchSpec) -> list[str] | None:
    return list(spec.lists) if spec.lists else None


def match_record(spec: MatchSpec, rec: Any) -> MatchResult:
    """Match one hashed record (:class:`hashwatch.hashing.FileHashes`, with the query views
    in ``extras`` when ``spec.robust``) in this process."""
    w = _worker(spec)
    (res,) = w.matcher.match_records([rec], _lists(spec))
    return res


def match_path(spec: MatchSpec, path: str | os.PathLike[str]) -> MatchResult:
    """One file -> hashes -> matches, in this process. Never raises for a bad file: the
    result's ``error`` says why (``hashwatch.hashing`` reasons)."""
    from hashwatch.hashing import hash_file

    w = _worker(spec)
    rec = hash_file(path, max_bytes=spec.max_bytes, max_side=spec.max_side, extras=w.extras)
    return match_record(spec, rec)


def match_bytes(spec: MatchSpec, data: bytes, name: str = "") -> MatchResult:
    """Image bytes (an upload, an archive member) -> hashes -> matches, in this process.
    ``name`` is the result's ``path``. Bytes that do not decode still match exactly on their
    cryptographic hashes; the result's ``error`` says why they did not decode."""
    from hashwatch.decode import DecodeError
    from hashwatch.hashing import FileHashes, hash_image_bytes
    from hashwatch.signals.crypto import hash_bytes

    w = _worker(spec)
    c = hash_bytes(data)
    base = dict(path=name, size=len(data), md5=c.md5, sha1=c.sha1, sha256=c.sha256)
    try:
        img = hash_image_bytes(data, max_bytes=spec.max_bytes, max_side=spec.max_side,
                               extras=w.extras)
    except DecodeError as exc:
        rec = FileHashes(**base, error=f"{exc.reason}: {exc}")
    else:
        rec = FileHashes(**base, pdq=img.pdq, pdq_quality=img.pdq_quality, width=img.width,
                         height=img.height, format=img.format, extras=img.extras)
    return match_record(spec, rec)


def match_paths(spec: MatchSpec, paths: Iterable[str | os.PathLike[str]], *,
                workers: int = 1, ordered: bool = True,
                mp_context: Any = None) -> Iterator[MatchResult]:
    """Every file under ``paths`` -> one :class:`MatchResult` each, matched in ``workers``
    processes (1: this one), each started with :func:`limit_library_threads`. The saved
    indexes are prepared first (:func:`prepare`); a file that crashes its worker gets an
    error result (see :func:`hashwatch.hashing.hash_many`)."""
    from hashwatch.hashing import hash_many

    prepared = prepare(spec)
    try:
        extras = (prepared or worker_matcher(spec)).query_extras() if spec.robust else None
    finally:
        if prepared is not None:  # workers map what it saved; it has no further use here
            prepared.store.close()
    yield from hash_many(paths, workers=workers, ordered=ordered, extras=extras,
                         max_bytes=spec.max_bytes, max_side=spec.max_side,
                         mp_context=mp_context, then=partial(match_record, spec),
                         initializer=limit_library_threads)
