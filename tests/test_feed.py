"""The change feed never skips a committed change (issue 12).

PostgreSQL hands out ``seq`` at insert time but makes rows visible at commit time; these
tests force the interleavings that made a reader of ``seq > last_seen`` skip an entry for
good, on a real PostgreSQL server, and check the index against the store afterwards.
"""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest_pg import create_database, drop_database, pg_db, pg_url, store_url  # noqa: F401
from hashwatch.matcher import Matcher
from hashwatch.store import EntryIn, Store
from hashwatch.store.records import entry_row, utcnow
from hashwatch.store.schema import changes


def _pdq(i: int) -> str:
    return bytes(np.random.default_rng(1000 + i).integers(0, 256, 32, dtype=np.uint8)).hex()


def _held_add(s: Store, list_id: int, value: str) -> tuple[sa.Connection, sa.RootTransaction]:
    """Transaction A: inserts an entry (and its change row) and holds, uncommitted."""
    conn = s.engine.connect()
    tx = conn.begin()
    now = utcnow()
    s._write_batch(conn, list_id, [entry_row(list_id, EntryIn("pdq", value), now, "A")],
                   False, now)
    return conn, tx


def _matchable(m: Matcher, value: str) -> bool:
    return bool(m.match_pdq(value, radius=0))


def test_late_commit_is_not_skipped_on_postgresql(pg_db):  # noqa: F811
    a_val, b_val = _pdq(1), _pdq(2)
    with Store.open(pg_db) as s:
        lid = s.create_list("k").id
        m = Matcher(s)
        conn_a, tx_a = _held_add(s, lid, a_val)  # A inserts and holds
        try:
            s.add_entries("k", [EntryIn("pdq", b_val)], actor="B")  # B inserts and commits
            assert m.refresh() == 1  # the worker refreshes: B is in, A is not visible yet
            assert _matchable(m, b_val) and not _matchable(m, a_val)
            tx_a.commit()  # A commits after B was read
        finally:
            conn_a.close()
        with s.engine.connect() as conn:
            seqs = dict(conn.execute(sa.select(changes.c.entry_id, changes.c.seq)).all())
        a_id, b_id = sorted(seqs)
        # the dangerous order: A's change row has the smaller seq but committed later
        assert seqs[a_id] < seqs[b_id]
        assert m.refresh() == 1
        assert _matchable(m, a_val) and _matchable(m, b_val)
        assert m.refresh() == 0  # nothing is replayed twice


def test_late_commit_is_not_skipped_on_sqlite(tmp_path):
    # SQLite has one writer at a time: A holding its transaction blocks B, so the worker
    # refreshes while A holds, then A commits
    a_val = _pdq(3)
    with Store.open(tmp_path / "f.db") as s:
        lid = s.create_list("k").id
        m = Matcher(s, persist=False)
        conn_a, tx_a = _held_add(s, lid, a_val)
        try:
            assert m.refresh() == 0 and not _matchable(m, a_val)
            tx_a.commit()
        finally:
            conn_a.close()
        assert m.refresh() == 1 and _matchable(m, a_val)


def test_saved_position_from_another_database_is_not_replayed(tmp_path, store_url):  # noqa: F811
    # an index file saved for one database and opened against another is rebuilt
    idx = tmp_path / "x.pdq.idx"
    with Store.open(store_url) as s:
        s.create_list("k")
        s.add_entries("k", [EntryIn("pdq", _pdq(i)) for i in range(5)])
        Matcher(s, index_path=idx).save()
    with Store.open(tmp_path / "other.db") as other:
        other.create_list("k")
        other.add_entries("k", [EntryIn("pdq", _pdq(9))])
        m = Matcher(other, index_path=idx)
        assert len(m.index) == 1 and _matchable(m, _pdq(9))


# -- any interleaving of writers and refreshes -----------------------------------------
# ops: ("begin",), ("add", t), ("remove", t), ("commit", t), ("abort", t), ("refresh",)
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("begin")),
        st.tuples(st.sampled_from(["add", "remove", "commit", "abort"]), st.integers(0, 3)),
        st.tuples(st.just("refresh")),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(ops=_ops)
def test_any_interleaving_leaves_index_equal_to_store(pg_url, ops):  # noqa: F811
    _run_interleaving(_shared_db(pg_url), ops)


_db: dict[str, str] = {}
_lists = iter(range(10**6))


def _shared_db(admin: str) -> str:
    # one database for every example (migrations take most of a new database's cost)
    if "url" not in _db:
        _db["url"] = create_database(admin)
        Store.open(_db["url"]).close()  # migrated once
    return _db["url"]


def teardown_module() -> None:
    from conftest_pg import server_url

    if "url" in _db:
        drop_database(server_url(), _db.pop("url"))


def _live(s: Store, list_id: int | None = None) -> dict[int, str]:
    with s.snapshot() as snap:
        return {i: v for b in snap.live("pdq") for i, lst, v in b
                if list_id is None or lst == list_id}


def _index_state(m: Matcher) -> dict[int, str]:
    return {int(i): m.index.get(int(i)).hex() for i in m.index.ids()}


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(ops=_ops)
def test_any_interleaving_read_in_pages_leaves_index_equal_to_store(pg_url, ops):  # noqa: F811
    # the service's bounded refreshes: pages of 2 change rows, backlogs read in later
    # snapshots, while writers keep committing
    import hashwatch.matcher as matcher_mod

    page = matcher_mod.FEED_PAGE
    matcher_mod.FEED_PAGE = 2
    try:
        _run_interleaving(_shared_db(pg_url), ops, complete=False)
    finally:
        matcher_mod.FEED_PAGE = page


def _run_interleaving(url: str, ops: list[tuple], complete: bool = True) -> None:
    with Store.open(url, migrate=False) as s:
        name = f"k{next(_lists)}"
        lid = s.create_list(name).id
        s.add_entries(name, [EntryIn("pdq", _pdq(i)) for i in range(4)])
        m = Matcher(s)
        open_tx: list[tuple[sa.Connection, sa.RootTransaction, set[int]]] = []
        touched: set[int] = set()  # entries an open transaction has locked
        n = 100 * lid  # values unique across examples
        try:
            for op in ops:
                if op[0] == "begin":
                    if len(open_tx) < 4:
                        conn = s.engine.connect()
                        open_tx.append((conn, conn.begin(), set()))
                elif op[0] == "refresh":
                    m.refresh(complete=complete)
                    if not m.feed_backlog:
                        # nobody commits between the refresh and this read: they must agree
                        assert _index_state(m) == _live(s)
                elif open_tx:
                    conn, tx, mine = open_tx[op[1] % len(open_tx)]
                    now = utcnow()
                    if op[0] == "add":
                        n += 1
                        s._write_batch(conn, lid, [entry_row(lid, EntryIn("pdq", _pdq(n)),
                                                             now, "t")], False, now)
                    elif op[0] == "remove":
                        free = sorted(set(_live(s, lid)) - touched)
                        if free:
                            touched.add(free[0])
                            mine.add(free[0])
                            s._remove_in(conn, lid, [free[0]], now)
                    else:
                        (tx.commit if op[0] == "commit" else tx.rollback)()
                        conn.close()
                        touched -= mine
                        open_tx.remove((conn, tx, mine))
        finally:
            for conn, tx, _ in open_tx:
                tx.commit()
                conn.close()
        m.refresh()
        assert _index_state(m) == _live(s)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_refresh_reads_one_snapshot(tmp_path, backend):
    # a batch bigger than one page of the feed read is applied whole, once
    with Store.open(tmp_path / "b.db") as s:
        s.create_list("k")
        m = Matcher(s, persist=False)
        vals = [_pdq(i) for i in range(300)]
        s.add_entries("k", [EntryIn("pdq", v) for v in vals])
        with s.snapshot() as snap:
            batches = list(snap.changed(m.position, batch=128))
        assert [len(b) for b in batches] == [128, 128, 44]
        assert m.refresh() == 300 and len(m.index) == 300


def test_allow_list_cache_sees_late_commits_on_postgresql(pg_db):  # noqa: F811
    """The service's allow-list cache refreshes on a marker of the active set: an approval
    that commits late together with a removal must not leave the marker unchanged (a max
    id / max time marker did: the removal stayed silenced in that worker)."""
    from hashwatch.service.review import AllowList
    from hashwatch.service.schema import allow_list

    def row(eid: int, status: str, at: str | None) -> dict:
        return {"signal_type": "sha256", "value": f"{eid:064x}", "entry_id": eid,
                "status": status, "approved_at": at, "created_at": utcnow(),
                "created_by": "t"}

    def set_status(conn: sa.Connection, eid: int, status: str) -> None:
        conn.execute(allow_list.update().where(allow_list.c.entry_id == eid).values(
            status=status, approved_at=utcnow() if status == "active" else None))

    def cached(al: AllowList) -> set[int]:
        return {e for e in (1, 2, 3) if al._covers(e, f"{e:064x}", None)}

    with Store.open(pg_db) as s:
        with s.engine.begin() as conn:  # Z active (approved first); X, Y pending
            conn.execute(allow_list.insert(), [row(1, "active", utcnow()),
                                               row(2, "pending", None),
                                               row(3, "pending", None)])
        al = AllowList(s)
        al.refresh()
        assert cached(al) == {1}
        conn_x = s.engine.connect()
        tx_x = conn_x.begin()
        try:
            set_status(conn_x, 2, "active")  # X approved, not yet committed
            with s.engine.begin() as conn:
                set_status(conn, 3, "active")  # Y approved later, committed first
            al.refresh()
            assert cached(al) == {1, 3}
            tx_x.commit()
        finally:
            conn_x.close()
        with s.engine.begin() as conn:
            set_status(conn, 1, "removed")  # and Z removed
        al.refresh()
        assert cached(al) == {2, 3}


def test_lists_changed_sees_a_late_commit_on_postgresql(pg_db):  # noqa: F811
    """A scan's "lists changed since it started" test: the newest change number stays put
    when a change with a smaller number commits late; the feed position does not miss it."""
    with Store.open(pg_db) as s:
        lid = s.create_list("k").id
        conn_a, tx_a = _held_add(s, lid, _pdq(40))
        try:
            s.add_entries("k", [EntryIn("pdq", _pdq(41))], actor="B")
            with s.snapshot() as snap:
                position = snap.position
            seq = s.last_change()
            with s.snapshot() as snap:
                assert not snap.any_changed(position)
            tx_a.commit()
        finally:
            conn_a.close()
        assert s.last_change() == seq  # the old marker: "unchanged"
        with s.snapshot() as snap:
            assert snap.any_changed(position)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_big_window_is_read_in_pages_and_small_changes_are_not_held_back(
        backend, tmp_path, request, monkeypatch):
    """A bulk import's window is absorbed a page per bounded refresh; an entry committed
    meanwhile is matchable after the next refresh, not after the whole window; a save taken
    half-way replays from the window's start; the result equals the store."""
    import hashwatch.matcher as matcher_mod

    monkeypatch.setattr(matcher_mod, "FEED_PAGE", 10)
    url = request.getfixturevalue("pg_db") if backend == "postgresql" else tmp_path / "p.db"
    with Store.open(url) as s:
        s.create_list("k")
        m = Matcher(s, index_path=tmp_path / "p.idx")
        s.add_entries("k", [EntryIn("pdq", _pdq(i)) for i in range(100, 145)])  # 45 changes
        # the window's first page, then one more page of it, as a backlog
        assert m.refresh(complete=False) == 20 and m.feed_backlog == 1
        s.add_entries("k", [EntryIn("pdq", _pdq(7))])  # committed during the absorb
        assert m.refresh(complete=False) == 11  # its window (1) + one page of the backlog
        assert _matchable(m, _pdq(7)) and len(m.index) == 31
        m.save()
        half = Matcher(s, index_path=tmp_path / "p.idx")  # replays from the window's start
        assert _index_state(half) == _live(s)
        rounds = 0
        while m.feed_backlog:
            m.refresh(complete=False)
            rounds += 1
        assert rounds == 2 and _index_state(m) == _live(s) and len(m.index) == 46
        assert m.refresh(complete=False) == 0


def test_feed_page_plan_probes_by_index_while_statistics_are_stale(pg_db):  # noqa: F811
    """Right after a bulk import, before autovacuum has analysed the tables, a routine
    refresh (one new change) must still read ``changes`` by its index range and ``entries``
    by primary key: the plain join was planned as a hash join over all of ``entries`` then
    (~190 ms per refresh at 200,000 entries, BENCHMARKS.md freshness). Autovacuum is turned
    off on both tables so the statistics stay as stale as they are after the import."""
    from sqlalchemy import event

    from hashwatch.store.bulk import bulk_add

    with Store.open(pg_db) as s:
        with s.engine.begin() as conn:
            for t in ("entries", "changes"):
                conn.exec_driver_sql(f"ALTER TABLE {t} SET (autovacuum_enabled = false)")
        s.create_list("big")
        s.create_list("k")
        bulk_add(s, "big", (EntryIn("pdq", _pdq(10_000 + i)) for i in range(30_000)))
        m = Matcher(s, persist=False)
        s.add_entries("k", [EntryIn("pdq", _pdq(1))])
        seen: list[tuple[str, object]] = []

        def capture(conn, cursor, statement, parameters, context, executemany):
            if "WITH p AS" in statement:
                seen.append((statement, parameters))

        event.listen(s.engine, "before_cursor_execute", capture)
        try:
            assert m.refresh(complete=False) == 1  # as a service worker refreshes
        finally:
            event.remove(s.engine, "before_cursor_execute", capture)
        assert _matchable(m, _pdq(1))
        (statement, parameters), = seen  # one page of the feed
        with s.snapshot() as snap:  # the same snapshot kind and statement, explained
            cur = snap.conn.connection.driver_connection.cursor()
            plan = "\n".join(r[0] for r in cur.execute("EXPLAIN " + statement, parameters))
        assert "Seq Scan on entries" not in plan, plan
        assert "Seq Scan on changes" not in plan, plan
