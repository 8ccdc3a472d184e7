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

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

BATCH = 100_000


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

    def changed(
        self, since: str, signal_type: str = "pdq", *, batch: int = BATCH
    ) -> Iterator[list[tuple[int, str | None]]]:
        """Entries of ``signal_type`` changed after position ``since`` and visible in this
        snapshot: batches of ``(entry id, value)``, value None when the entry is removed.
        An entry changed several times may appear several times, always with the same
        (current) state. Raises FeedError for a position of another backend."""
        cond, params = self._window(since)
        sql = ("SELECT c.entry_id, CASE WHEN e.removed_at IS NULL THEN e.value END "
               "FROM changes c JOIN entries e ON e.id = c.entry_id "
               f"WHERE {cond} AND c.op IN ('add', 'remove') AND e.signal_type = :sig")
        yield from self._stream(sql, dict(params, sig=signal_type), batch)

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
        keypoint-live)``. Raises FeedError for a position of another backend."""
        cond, params = self._window(since)
        sql = (
            f"SELECT lf.id, lf.list_id, CASE WHEN {self._KP_LIVE} THEN 1 ELSE 0 END "
            "FROM local_features lf WHERE lf.id IN ("
            f" SELECT c.entry_id FROM changes c WHERE {cond} AND c.op = 'features'"
            " UNION SELECT f.id FROM changes c JOIN entries e ON e.id = c.entry_id"
            " JOIN local_features f ON f.list_id = e.list_id AND f.group_ref = e.group_ref"
            f" WHERE {cond} AND c.op IN ('add', 'remove') AND e.group_ref <> ''"
            " UNION SELECT f.id FROM changes c JOIN local_features f ON f.list_id = c.list_id"
            f" WHERE {cond} AND c.op = 'list')"
        )
        for part in self._stream(sql, params, batch):
            yield [(int(i), int(lst), bool(live)) for i, lst, live in part]

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
        batch: int = BATCH,
    ) -> Iterator[list[tuple[int, int, str]]]:
        """Live (not removed) entries of ``signal_type`` as ``(id, list id, value)``, in no
        particular order; ``lo <= id < hi`` when given. List state (enabled, deleted) is not
        applied: it is applied when matches are read back."""
        sql = ("SELECT id, list_id, value FROM entries "
               "WHERE signal_type = :sig AND removed_at IS NULL")
        params: dict[str, Any] = {"sig": signal_type}
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
