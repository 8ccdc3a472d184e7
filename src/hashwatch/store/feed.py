"""The change feed: which entries changed since a feed position, read at one snapshot.

Every write that adds, removes or restores an entry also inserts a row into ``changes`` in
the same transaction (``Store.add_entries``, ``remove_entries``, the bulk import). A reader
(an index, a service worker) keeps a *feed position* and asks for the entries changed since
it; the answer and the new position come from one consistent read snapshot.

Positions are opaque strings, ``"sqlite:<seq>"`` or ``"pg:<xmin>:<xmax>:<xip,...>"``.

The feed is *level-triggered*: a change row only says "entry E changed"; the entry's state
(live value, or removed) is read from ``entries`` in the same snapshot as the change rows.
Applying a state twice is harmless, and the order of change rows does not matter.

Why no committed change is ever skipped
---------------------------------------
PostgreSQL (the multi-writer case). ``seq`` comes from a sequence, handed out when a row is
inserted but visible only when its transaction commits, so ``seq > last_seen`` skips a
change whose transaction commits after a later-numbered one was read (issue 12). Instead
each change row records ``txid``, the top-level transaction id of its writer (an ``xid8``,
never wrapping). A read runs in a REPEATABLE READ transaction whose first statement takes
its snapshot ``S = pg_current_snapshot()``; the new position is ``S``. It returns the rows
visible in ``S`` whose ``txid`` is not visible in the previous position ``P``.

* A row is visible in ``S`` exactly when its writer committed and ``S`` sees that commit
  (``pg_visible_in_snapshot(txid, S)``); rows of aborted writers are never visible.
* Visibility is monotone: ``S`` is taken after ``P`` (the reader keeps positions in the
  order it took them), and a transaction committed and visible in ``P`` is visible in every
  later snapshot. So every committed change is visible in some read's snapshot, and it is
  returned by the *first* read whose snapshot sees it, the only one for which it is visible
  in ``S`` but not in ``P``. By induction over reads, an index that applied every read holds,
  for each entry, its state as of the last position: nothing skipped, nothing left stale.
* ``txid >= pg_snapshot_xmin(P)`` is an exact pre-filter (every transaction below ``xmin``
  was finished, so visible in ``P`` or aborted) that lets the read use an index on ``txid``.
  A long transaction holds ``xmin`` back and makes reads re-scan the (few) rows committed
  since it began, never miss them.

SQLite (one writer at a time). A write transaction holds the database's write lock from
its first insert until commit, so ``seq`` values are handed out in commit order and no
transaction can commit a smaller ``seq`` after a larger one is visible: ``seq > P`` read in
a snapshot (``BEGIN``: WAL readers see one consistent state) returns exactly the changes
committed between the two positions, and the new position is the largest ``seq`` visible.

Both: entry states are read in the same snapshot as the change rows, so an entry changed
again after ``S`` is reported (with its newer state) by a later read.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from hashwatch.store.schema import of_signal_type_sql

BATCH = 100_000
# change rows in the first page of a window (later pages: the caller's limit). A routine
# refresh finds a handful of changes; a LIMIT far below any row estimate keeps PostgreSQL on
# the ordered index range even when the table's statistics are stale (see Snapshot._page)
FIRST_PAGE = 256


def page_limit(after: tuple[int, int] | None, limit: int) -> int:
    """The LIMIT of a window's page: :data:`FIRST_PAGE` at most for its first page (``after``
    None), ``limit`` for the following ones. A page with fewer rows ends the window."""
    return min(limit, FIRST_PAGE) if after is None else limit


class FeedError(Exception):
    """A feed position that does not belong to this database or backend."""


def _pg_parts(position: str) -> str:
    if not position.startswith("pg:"):
        raise FeedError(f"not a PostgreSQL feed position: {position[:40]!r}")
    return position[3:]


def _sqlite_seq(position: str) -> int:
    if not position.startswith("sqlite:"):
        raise FeedError(f"not a SQLite feed position: {position[:40]!r}")
    try:
        return int(position[7:])
    except ValueError:
        raise FeedError(f"bad SQLite feed position {position[:40]!r}") from None


class Snapshot:
    """A consistent read view of the store (one read-only transaction).

    ``position``: the feed position of this view. Methods stream rows in batches (lists of
    tuples) so that millions of rows never sit in memory at once.
    """

    def __init__(self, conn: sa.Connection, dialect: str, position: str) -> None:
        self.conn = conn
        self.dialect = dialect
        self.position = position

    def _stream(self, sql: str, params: dict[str, Any], batch: int) -> Iterator[list[tuple]]:
        res = self.conn.execution_options(yield_per=batch).execute(sa.text(sql), params)
        for part in res.partitions(batch):
            yield [tuple(r) for r in part]

    def _window(self, since: str) -> tuple[str, dict[str, Any]]:
        """SQL condition on change rows ``c`` committed after position ``since`` (and, read
        in this snapshot, visible in it): the proof in the module docstring."""
        if self.dialect == "postgresql":
            return ("c.txid >= pg_snapshot_xmin(CAST(:since AS pg_snapshot)) "
                    "AND NOT pg_visible_in_snapshot(c.txid, CAST(:since AS pg_snapshot))",
                    {"since": _pg_parts(since)})
        return "c.seq > :since", {"since": _sqlite_seq(since)}

    def _page(self, since: str, *, until: str | None, after: tuple[int, int] | None,
              limit: int) -> list[tuple]:
        """One page of the change rows in the window after ``since`` (and up to ``until``,
        a later position; None: this snapshot), past the cursor ``after``, in change order
        ((txid, seq) on PostgreSQL, seq on SQLite): ``(txid, seq, entry id, list id, op,
        value or None when removed, signal type, group_ref, variant)``; the entry's columns
        are None for "features" and "list" rows.

        The page is cut from ``changes`` alone (an index range in change order, then
        LIMIT) and only then joined to ``entries`` by primary key, on PostgreSQL through a
        LATERAL subquery that the planner cannot flatten (``OFFSET 0``), so each change row
        is one primary-key probe whatever the statistics say. Statistics are stale right
        after a bulk import (a table never analysed looks like a third of its rows match any
        range), and the plain join was then a hash join over all of ``entries``: ~190 ms per
        refresh at 200,000 entries until autovacuum analysed the tables, tens of seconds
        after the import (BENCHMARKS.md, freshness). The first page's small LIMIT
        (:func:`page_limit`) keeps the ``changes`` range on its index in the same case."""
        cond, params = self._window(since)
        if self.dialect == "postgresql":
            order, materialized, cursor_cols = "txid, seq", "MATERIALIZED ", "txid, seq"
            if until is not None:
                cond += " AND pg_visible_in_snapshot(c.txid, CAST(:until AS pg_snapshot))"
                params["until"] = _pg_parts(until)
            if after is not None:
                cond += " AND (c.txid, c.seq) > (CAST(CAST(:at AS text) AS xid8), :aseq)"
                params.update(at=str(after[0]), aseq=after[1])
            out_cursor = "CAST(p.txid AS text), p.seq"
        else:
            order, materialized, cursor_cols = "seq", "", "0 AS txid, seq"
            if until is not None:
                cond += " AND c.seq <= :until"
                params["until"] = _sqlite_seq(until)
            if after is not None:
                cond += " AND c.seq > :aseq"
                params["aseq"] = after[1]
            out_cursor = "p.txid, p.seq"
        on = "e.id = p.entry_id AND p.op IN ('add', 'remove')"
        if self.dialect == "postgresql":
            source = ("p LEFT JOIN LATERAL (SELECT e.removed_at, e.value, e.signal_type, "
                      f"e.group_ref, e.variant FROM entries e WHERE {on} OFFSET 0) e ON true")
        else:  # SQLite probes the primary key row by row anyway (and has no LATERAL)
            source = f"p LEFT JOIN entries e ON {on}"
        sql = (
            f"WITH p AS {materialized}(SELECT {cursor_cols}, c.entry_id, c.list_id, c.op "
            f"FROM changes c WHERE {cond} ORDER BY {order} LIMIT :lim) "
            f"SELECT {out_cursor}, p.entry_id, p.list_id, p.op, "
            "CASE WHEN e.removed_at IS NULL THEN e.value END, e.signal_type, e.group_ref, "
            "e.variant "
            f"FROM {source} "
            f"ORDER BY {order.replace('txid', 'p.txid').replace('seq', 'p.seq')}"
        )
        return [tuple(r) for r in self.conn.execute(sa.text(sql), dict(params, lim=limit))]

    def changed_page(
        self, since: str, signal_type: str = "pdq", *, until: str | None = None,
        after: tuple[int, int] | None = None, limit: int = BATCH,
        variants: Collection[str] | None = None,
    ) -> tuple[list[tuple[int, str | None]], tuple[int, int] | None, int]:
        """One bounded page of :meth:`changed`: the states of entries of ``signal_type``
        among the next ``limit`` change rows of the window (see :meth:`_page`). Returns
        (states, cursor of the last change row read or None, change rows read: fewer than
        ``limit`` means the window is done). A window read page by page, each page in any
        snapshot taken after ``until``, yields each of its changes exactly once: its rows
        are fixed by the two positions and the cursor walks them in a total order. States
        are read in the page's snapshot, never older than the window's (level-triggered).
        ``variants``: only entries of these views (stored variant names, ``""`` the full
        image; None: all), for an index that holds some views only."""
        rows = self._page(since, until=until, after=after, limit=limit)
        if not rows:
            return [], None, 0
        states = [(int(r[2]), r[5]) for r in rows
                  if r[4] in ("add", "remove") and r[6] == signal_type
                  and (variants is None or r[8] in variants)]
        return states, (int(rows[-1][0]), int(rows[-1][1])), len(rows)

    def changed(
        self, since: str, signal_type: str = "pdq", *, batch: int = BATCH
    ) -> Iterator[list[tuple[int, str | None]]]:
        """Entries of ``signal_type`` changed after position ``since`` and visible in this
        snapshot: batches of ``(entry id, value)``, value None when the entry is removed
        (read ``batch`` change rows at a time). An entry changed several times may appear
        several times, always with the same (current) state. Raises FeedError for a
        position of another backend."""
        after = None
        while True:
            lim = page_limit(after, batch)
            states, after, n = self.changed_page(since, signal_type, after=after, limit=lim)
            if states:
                yield states
            if n < lim:
                return

    def any_changed(self, since: str) -> bool:
        """Whether any change (entries, keypoint sets, list deletions) committed after
        position ``since`` is visible in this snapshot: an exact "lists changed" test
        (comparing newest change numbers is not, on PostgreSQL)."""
        cond, params = self._window(since)
        sql = f"SELECT 1 FROM changes c WHERE {cond} LIMIT 1"
        return self.conn.execute(sa.text(sql), params).first() is not None

    # -- the keypoint tier ------------------------------------------------------------
    # A known image's keypoint set (a ``local_features`` row) belongs in a keypoint index
    # exactly when it is *keypoint-live*: its list is not deleted and its group (list,
    # group_ref) has at least one live entry, of any signal type. That state changes only
    # through change rows: "features" (the row is new), "add"/"remove" (an entry of its
    # group), "list" (its list was deleted); so the feed tells exactly which rows to re-read.
    _KP_LIVE = ("EXISTS (SELECT 1 FROM entries g WHERE g.list_id = lf.list_id "
                "AND g.group_ref = lf.group_ref AND g.removed_at IS NULL) "
                "AND EXISTS (SELECT 1 FROM hash_lists h WHERE h.id = lf.list_id "
                "AND h.deleted_at IS NULL)")

    def keypoint_changes(self, since: str, *, batch: int = BATCH
                         ) -> Iterator[list[tuple[int, int, bool]]]:
        """Keypoint sets whose keypoint-live state may have changed after position ``since``
        (see above), visible in this snapshot: batches of ``(local-feature row id, list id,
        keypoint-live)``, read ``batch`` change rows at a time. Raises FeedError for a
        position of another backend."""
        after = None
        while True:
            lim = page_limit(after, batch)
            rows = self._page(since, until=None, after=after, limit=lim)
            ids: set[int] = set()
            groups: set[tuple[int, str]] = set()
            lists: set[int] = set()
            for _t, _s, entry_id, list_id, op, _v, _sig, group, _variant in rows:
                if op == "features":
                    ids.add(int(entry_id))
                elif op == "list":
                    lists.add(int(list_id))
                elif group:  # an entry of a known image's group
                    groups.add((int(list_id), group))
            ids |= self._feature_ids(groups, lists)
            if ids:
                states = self.keypoint_states(sorted(ids))
                yield [(i, lst, live) for i, (lst, live) in states.items()]
            if len(rows) < lim:
                return
            after = (int(rows[-1][0]), int(rows[-1][1]))

    def _feature_ids(self, groups: set[tuple[int, str]], lists: set[int]) -> set[int]:
        """local-feature row ids of these groups (list id, group_ref) and of these lists."""
        out: set[int] = set()
        by_list: dict[int, list[str]] = {}
        for lst, g in groups:
            by_list.setdefault(lst, []).append(g)
        q = sa.text("SELECT id FROM local_features WHERE list_id = :l AND group_ref IN :g"
                    ).bindparams(sa.bindparam("g", expanding=True))
        for lst, gs in by_list.items():
            for start in range(0, len(gs), 500):
                out.update(int(i) for (i,) in self.conn.execute(
                    q, {"l": lst, "g": gs[start : start + 500]}))
        for lst in lists:
            out.update(int(i) for (i,) in self.conn.execute(
                sa.text("SELECT id FROM local_features WHERE list_id = :l"), {"l": lst}))
        return out

    def keypoint_live(self, *, data: bool = True, batch: int = 5_000
                      ) -> Iterator[list[tuple[int, int, bytes | None]]]:
        """Every keypoint-live set in this snapshot, in no particular order: batches of
        ``(row id, list id, data)`` (data None when ``data=False``)."""
        col = "lf.data" if data else "NULL"
        sql = f"SELECT lf.id, lf.list_id, {col} FROM local_features lf WHERE {self._KP_LIVE}"
        for part in self._stream(sql, {}, batch):
            yield [(int(i), int(lst), bytes(d) if d is not None else None)
                   for i, lst, d in part]

    def keypoint_data(self, ids: list[int]) -> dict[int, bytes]:
        """local-feature row id -> data, for the rows that exist."""
        out: dict[int, bytes] = {}
        for start in range(0, len(ids), 500):
            q = sa.text("SELECT id, data FROM local_features WHERE id IN :ids").bindparams(
                sa.bindparam("ids", expanding=True))
            out.update((int(i), bytes(d)) for i, d in
                       self.conn.execute(q, {"ids": ids[start : start + 500]}))
        return out

    def keypoint_states(self, ids: list[int]) -> dict[int, tuple[int, bool]]:
        """local-feature row id -> (list id, keypoint-live), for the rows that exist."""
        out: dict[int, tuple[int, bool]] = {}
        for start in range(0, len(ids), 500):
            q = sa.text(f"SELECT lf.id, lf.list_id, CASE WHEN {self._KP_LIVE} THEN 1 ELSE 0 "
                        "END FROM local_features lf WHERE lf.id IN :ids").bindparams(
                sa.bindparam("ids", expanding=True))
            out.update((int(i), (int(lst), bool(live))) for i, lst, live in
                       self.conn.execute(q, {"ids": ids[start : start + 500]}))
        return out

    def live(
        self, signal_type: str = "pdq", *, lo: int | None = None, hi: int | None = None,
        batch: int = BATCH, variants: Collection[str] | None = None,
    ) -> Iterator[list[tuple[int, int, str]]]:
        """Live (not removed) entries of ``signal_type`` as ``(id, list id, value)``, in no
        particular order; ``lo <= id < hi`` when given; ``variants``: only these views (see
        :meth:`changed_page`). List state (enabled, deleted) is not applied: it is applied
        when matches are read back."""
        sql = ("SELECT id, list_id, value FROM entries "
               f"WHERE {of_signal_type_sql(signal_type)} AND removed_at IS NULL")
        params: dict[str, Any] = {"sig": signal_type}
        if variants is not None:
            # literal names (a few fixed view names): a bound list would need an expanding
            # parameter in the streamed text statement
            names = sorted(set(variants))
            if not names:
                return
            if any(not re.fullmatch(r"[a-z0-9_:.-]*", v) for v in names):
                raise ValueError(f"not a view name: {names}")
            sql += " AND variant IN (" + ", ".join(f"'{v}'" for v in names) + ")"
        if lo is not None:
            sql += " AND id >= :lo"
            params["lo"] = lo
        if hi is not None:
            sql += " AND id < :hi"
            params["hi"] = hi
        yield from self._stream(sql, params, batch)

    def list_of(self, ids: list[int]) -> dict[int, int]:
        """entry id -> list id, for entries that exist (removed or not)."""
        out: dict[int, int] = {}
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            q = sa.text("SELECT id, list_id FROM entries WHERE id IN :ids").bindparams(
                sa.bindparam("ids", expanding=True))
            out.update((int(i), int(lst)) for i, lst in self.conn.execute(q, {"ids": part}))
        return out

    def list_names(self) -> dict[int, str]:
        """list id -> name, deleted lists included."""
        return {int(i): n for i, n in self.conn.execute(sa.text("SELECT id, name FROM hash_lists"))}


def feed_id(conn: sa.Connection) -> str:
    """The random token naming this database's feed (created by migration 0009_feed)."""
    row = conn.execute(sa.text("SELECT feed_id FROM feed_meta WHERE id = 1")).first()
    if row is None:  # a database migrated by hand without the row
        token = secrets.token_hex(16)
        conn.execute(sa.text("INSERT INTO feed_meta (id, feed_id) VALUES (1, :t)"), {"t": token})
        return token
    return str(row[0])


@contextmanager
def open_snapshot(engine: sa.Engine) -> Iterator[Snapshot]:
    """A read-only snapshot of the store and its feed position (see the module docstring)."""
    dialect = engine.dialect.name
    if dialect == "postgresql":
        opts = {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
        with engine.connect().execution_options(**opts) as conn, conn.begin():
            # the first statement of a REPEATABLE READ transaction fixes its snapshot
            pos = conn.exec_driver_sql("SELECT pg_current_snapshot()::text").scalar_one()
            yield Snapshot(conn, dialect, "pg:" + pos)
        return
    with engine.connect() as conn:
        # pysqlite begins no transaction for reads: without BEGIN every statement would
        # read its own, possibly newer, state
        conn.exec_driver_sql("BEGIN")
        try:
            head = conn.exec_driver_sql("SELECT coalesce(max(seq), 0) FROM changes").scalar_one()
            yield Snapshot(conn, dialect, f"sqlite:{int(head)}")
        finally:
            conn.rollback()


def position_usable(conn: sa.Connection, position: str) -> bool:
    """Whether ``position`` can have been taken on this database (not from its future, nor
    from another backend). A position from another database is caught by ``feed_id``."""
    try:
        if conn.dialect.name == "postgresql":
            xmax = int(_pg_parts(position).split(":")[1])
            now = conn.exec_driver_sql(
                "SELECT pg_snapshot_xmax(pg_current_snapshot())::text").scalar_one()
            return xmax <= int(now)
        head = conn.exec_driver_sql("SELECT coalesce(max(seq), 0) FROM changes").scalar_one()
        return _sqlite_seq(position) <= int(head)
    except (FeedError, ValueError, IndexError):
        return False
