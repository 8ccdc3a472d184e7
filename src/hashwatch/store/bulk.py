"""Bulk list import: stream validated entries into a staging table, then apply them with
set-based statements. PostgreSQL: one transaction, atomic (the list gets all of the file's
good rows or none of them). SQLite: one short transaction per chunk of staged rows,
resumable (see below).

The rows come from the same readers and the same validation as the row-by-row path
(``hashwatch.formats`` readers yield ``EntryIn``; this module never parses a file), and the
set-based step keeps that path's rules:

* de-duplication on the entry identity (list, signal type, value, category, variant): within
  the file and against the list, the *first* occurrence in the file wins (rows are applied in
  identity order, ties broken by file order; SQLite with ``ON CONFLICT DO NOTHING``,
  PostgreSQL by ``DISTINCT ON`` + ``NOT EXISTS`` before a plain INSERT, see
  ``_apply_pg_chunk``);
* an identical entry that had been removed is restored (one set-based UPDATE);
* every added or restored entry gets a change-feed row in the same transaction, so indexes
  and service workers pick the import up like any other write (``hashwatch.store.feed``).

PostgreSQL: the rows are parsed in chunks (the first ``PG_CHUNK_FIRST`` rows, doubling up
to ``PG_CHUNK``), each written as COPY text to an unlinked owner-only temporary file, then
``COPY``-ed into a temporary table (not WAL-logged) and applied by one de-duplicated
``INSERT ... SELECT ... ORDER BY ... RETURNING id`` feeding the change rows (under a
SAVEPOINT: a concurrent identical write makes it redo the chunk with ``ON CONFLICT DO
NOTHING`` instead of failing the import); the server applies chunk k (a second thread
waits on it) while this process parses chunk k+1, so both cores work. All chunks are
statements of one transaction: atomic. SQLite: batched inserts into a TEMP table (a
separate file: the database is not locked while the file is read), one external sort of it
into identity order, then the same INSERT ... SELECT under the write lock, a range of that
order at a time. Applying rows in identity order makes index insertions nearly sequential,
which is most of the speed-up over the row-by-row path;
chunks that double in size keep the number of passes over the indexes small (see
BENCHMARKS.md, bulk import).

Memory stays flat (rows stream; a chunk waits on disk; sorting happens in the database,
spilling to disk). A run killed while staging leaves nothing behind (the staging table is
temporary). PostgreSQL: the whole import is one transaction; other writers proceed
meanwhile, except on the very same entries; an error that stops reading the file (not a bad
row: those are skipped and reported) or an interrupt cancels the chunk being applied and
rolls everything back.

SQLite has one writer at a time, so one statement applying 20 million rows would hold the
write lock for minutes and every other writer (the service's list updates) would fail
after its 30 s busy timeout. It applies the staged rows in chunks instead (the first of
``SQLITE_CHUNK_FIRST`` rows, each next one sized from the last one's time to hold the lock
about ``SQLITE_CHUNK_SECONDS``, at most ``SQLITE_CHUNK`` rows), each its own short
transaction, pausing ``SQLITE_PAUSE`` seconds between chunks so that waiting writers get the
lock. The chunks are consecutive ranges of the staged rows sorted in identity order (ties in
file order), not of the file: the identity index ``uq_entries_identity`` and
``ix_entries_signal_value`` are, within one list and signal type, in hash-value order, which
is random, so a chunk of the file would touch index pages all over both indexes and every
commit would write them to the WAL again (4-5 KB of WAL per row added; a 20M-line
import's WAL passed 12 GB); a key range touches only its own pages, each about once over the
whole import. After each chunk a
``PRAGMA wal_checkpoint(RESTART)`` copies the chunk into the database file and starts the WAL
over (SQLite's automatic passive checkpoint never got to restart it while other connections
came and went), so the WAL stays about one chunk long. The import's connection has a larger
page cache (``SQLITE_CACHE_KIB``, also the sorter's in-memory run size) and one sorter helper
thread while it imports. An import killed while applying keeps the chunks already committed,
and running it again adds exactly the rest (resumable, like the row-by-row path; that run
reports the entries added before the kill as duplicates); the first-occurrence rule holds
across chunks because an identity's rows are consecutive in the sorted order, earliest line
first, and earlier chunks are applied first. Durability: the connection runs WAL with
``synchronous=NORMAL`` (``Store.open``): a commit survives a killed process; a power loss may
lose the chunks committed since the last checkpoint, never the database's consistency, and a
re-run adds them again. Disk: the TEMP database (SQLite's temporary directory,
``SQLITE_TMPDIR``) holds the staged rows about three times over while they are sorted.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from typing import IO, Any

import sqlalchemy as sa

from hashwatch.store.core import Store, bump_version
from hashwatch.store.records import AddResult, EntryIn, _labels_to_text, utcnow
from hashwatch.store.schema import changes

STAGE_COLUMNS = ("signal_type", "value", "category_scheme", "category_code", "labels",
                 "source_ref", "group_ref", "variant")
_IDENTITY = "signal_type, value, category_scheme, category_code, variant"
# PostgreSQL sorts a chunk on the same identity with the value first and in byte order: its
# sort then compares abbreviated keys (the first 8 bytes of the value, as an integer) instead
# of calling the collation for each comparison. Led by the signal type (one value for a whole
# list) every abbreviated key was equal and PostgreSQL gave the abbreviation up (backend CPU
# of the apply -13 % at 2M lines, BENCHMARKS.md, bulk import). Same groups for DISTINCT ON:
# the database's collations are deterministic, equality is byte equality either way.
_PG_ORDER = 'value COLLATE "C", signal_type, category_scheme, category_code, variant'
_BATCH = 10_000
PG_CHUNK_FIRST = 250_000  # PostgreSQL: rows of the first chunk (the server starts early)
PG_CHUNK = 8_000_000  # PostgreSQL: chunks double up to this (few passes over the indexes)
log = logging.getLogger(__name__)
SQLITE_CHUNK = 1_000_000  # at most this many staged rows per write transaction on SQLite
SQLITE_CHUNK_FIRST = 100_000  # the first chunk; later ones sized by the time they take
SQLITE_CHUNK_SECONDS = 2.0  # aimed write-lock hold per chunk (waiting writers: 30 s timeout)
SQLITE_PAUSE = 0.2  # seconds between two chunks: waiting writers take the lock
SQLITE_CHECKPOINT = "RESTART"  # after each chunk ("" = SQLite's own passive checkpoints)
SQLITE_CACHE_KIB = 65_536  # page cache of the import's connection while it imports (KiB)
SQLITE_SORT_THREADS = 1  # helper threads of SQLite's sorter (the second core)


def _staged(items: Iterable[EntryIn], on_batch: Callable[[int], None] | None,
            staged: Counter) -> Iterator[list[tuple]]:
    """Rows for the staging table, in batches, counted per signal type into ``staged``;
    unknown signal types raise as in ``Store.add_entries`` (KeyError)."""
    from hashwatch.signals import get_signal_type

    known: set[str] = set()
    it = iter(items)
    while True:
        batch = list(islice(it, _BATCH))
        if not batch:
            return
        rows = []
        for e in batch:
            if e.signal_type not in known:
                get_signal_type(e.signal_type)
                known.add(e.signal_type)
            cat = e.category
            rows.append((e.signal_type, e.value, cat.scheme if cat else "",
                         cat.code if cat else "", _labels_to_text(e.labels), e.source_ref,
                         e.group_ref, e.variant))
            staged[e.signal_type] += 1
        yield rows
        if on_batch is not None:
            on_batch(len(batch))


def bulk_add(
    store: Store,
    list_name: str,
    items: Iterable[EntryIn],
    *,
    actor: str = "cli",
    action: str = "entries.import",
    detail: dict | None = None,
    on_batch: Callable[[int], None] | None = None,
    on_apply: Callable[[], None] | None = None,
) -> AddResult:
    """Add ``items`` to a list in one transaction (see the module docstring).

    Returns counts like ``Store.add_entries`` (``added_ids`` stays empty: a bulk import may
    add millions). ``on_batch(n)`` is called as rows are staged, ``on_apply()`` once before
    the set-based step (PostgreSQL: before its first chunk). Raises ListNotFound, KeyError
    (unknown signal type) and whatever the reader raises (FormatError); nothing is written
    then.
    """
    with store.engine.connect() as conn:
        list_id = store._list_row(conn, list_name).id
    if store.dialect == "postgresql":
        return _bulk_pg(store, list_id, items, actor, action, detail, on_batch, on_apply)
    return _bulk_sqlite(store, list_id, items, actor, action, detail, on_batch, on_apply)


def _count(res: AddResult, staged: Counter, added: dict[str, int], restored: list[tuple]
           ) -> None:
    """Totals and per-signal counts, as ``Store.add_entries`` reports them."""
    per_restored = Counter(sig for _i, sig in restored)
    res.added = sum(added.values())
    res.restored = len(restored)
    res.duplicates = sum(staged.values()) - res.added - res.restored
    for sig, n in staged.items():
        a, r = added.get(sig, 0), per_restored[sig]
        res.count(sig, added=a, restored=r, duplicates=n - a - r)


def _finish(store: Store, conn: sa.Connection, list_id: int, res: AddResult, actor: str,
            action: str, detail: dict | None, now: str, *, bumped: bool = False) -> None:
    if res.added or res.restored:
        # bumped: the version went up with the first chunk, and the time is the last's
        bump_version(conn, list_id, utcnow() if bumped else now, new_version=not bumped)
    info: dict[str, Any] = {"added": res.added, "duplicates": res.duplicates,
                            "restored": res.restored, "method": "bulk"}
    info.update(detail or {})
    store._audit(conn, actor, action, list_id, info)


def _ever_removed(conn: sa.Connection, list_id: int) -> bool:
    return conn.execute(sa.select(changes.c.seq).where(
        changes.c.list_id == list_id, changes.c.op == "remove").limit(1)).first() is not None


_RESTORE = (
    "UPDATE entries SET removed_at = NULL WHERE id IN ("
    " SELECT e.id FROM entries e JOIN hw_stage s ON e.list_id = :lid"
    " AND e.signal_type = s.signal_type AND e.value = s.value"
    " AND e.category_scheme = s.category_scheme AND e.category_code = s.category_code"
    " AND e.variant = s.variant WHERE e.removed_at IS NOT NULL {chunk}) RETURNING id, signal_type"
)
_COLS = ("list_id, signal_type, value, category_scheme, category_code, labels, source_ref, "
         "group_ref, variant, added_at, added_by")
_SELECT = ("SELECT :lid, signal_type, value, category_scheme, category_code, labels, "
           "source_ref, group_ref, variant, :now, :actor FROM hw_stage WHERE true "
           f"ORDER BY {_PG_ORDER}, n")


# SQLite: a chunk is a range of positions in the sorted staging table (rowid)
_SELECT_CHUNK = ("SELECT :lid, signal_type, value, category_scheme, category_code, labels, "
                 "source_ref, group_ref, variant, :now, :actor FROM hw_stage "
                 "WHERE rowid > :lo AND rowid <= :hi ORDER BY rowid")
_SQLITE_SORT = (f"CREATE TEMP TABLE hw_stage AS SELECT n, {', '.join(STAGE_COLUMNS)} "
                f"FROM temp.hw_raw ORDER BY {_IDENTITY}, n")


def _copy_line(n: int, row: tuple) -> str:
    """One row of the staging table in COPY text format (``n`` first): fields are joined
    by tabs; backslashes, tabs and line breaks inside a field are escaped."""
    line = "\t".join(row)
    if line.count("\t") != len(row) - 1 or "\\" in line or "\n" in line or "\r" in line:
        line = "\t".join(f.translate(_COPY_ESCAPES) for f in row)
    return f"{n}\t{line}\n"


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _spools(items: Iterable[EntryIn], on_batch: Callable[[int], None] | None,
            staged: Counter) -> Iterator[tuple[IO[bytes], int]]:
    """The rows, parsed and numbered in file order, as chunks of COPY text in unlinked
    owner-only temporary files (memory stays flat): ``(file at offset 0, rows)``. Chunks
    grow from ``PG_CHUNK_FIRST`` rows, doubling up to ``PG_CHUNK``. Parsing happens as the
    iterator advances, i.e. while the caller's previous chunk is applied."""
    batches = _staged(items, on_batch, staged)
    n = 0
    size = PG_CHUNK_FIRST
    while True:
        # 0600 and already unlinked: hashes never linger; closed by the caller
        spool = tempfile.TemporaryFile()  # noqa: SIM115
        k = 0
        for rows in batches:
            spool.write("".join(_copy_line(n + i, r)
                                for i, r in enumerate(rows, start=1)).encode())
            n += len(rows)
            k += len(rows)
            if k >= size:
                break
        if not k:
            spool.close()
            return
        spool.seek(0)
        yield spool, k
        size = min(size * 2, PG_CHUNK)


def _bulk_pg(store: Store, list_id: int, items: Iterable[EntryIn], actor: str, action: str,
             detail: dict | None, on_batch: Any, on_apply: Any) -> AddResult:
    res = AddResult()
    staged: Counter = Counter()
    added: Counter = Counter()
    restored: list[tuple] = []
    with store.engine.begin() as conn:
        conn.exec_driver_sql(_PG_STAGE)
        _pg_plan_settings(conn)
        raw = conn.connection.driver_connection
        now = utcnow()
        params = {"lid": list_id, "now": now, "actor": actor}
        may_restore = _ever_removed(conn, list_id)
        # the server applies chunk k (one thread, the connection's only user meanwhile)
        # while this thread parses chunk k+1: both cores work (BENCHMARKS.md, bulk import)
        pool = ThreadPoolExecutor(1, thread_name_prefix="hashwatch-bulk")
        pending: Future | None = None
        try:
            for spool, _k in _spools(items, on_batch, staged):
                with spool:
                    if pending is not None:
                        pending.result()
                    elif on_apply is not None:
                        on_apply()
                    conn.exec_driver_sql("TRUNCATE hw_stage")
                    with raw.cursor() as cur, cur.copy(
                            f"COPY hw_stage (n, {', '.join(STAGE_COLUMNS)}) FROM STDIN") as cp:
                        while block := spool.read(1 << 20):
                            cp.write(block)
                if may_restore:
                    conn.exec_driver_sql("ANALYZE hw_stage")
                pending = pool.submit(_apply_pg_chunk, conn, params, may_restore, added,
                                      restored)
            if pending is None and on_apply is not None:
                on_apply()
            if pending is not None:
                pending, last = None, pending
                last.result()
        finally:
            if pending is not None:  # parsing failed while a chunk was being applied
                with contextlib.suppress(Exception):
                    raw.cancel()
                with contextlib.suppress(BaseException):
                    pending.result()
            pool.shutdown()
        _count(res, staged, dict(added), restored)
        _finish(store, conn, list_id, res, actor, action, detail, now)
    # fresh planner statistics now, not when autovacuum gets to it: until then queries are
    # planned for the tables' old sizes (the change feed's read took 165 ms instead of 2 ms
    # per refresh for ~25 s after a 200,000-entry import). The import is committed already:
    # a role that may not analyse (not the tables' owner) only loses this speed-up.
    with contextlib.suppress(Exception), store.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE entries")
        conn.exec_driver_sql("ANALYZE changes")
    return res


# PostgreSQL: the import's staging table (file order ``n``, then the rows as staged)
_PG_STAGE = (f"CREATE TEMP TABLE hw_stage (n bigint, "
             f"{', '.join(f'{c} text' for c in STAGE_COLUMNS)}) ON COMMIT DROP")


def _pg_plan_settings(conn: sa.Connection) -> None:
    """The import transaction's planner settings (``SET LOCAL``: until it ends)."""
    # a chunk's identity-order sort: in memory up to this, then on disk
    conn.exec_driver_sql("SET LOCAL work_mem = '256MB'")
    # a chunk's NOT EXISTS (and the restores' join) must probe the identity index once per
    # staged row, whatever the statistics say (they miss this transaction's own rows): any
    # other plan reads the list's entries per chunk (merge or hash anti-join) or, worse, per
    # staged row (a rescanned or materialised scan of the list, which the planner picked at
    # 2M lines: quadratic). See _DEDUP; tests/test_bulk_pg.py checks the plan.
    for plan in ("mergejoin", "hashjoin", "seqscan", "bitmapscan", "material"):
        conn.exec_driver_sql(f"SET LOCAL enable_{plan} = off")
    conn.exec_driver_sql("SET LOCAL jit = off")  # (those settings inflate plan costs)


# ``list_id + 0``: no index on the list alone may serve the probe (a scan of the whole list
# per staged row); the identity index, (value, signal type, ...), is the only one left
_DEDUP = (
    "SELECT :lid, signal_type, value, category_scheme, category_code, labels, source_ref, "
    f"group_ref, variant, :now, :actor FROM (SELECT DISTINCT ON ({_PG_ORDER}) * FROM hw_stage "
    f"ORDER BY {_PG_ORDER}, n) d WHERE NOT EXISTS (SELECT 1 FROM entries e "
    "WHERE e.signal_type = d.signal_type AND e.value = d.value AND e.list_id + 0 = :lid "
    "AND e.category_scheme = d.category_scheme AND e.category_code = d.category_code "
    f"AND e.variant = d.variant) ORDER BY {_PG_ORDER}"
)
_PG_INSERT = (
    "WITH ins AS (INSERT INTO entries ({cols}) {select} RETURNING id, signal_type), "
    "chg AS (INSERT INTO changes (entry_id, list_id, op, at) "
    "SELECT id, :lid, 'add', :now FROM ins) "
    "SELECT signal_type, count(*) FROM ins GROUP BY signal_type"
)


def _apply_pg_chunk(conn: sa.Connection, params: dict[str, Any], may_restore: bool,
                    added: Counter, restored: list[tuple]) -> None:
    """The staged chunk: restores, then one INSERT ... SELECT in identity order (first
    occurrence wins; rows of earlier chunks are already in), each added or restored entry
    with its change row. Part of the import's transaction.

    The rows are de-duplicated before a plain INSERT (``DISTINCT ON`` the identity, ``NOT
    EXISTS`` in the list): no per-row ``ON CONFLICT`` pre-check (~15 % of the server's time,
    BENCHMARKS.md). Another writer may commit one of the same entries after this statement's
    snapshot; the unique index then refuses the statement, so each chunk runs under a
    SAVEPOINT and, on that ``unique_violation`` only, is applied again with ``ON CONFLICT DO
    NOTHING``: the import never fails because of a concurrent identical write."""
    import psycopg

    for retry in (False, True):
        part: list[tuple] = []
        try:
            with conn.begin_nested():
                if may_restore:
                    part = [tuple(r) for r in conn.execute(sa.text(_RESTORE.format(chunk="")),
                                                           params)]
                    if part:
                        conn.execute(changes.insert(), [
                            {"entry_id": i, "list_id": params["lid"], "op": "add",
                             "at": params["now"]} for i, _s in part])
                select = f"{_SELECT} ON CONFLICT DO NOTHING" if retry else _DEDUP
                counts = dict(conn.execute(sa.text(
                    _PG_INSERT.format(cols=_COLS, select=select)), params).all())
        except sa.exc.IntegrityError as exc:
            if retry or not isinstance(exc.orig, psycopg.errors.UniqueViolation):
                raise
            continue
        restored += part
        added.update(counts)
        return


def _bulk_sqlite(store: Store, list_id: int, items: Iterable[EntryIn], actor: str,
                 action: str, detail: dict | None, on_batch: Any, on_apply: Any) -> AddResult:
    res = AddResult()
    with store.engine.connect() as conn:
        raw = conn.connection.driver_connection
        # the TEMP tables live in their own file: staging takes no lock on the database
        raw.execute("DROP TABLE IF EXISTS temp.hw_raw")
        raw.execute("DROP TABLE IF EXISTS temp.hw_stage")
        raw.execute("CREATE TEMP TABLE hw_raw (n INTEGER PRIMARY KEY, signal_type, value, "
                    "category_scheme, category_code, labels, source_ref, group_ref, variant)")
        # a bigger page cache for this connection only: the sort's runs and the pages at
        # the insertion points stay in memory (reset below; memory stays bounded)
        raw.execute(f"PRAGMA cache_size = {-SQLITE_CACHE_KIB}")
        raw.execute(f"PRAGMA temp.cache_size = {-SQLITE_CACHE_KIB}")
        raw.execute(f"PRAGMA threads = {SQLITE_SORT_THREADS}")
        try:
            sql = (f"INSERT INTO temp.hw_raw ({', '.join(STAGE_COLUMNS)}) "
                   f"VALUES ({', '.join('?' * len(STAGE_COLUMNS))})")
            staged: Counter = Counter()
            t_stage, c_stage = time.monotonic(), time.process_time()
            for rows in _staged(items, on_batch, staged):
                raw.executemany(sql, rows)
            raw.commit()
            if on_apply is not None:
                on_apply()
            t_sort, c_sort = time.monotonic(), time.process_time()
            # identity order, ties in file order, numbered by position (rowid): chunks are
            # ranges of the identity index, not of the file (see _SQLITE_SORT)
            raw.execute(_SQLITE_SORT)
            raw.execute("DROP TABLE temp.hw_raw")
            raw.commit()
            top = raw.execute("SELECT coalesce(max(rowid), 0) FROM temp.hw_stage").fetchone()[0]
            now = utcnow()
            params = {"lid": list_id, "now": now, "actor": actor}
            may_restore = _ever_removed(conn, list_id)
            conn.rollback()  # (the read above began a transaction)
            added: Counter = Counter()
            restored: list[tuple] = []
            lo = 0
            size = min(SQLITE_CHUNK_FIRST, SQLITE_CHUNK)
            t_apply, c_apply = time.monotonic(), time.process_time()
            chunks, longest, ckpt, frames = 0, 0.0, 0.0, 0
            bumped = False
            try:
                while True:
                    hi = lo + size
                    last = hi >= top
                    t0 = time.monotonic()
                    bumped |= _apply_sqlite_chunk(conn, raw, dict(params, lo=lo, hi=hi),
                                                  may_restore, added, restored, bump=not bumped)
                    took = max(time.monotonic() - t0, 1e-3)
                    chunks, longest = chunks + 1, max(longest, took)
                    if SQLITE_CHECKPOINT:
                        # the WAL holds this chunk's pages; copy them into the database and
                        # start the WAL over, so it stays about one chunk long (BENCHMARKS.md)
                        t1 = time.monotonic()
                        _busy, log_frames, _done = raw.execute(
                            f"PRAGMA wal_checkpoint({SQLITE_CHECKPOINT})").fetchone()
                        ckpt += time.monotonic() - t1
                        frames += max(log_frames, 0)
                    if last:
                        break
                    lo = hi
                    # a fixed 1M-row chunk held the lock past other writers' 30 s busy timeout
                    # on a loaded machine (BENCHMARKS.md): size the next chunk by this one's time
                    size = max(1, min(SQLITE_CHUNK,
                                      int(size * min(4.0, SQLITE_CHUNK_SECONDS / took))))
                    time.sleep(SQLITE_PAUSE)  # writers waiting on the busy timeout get the lock
            except BaseException as exc:
                if bumped:  # chunks committed before the stop: audit what they kept
                    _audit_interrupted(store, conn, raw, list_id, actor, action, detail, added,
                                       restored, exc)
                raise
            log.debug("sqlite bulk: staged %d rows in %.1f s (CPU %.1f s), sorted in %.1f s "
                      "(CPU %.1f s), %d chunks in %.1f s (CPU %.1f s; longest %.2f s, "
                      "checkpoints %.1f s, %d WAL frames)", top, t_sort - t_stage, c_sort - c_stage,
                      t_apply - t_sort, c_apply - c_sort, chunks, time.monotonic() - t_apply,
                      time.process_time() - c_apply, longest, ckpt, frames)
            _count(res, staged, dict(added), restored)
            raw.execute("BEGIN IMMEDIATE")
            try:
                _finish(store, conn, list_id, res, actor, action, detail, now, bumped=bumped)
                raw.commit()
            except BaseException:
                raw.rollback()
                raise
        finally:
            raw.execute("DROP TABLE IF EXISTS temp.hw_raw")
            raw.execute("DROP TABLE IF EXISTS temp.hw_stage")
            raw.commit()
            raw.execute("PRAGMA cache_size = -2000")
            raw.execute("PRAGMA temp.cache_size = -2000")
            raw.execute("PRAGMA threads = 0")
    return res


def _apply_sqlite_chunk(conn: sa.Connection, raw: Any, params: dict[str, Any],
                        may_restore: bool, added: Counter, restored: list[tuple], *,
                        bump: bool) -> bool:
    """Staged rows ``lo < n <= hi``: restores, inserts and their change rows, in one write
    transaction (rows of earlier chunks are already in: the first occurrence wins). With
    ``bump``, the list's version goes up in the same transaction if the chunk changed the
    list (so an interrupted import never leaves new content under the old version).
    Returns whether it did."""
    chunk = " AND s.rowid > :lo AND s.rowid <= :hi"
    raw.execute("BEGIN IMMEDIATE")  # the write lock, for this chunk only
    try:
        before = raw.execute("SELECT coalesce(max(id), 0) FROM entries").fetchone()[0]
        back: list[tuple] = []
        if may_restore:
            back = [tuple(r) for r in conn.execute(sa.text(_RESTORE.format(chunk=chunk)),
                                                   params)]
            if back:
                conn.execute(changes.insert(), [
                    {"entry_id": i, "list_id": params["lid"], "op": "add", "at": params["now"]}
                    for i, _s in back])
                restored += back
        conn.execute(sa.text(
            f"INSERT INTO entries ({_COLS}) {_SELECT_CHUNK} ON CONFLICT DO NOTHING"), params)
        # under the write lock, new rowids are above the previous maximum
        conn.execute(sa.text(
            "INSERT INTO changes (entry_id, list_id, op, at) "
            "SELECT id, :lid, 'add', :now FROM entries WHERE id > :before"),
            dict(params, before=before))
        new = dict(conn.execute(sa.text(
            "SELECT signal_type, count(*) FROM entries WHERE id > :before "
            "GROUP BY signal_type"), {"before": before}).all())
        added.update(new)
        changed = bump and bool(new or back)
        if changed:
            bump_version(conn, params["lid"], params["now"])
        raw.commit()
    except BaseException:
        raw.rollback()
        raise
    return changed


def _audit_interrupted(store: Store, conn: sa.Connection, raw: Any, list_id: int, actor: str,
                       action: str, detail: dict | None, added: Counter,
                       restored: list[tuple], exc: BaseException) -> None:
    """The audit row of a SQLite bulk import stopped after some chunks committed. Best
    effort: the original error is what the caller sees."""
    info = {"added": sum(added.values()), "restored": len(restored), "method": "bulk",
            "interrupted": type(exc).__name__, **(detail or {})}
    try:
        raw.execute("BEGIN IMMEDIATE")
        store._audit(conn, actor, action, list_id, info)
        raw.commit()
    except Exception as err:
        with contextlib.suppress(Exception):
            raw.rollback()
        log.warning("could not audit the interrupted import into list %d: %s", list_id,
                    type(err).__name__)
