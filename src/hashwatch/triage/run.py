"""Run a triage: walk the sources, hash in a process pool, match, record, cluster, report.

Resumable: every file on disk is one *task*; its records (the file, and all members when it is
an archive) and the task's "done" mark are written in one SQLite transaction of the case's work
database (``OUT/work.db``). Kill the run at any moment and start the same command again: done
tasks are skipped (not re-read, not re-hashed) and nothing is written twice (paths are unique).
An archive interrupted half-way is redone whole, since none of it was committed.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from hashwatch import __version__, matchwork
from hashwatch.explain import explain
from hashwatch.matcher import Matcher
from hashwatch.matchwork import MatchSpec
from hashwatch.metadata import device_key
from hashwatch.store import Store, StoreError
from hashwatch.triage.classify import STATES, Classified, classify_many
from hashwatch.triage.cluster import cluster_pdq
from hashwatch.triage.schema import triage_cases
from hashwatch.triage.sources import SourceFile, walk_sources
from hashwatch.triage.work import FileRecord, WorkOptions, process_file

__all__ = [
    "CaseError",
    "Progress",
    "TriageOptions",
    "TriageSummary",
    "case_out_dir",
    "open_workdb",
    "register_case",
    "run_triage",
]

WORKDB = "work.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs(
    id INTEGER PRIMARY KEY, started_at TEXT NOT NULL, finished_at TEXT,
    tool_version TEXT NOT NULL, lists TEXT NOT NULL, sources TEXT NOT NULL,
    files_done INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS tasks(
    key TEXT PRIMARY KEY, size INTEGER, records INTEGER NOT NULL, run_id INTEGER NOT NULL,
    done_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files(
    id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, task TEXT NOT NULL, source TEXT NOT NULL,
    container TEXT NOT NULL, kind TEXT NOT NULL, format TEXT NOT NULL, size INTEGER,
    md5 TEXT, sha1 TEXT, sha256 TEXT, pdq TEXT, pdq_quality INTEGER, width INTEGER,
    height INTEGER, duration REAL, frame_count INTEGER, state TEXT NOT NULL, distance INTEGER,
    lists TEXT NOT NULL, categories TEXT NOT NULL, conflict INTEGER NOT NULL,
    matches TEXT NOT NULL, cluster INTEGER, error TEXT, thumb BLOB,
    t_read REAL, t_decode REAL, t_hash REAL, t_match REAL, run_id INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS ix_files_state ON files(state);
CREATE INDEX IF NOT EXISTS ix_files_sha256 ON files(sha256);
CREATE INDEX IF NOT EXISTS ix_files_cluster ON files(cluster);
CREATE TABLE IF NOT EXISTS frames(
    file_id INTEGER NOT NULL, t REAL NOT NULL, pdq TEXT NOT NULL, quality INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS ix_frames_file ON frames(file_id);
CREATE TABLE IF NOT EXISTS clusters(
    cluster INTEGER PRIMARY KEY, size INTEGER NOT NULL, representative INTEGER NOT NULL);
"""
# Columns added after the first release: added to older work databases when opened.
# route .. list_version: how the deciding (first) match was found (hashwatch.explain);
# meta: every metadata field (hashwatch.metadata) as JSON; device/taken/fs_modified: copies
# of the fields the leads and charts group by.
_ADDED_COLUMNS = {
    "route": "TEXT", "how": "TEXT", "inliers": "INTEGER", "matched_ref": "TEXT",
    "list_version": "INTEGER", "meta": "TEXT", "warnings": "TEXT", "device": "TEXT",
    "taken": "TEXT", "fs_modified": "TEXT",
}


class CaseError(Exception):
    """A case that cannot be run or found as asked."""


def utcnow() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _private_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def open_workdb(out_dir: Path, *, create: bool = True) -> sqlite3.Connection:
    """The case's work database (owner-only: it holds hashes of seized files)."""
    path = Path(out_dir) / WORKDB
    if not create and not path.exists():
        raise CaseError(f"no triage results in {out_dir} ({WORKDB} missing)")
    _private_file(path)
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(_SCHEMA)
    have = {r[1] for r in conn.execute("PRAGMA table_info(files)")}
    for col, kind in _ADDED_COLUMNS.items():
        if col not in have:
            conn.execute(f"ALTER TABLE files ADD COLUMN {col} {kind}")
    conn.execute("CREATE INDEX IF NOT EXISTS ix_files_device ON files(device)")
    if "cut" not in {r[1] for r in conn.execute("PRAGMA table_info(frames)")}:
        # 1: a video frame kept after a cut, off the one-per-interval grid (not in the vPDQ)
        conn.execute("ALTER TABLE frames ADD COLUMN cut INTEGER NOT NULL DEFAULT 0")
    return conn


def register_case(store: Store, case_id: str, out_dir: Path, actor: str = "cli") -> None:
    """Record where a case's results are, so grading and promotion find it by id."""
    case_id = case_id.strip()
    if not case_id or len(case_id) > 200 or any(c in case_id for c in "\n\r\t/\\"):
        raise CaseError(f"invalid case id {case_id!r} (1-200 characters, no slashes)")
    out = str(Path(out_dir).resolve())
    now = utcnow()
    with store.engine.begin() as conn:
        row = conn.execute(
            triage_cases.select().where(triage_cases.c.case_id == case_id)
        ).first()
        if row is None:
            conn.execute(triage_cases.insert().values(
                case_id=case_id, out_dir=out, created_at=now, updated_at=now, created_by=actor))
            created = True
        elif row.out_dir != out:
            raise CaseError(f"case {case_id!r} already has its results in {row.out_dir}; "
                            f"re-run with --out {row.out_dir} (or use another case id)")
        else:
            conn.execute(triage_cases.update().where(triage_cases.c.case_id == case_id)
                         .values(updated_at=now))
            created = False
    store.audit(actor, "triage.case_create" if created else "triage.case_run",
                {"case": case_id, "out": out})


def list_versions(store: Store, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Name, version and state of the lists a run matches against (for the report). Read
    straight from the lists table: ``Store.lists()`` also counts entries, which costs seconds
    on a list of millions. Raises ListNotFound for a named list that does not exist."""
    from hashwatch.store import ListNotFound
    from hashwatch.store.schema import hash_lists

    q = sa.select(hash_lists.c.name, hash_lists.c.version, hash_lists.c.enabled,
                  hash_lists.c.updated_at).where(hash_lists.c.deleted_at.is_(None))
    with store.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q.order_by(hash_lists.c.name))]
    for r in rows:
        r["enabled"] = bool(r["enabled"])
    if names:
        for n in names:
            if not any(r["name"] == n for r in rows):
                raise ListNotFound(n)
        rows = [r for r in rows if r["name"] in names]
    return rows


DIGEST_NAME = "hashwatch-list-digest-v1"


def list_digest(store: Store, name: str) -> tuple[str, int]:
    """Content digest of a list's live entries, independent of their order: SHA-256 over
    ``DIGEST_NAME``, the entry count and the sum mod 2**256 of SHA-256 of each entry's
    canonical line ``signal_type TAB value TAB scheme:code TAB variant`` (a multiset hash,
    MSet-Add-Hash of Clarke et al., ASIACRYPT 2003), so the same content imported in any
    order gives the same digest. Streams the list once. Returns ``(hex digest, entries)``."""
    import hashlib

    total = 0
    n = 0
    for e in store.iter_entries(list_name=name):
        line = (f"{e.signal_type}\t{e.value}\t{e.category or ''}\t{e.variant}").encode()
        total += int.from_bytes(hashlib.sha256(line).digest(), "big")
        n += 1
    h = hashlib.sha256(DIGEST_NAME.encode() + b"\0" + str(n).encode() + b"\0"
                       + (total % (1 << 256)).to_bytes(32, "big"))
    return h.hexdigest(), n


def _with_digests(conn: sqlite3.Connection, store: Store, rows: list[dict[str, Any]]
                  ) -> list[dict[str, Any]]:
    """Add ``digest`` and ``entries`` to each list, cached in the work database per list
    version (a 20M-entry list is read once per version, not once per run)."""
    for r in rows:
        key = f"digest:{r['name']}:{r['version']}:{r.get('updated_at')}"
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            digest, n = list_digest(store, r["name"])
            conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                         (key, json.dumps([digest, n])))
        else:
            digest, n = json.loads(row[0])
        r["digest"], r["entries"] = digest, n
    return rows


def case_out_dir(store: Store, case_id: str) -> Path:
    with store.engine.connect() as conn:
        row = conn.execute(
            sa.select(triage_cases.c.out_dir).where(triage_cases.c.case_id == case_id)
        ).first()
    if row is None:
        raise CaseError(f"no triage case {case_id!r} in this database (run `hashwatch triage "
                        f"... --case {case_id}` first)")
    return Path(row.out_dir)


@dataclass
class TriageOptions:
    case_id: str
    sources: list[str]
    out_dir: Path
    workers: int = 0  # 0: all cores
    lists: list[str] | None = None
    thumbnails: bool = False
    robust: bool = True  # also match the Matcher's robust views (flips, crops, borders...)
    pdq_threshold: int = 31
    work: WorkOptions = field(default_factory=WorkOptions)
    chunk_files: int = 8
    actor: str = "cli"
    examiner: str | None = None  # shown on the report; kept from an earlier run when None
    notes: str | None = None  # case notes for the report; likewise
    pdf: bool = True  # also write report.pdf
    hash_views: tuple[str, ...] | None = None  # views the PDQ index holds (None: every view)


@dataclass
class Progress:
    files_total: int = 0
    bytes_total: int = 0
    files_done: int = 0  # files on disk (tasks), including those done by earlier runs
    bytes_done: int = 0
    records: int = 0  # rows written this run (archive members included)
    skipped: int = 0  # tasks already done by an earlier run


@dataclass
class TriageSummary:
    case_id: str
    out_dir: Path
    counts: dict[str, int]
    files: int
    new_records: int
    resumed_tasks: int
    clusters: int
    wall: float
    timings: dict[str, float]  # CPU seconds: read/decode/hash summed over workers, the rest
    # in this process (cluster and report: wall seconds)
    outputs: dict[str, str]


# A file's records, each with its state and the CPU seconds spent matching it.
Done = tuple[SourceFile, list[tuple[FileRecord, Classified, float]]]


def _classify_chunk(done: list[tuple[SourceFile, list[FileRecord]]], matcher: Matcher,
                    lists: Sequence[str] | None) -> list[Done]:
    """Classify a chunk's records (one exact look-up per signal for the chunk), then drop what
    only matching needed (query views, keypoints, frames' views): it never leaves the worker."""
    flat = [rec for _sf, recs in done for rec in recs]
    t0 = time.process_time()
    classified = iter(classify_many(flat, matcher, lists))
    dt = (time.process_time() - t0) / max(len(flat), 1)
    out: list[Done] = []
    for sf, recs in done:
        rows = []
        for rec in recs:
            rows.append((rec, next(classified), dt))
            rec.extras = None
            rec.frame_hashes = None
        out.append((sf, rows))
    return out


def _work_chunk(files: list[SourceFile], opts: WorkOptions,
                spec: MatchSpec | None = None) -> list[Done]:
    """The per-chunk work of a pool worker: read, decode, hash (:func:`process_file`) and
    match every record (:func:`classify_many`) against this process's matcher, which maps the
    saved indexes (:func:`hashwatch.matchwork.worker_matcher`). ``spec`` None: hashing only
    (the pool's start-up check)."""
    done = [(sf, process_file(sf, opts)) for sf in files]
    if spec is None:
        return []
    return _classify_chunk(done, matchwork.worker_matcher(spec), spec.lists)


def _default_context() -> multiprocessing.context.BaseContext:
    # forkserver: safe when the caller has threads (index merges, the service); fork is not.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _chunks(files: Sequence[SourceFile], n: int, max_bytes: int = 64 << 20
            ) -> Iterator[list[SourceFile]]:
    chunk: list[SourceFile] = []
    size = 0
    for sf in files:
        chunk.append(sf)
        size += max(sf.size, 0)
        if len(chunk) >= n or size >= max_bytes:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


class _Writer:
    """Batches finished tasks into transactions (one per ~0.5 s): fast, and atomic per task."""

    def __init__(self, conn: sqlite3.Connection, run_id: int,
                 versions: dict[str, int] | None = None, threshold: int = 31) -> None:
        self.conn = conn
        self.run_id = run_id
        self.versions = versions or {}
        self.threshold = threshold
        self.pending: list[tuple[SourceFile, list[tuple[FileRecord, Any, float]]]] = []
        self.last = time.perf_counter()
        self.seconds = 0.0

    def add(self, sf: SourceFile, rows: list[tuple[FileRecord, Any, float]]) -> None:
        self.pending.append((sf, rows))
        if len(self.pending) >= 512 or time.perf_counter() - self.last > 0.5:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        t0 = time.process_time()
        now = utcnow()
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            for sf, rows in self.pending:
                for rec, cl, t_match in rows:
                    matches = [
                        {**m, **{k: v for k, v in explain(
                            m, threshold=self.threshold,
                            list_version=self.versions.get(m.get("list", ""))).items()
                            if k in ("route", "route_detail", "how", "list_version", "distance",
                                     "inliers")}}
                        for m in cl.matches_json()]
                    first = matches[0] if matches else {}
                    cur = c.execute(
                        "INSERT INTO files(path, task, source, container, kind, format, size, md5,"
                        " sha1, sha256, pdq, pdq_quality, width, height, duration, frame_count,"
                        " state, distance, lists, categories, conflict, matches, error, thumb,"
                        " t_read, t_decode, t_hash, t_match, run_id, route, how, inliers,"
                        " matched_ref, list_version, meta, warnings, device, taken, fs_modified)"
                        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,"
                        "?,?,?,?,?,?,?,?)",
                        (rec.path, sf.path, rec.source, rec.container, rec.kind, rec.format,
                         rec.size, rec.md5, rec.sha1, rec.sha256, rec.pdq, rec.pdq_quality,
                         rec.width, rec.height, rec.duration, rec.frame_count, cl.state,
                         cl.distance, "|".join(cl.lists), json.dumps(cl.categories),
                         int(cl.conflict), json.dumps(matches), rec.error, rec.thumb,
                         rec.t_read, rec.t_decode, rec.t_hash, t_match, self.run_id,
                         first.get("route"), first.get("how"), first.get("inliers"),
                         first.get("ref"), first.get("list_version"),
                         json.dumps(rec.meta, ensure_ascii=False),
                         json.dumps(rec.warnings, ensure_ascii=False) if rec.warnings else None,
                         device_key(rec.meta), rec.meta.get("taken"),
                         rec.meta.get("member_modified") or rec.meta.get("fs_modified")),
                    )
                    if rec.frames:
                        fid = cur.lastrowid
                        c.executemany("INSERT INTO frames(file_id, t, pdq, quality, cut) "
                                      "VALUES (?,?,?,?,?)",
                                      [(fid, t, p, q, int(cut)) for t, p, q, cut in rec.frames])
                c.execute("INSERT INTO tasks(key, size, records, run_id, done_at) VALUES "
                          "(?,?,?,?,?)", (sf.path, sf.size, len(rows), self.run_id, now))
            c.execute("UPDATE runs SET files_done = files_done + ? WHERE id = ?",
                      (len(self.pending), self.run_id))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        self.pending = []
        self.last = time.perf_counter()
        self.seconds += time.process_time() - t0


def run_triage(
    opts: TriageOptions,
    store: Store,
    *,
    progress: Callable[[Progress], None] | None = None,
    matcher: Matcher | None = None,
    mp_context: multiprocessing.context.BaseContext | None = None,
) -> TriageSummary:
    """Triage ``opts.sources`` into ``opts.out_dir`` (resuming a previous run there)."""
    t_start = time.perf_counter()
    out = Path(opts.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    conn = open_workdb(out)
    try:
        return _run(opts, store, out, conn, t_start, progress, matcher, mp_context)
    finally:
        conn.close()


def _run(opts: TriageOptions, store: Store, out: Path, conn: sqlite3.Connection, t_start: float,
         progress: Callable[[Progress], None] | None, matcher: Matcher | None,
         mp_context: multiprocessing.context.BaseContext | None) -> TriageSummary:
    from hashwatch.triage.report import write_reports

    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    if meta.get("case_id", opts.case_id) != opts.case_id:
        raise CaseError(f"{out} holds case {meta['case_id']!r}, not {opts.case_id!r}")
    lists_info = _with_digests(conn, store, list_versions(store, opts.lists))
    register_case(store, opts.case_id, out, opts.actor)
    workers = opts.workers or os.cpu_count() or 1
    sources = [os.path.abspath(s) for s in opts.sources]
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT OR IGNORE INTO meta VALUES ('case_id', ?)", (opts.case_id,))
    conn.execute("INSERT OR IGNORE INTO meta VALUES ('created_at', ?)", (utcnow(),))
    all_sources = json.loads(meta.get("sources", "[]"))
    all_sources += [s for s in sources if s not in all_sources]
    conn.execute("INSERT OR REPLACE INTO meta VALUES ('sources', ?)", (json.dumps(all_sources),))
    conn.execute("INSERT OR REPLACE INTO meta VALUES ('lists', ?)",
                 (json.dumps(opts.lists or []),))
    conn.execute("INSERT OR REPLACE INTO meta VALUES ('pdq_threshold', ?)",
                 (str(opts.pdq_threshold),))
    # the report's methods say which views of the known images the hash tier held
    conn.execute("INSERT OR REPLACE INTO meta VALUES ('hash_views', ?)",
                 (json.dumps(sorted(opts.hash_views) if opts.hash_views else None),))
    for key in ("examiner", "notes"):
        if getattr(opts, key) is not None:
            conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, getattr(opts, key)))
    run_id = conn.execute(
        "INSERT INTO runs(started_at, tool_version, lists, sources) VALUES (?,?,?,?)",
        (utcnow(), __version__, json.dumps(lists_info), json.dumps(sources)),
    ).lastrowid
    conn.execute("COMMIT")
    assert run_id is not None

    files = list(walk_sources(opts.sources))
    done = {r[0] for r in conn.execute("SELECT key FROM tasks")}
    prog = Progress(files_total=len(files), bytes_total=sum(max(f.size, 0) for f in files))
    pending = []
    for f in files:
        if f.path in done:
            prog.files_done += 1
            prog.bytes_done += max(f.size, 0)
            prog.skipped += 1
        else:
            pending.append(f)
    del done
    if progress:
        progress(prog)

    # Matching runs where the hashing runs: in each pool worker, against the saved indexes
    # every worker maps (prepared once here); with one worker, or a database only this
    # process can open, in this process with its own matcher.
    spec: MatchSpec | None = None
    prepared: Matcher | None = None
    if workers > 1 and matchwork.shareable(store):
        base = matcher
        spec = MatchSpec.for_store(
            store, lists=tuple(opts.lists) if opts.lists else None, robust=opts.robust,
            pdq_threshold=opts.pdq_threshold, hash_views=opts.hash_views,
            index_path=str(base.index_path) if base is not None and base.index_path else None,
            persist=base.persist if base is not None else True)
        prepared = matchwork.prepare(spec)
    if matcher is None:
        matcher = prepared or Matcher(store, pdq_threshold=opts.pdq_threshold,
                                      hash_views=opts.hash_views)
    writer = _Writer(conn, run_id, {li["name"]: li["version"] for li in lists_info},
                     opts.pdq_threshold)
    wopts = WorkOptions(max_bytes=opts.work.max_bytes, max_side=opts.work.max_side,
                        video_every=opts.work.video_every, thumbnails=opts.thumbnails,
                        thumb_side=opts.work.thumb_side,
                        extras=matcher.query_extras() if opts.robust else None)
    t_match = 0.0
    times = {"read": 0.0, "decode": 0.0, "hash": 0.0}

    def finish(results: list[Done]) -> None:
        """Hand classified files to the writer."""
        nonlocal t_match
        for sf, rows in results:
            for rec, _cl, dt in rows:
                times["read"] += rec.t_read
                times["decode"] += rec.t_decode
                times["hash"] += rec.t_hash
                t_match += dt
            writer.add(sf, rows)
            prog.files_done += 1
            prog.bytes_done += max(sf.size, 0)
            prog.records += len(rows)
        if progress:
            progress(prog)

    def crashed(files: list[SourceFile]) -> None:
        """Files that killed their worker: recorded as errors, matched exactly here."""
        finish(_classify_chunk([(sf, [_crashed_record(sf)]) for sf in files], matcher,
                               opts.lists))

    try:
        if spec is None:
            for chunk in _chunks(pending, opts.chunk_files):
                finish(_classify_chunk([(sf, process_file(sf, wopts)) for sf in chunk],
                                       matcher, opts.lists))
        else:
            _run_pool(pending, workers, opts.chunk_files, wopts, spec, finish, crashed,
                      mp_context)
    finally:
        if prepared is not None:  # the workers' index files are saved; nothing left to do
            prepared.store.close()
    writer.flush()

    t0 = time.perf_counter()
    n_clusters = assign_clusters(conn, opts.pdq_threshold)
    t_cluster = time.perf_counter() - t0
    conn.execute("UPDATE runs SET finished_at = ? WHERE id = ?", (utcnow(), run_id))
    t0 = time.perf_counter()
    outputs = write_reports(conn, out, thumbnails=opts.thumbnails, pdf=opts.pdf)
    t_report = time.perf_counter() - t0
    counts = {s: 0 for s in STATES}
    for state, n in conn.execute("SELECT state, COUNT(*) FROM files GROUP BY state"):
        counts[state] = n
    n_files = conn.execute("SELECT COUNT(*) FROM files").fetchone()[0]
    store.audit(opts.actor, "triage.run", {"case": opts.case_id, "files": n_files,
                                            "new": prog.records, "counts": counts})
    return TriageSummary(
        case_id=opts.case_id, out_dir=out, counts=counts, files=n_files,
        new_records=prog.records, resumed_tasks=prog.skipped, clusters=n_clusters,
        wall=time.perf_counter() - t_start,
        timings={**times, "match": t_match, "write": writer.seconds, "cluster": t_cluster,
                 "report": t_report},
        outputs=outputs,
    )


def _crashed_record(sf: SourceFile) -> FileRecord:
    """A file that killed its worker twice (a decoder crash on hostile input): recorded as an
    error, with its crypto hashes taken here (hashlib is safe) so it can still match exactly."""
    from hashwatch.signals.crypto import hash_path

    rec = FileRecord(path=sf.path, source=sf.source, kind="unreadable",
                     error="error: the worker process died while decoding this file")
    try:
        c = hash_path(sf.path)
        rec.size, rec.md5, rec.sha1, rec.sha256 = c.size, c.md5, c.sha1, c.sha256
    except OSError as exc:
        rec.error = f"unreadable: {exc.strerror or exc}"
    return rec


def _run_pool(pending: list[SourceFile], workers: int, chunk_files: int, wopts: WorkOptions,
              spec: MatchSpec, finish: Callable[[list[Done]], None],
              crashed: Callable[[list[SourceFile]], None],
              mp_context: multiprocessing.context.BaseContext | None) -> None:
    """Hash and match ``pending`` in a process pool (each worker started with
    :func:`hashwatch.matchwork.limit_library_threads`), at most 4 chunks per worker in flight.

    If a worker dies (a decoder crash on a hostile file), the pool is restarted and every
    chunk that was in flight is retried one file per task; a file that kills its worker again
    is recorded as an error, so one bad file never stops (or blocks the resume of) a case.
    """
    queue: deque[tuple[list[SourceFile], bool]] = deque(
        (c, False) for c in _chunks(pending, chunk_files))
    window = 4 * workers
    while queue:
        failed: list[tuple[list[SourceFile], bool]] = []
        ctx = mp_context or _default_context()
        # not in a forked child: resizing OpenCV's/OpenMP's running pools there hangs
        init = None if ctx.get_start_method() == "fork" else matchwork.limit_library_threads
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=init) as ex:
            # A pool that cannot run at all (a broken environment) must stop the run, not
            # mark every file as a decoder crash: check that a worker starts and answers.
            try:
                ex.submit(_work_chunk, [], wopts).result()
            except BrokenProcessPool as exc:
                raise RuntimeError(f"triage worker processes cannot start: {exc}") from None
            inflight: dict[Future[Any], tuple[list[SourceFile], bool]] = {}
            while queue or inflight:
                while queue and len(inflight) < window:
                    if queue[0][1] and inflight:
                        break  # retries run alone, so a crash points at its file
                    item = queue.popleft()
                    inflight[ex.submit(_work_chunk, item[0], wopts, spec)] = item
                    if item[1]:
                        break
                done_f, _ = wait(inflight, return_when=FIRST_COMPLETED)
                broken = False
                for fut in done_f:
                    item = inflight.pop(fut)
                    try:
                        res = fut.result()
                    except BrokenProcessPool:
                        failed.append(item)
                        broken = True
                        continue
                    finish(res)
                if broken:
                    failed += inflight.values()
                    break
        for chunk, retried in failed:
            if retried:
                crashed(chunk)
            else:
                queue.extendleft(([sf], True) for sf in reversed(chunk))


def assign_clusters(conn: sqlite3.Connection, threshold: int = 31) -> int:
    """Group unknown images (PDQ quality >= 50) into near-duplicate clusters, numbered 1..K
    largest first; low-quality unknown images get a cluster of their own each (after the
    others) so that every unknown image can be graded by cluster."""
    rows = conn.execute(
        "SELECT id, pdq, pdq_quality FROM files WHERE state = 'unknown' AND kind = 'image' "
        "ORDER BY id").fetchall()
    good = [(r["id"], r["pdq"]) for r in rows if r["pdq"] and (r["pdq_quality"] or 0) >= 50]
    groups = cluster_pdq([i for i, _ in good], [p for _, p in good], threshold)
    groups += [[r["id"]] for r in rows if not (r["pdq"] and (r["pdq_quality"] or 0) >= 50)]
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("UPDATE files SET cluster = NULL WHERE cluster IS NOT NULL")
        conn.execute("DELETE FROM clusters")
        conn.executemany("UPDATE files SET cluster = ? WHERE id = ?",
                         [(n, i) for n, g in enumerate(groups, start=1) for i in g])
        conn.executemany("INSERT INTO clusters(cluster, size, representative) VALUES (?,?,?)",
                         [(n, len(g), g[0]) for n, g in enumerate(groups, start=1)])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return len(groups)


def check_store_case(store: Store, case_id: str) -> Path:
    """The out dir of a registered case, checked to still hold its work database."""
    out = case_out_dir(store, case_id)
    if not (out / WORKDB).exists():
        raise CaseError(f"case {case_id!r}: results folder {out} no longer holds {WORKDB}")
    return out


__all__ += ["assign_clusters", "check_store_case", "StoreError"]
