"""Store behaviour on a real SQLite file (PostgreSQL runs the same suite when available)."""

from __future__ import annotations

import os
import sqlite3
import stat

import pytest
import sqlalchemy as sa

from conftest_pg import pg_db, pg_url, store_url  # noqa: F401  (fixtures: both backends)
from hashwatch.categories import Category
from hashwatch.store import EntryIn, ListExists, ListNotFound, Store, StoreError

PDQ_A = "f" * 64
PDQ_B = "0" * 63 + "1"


@pytest.fixture
def store(store_url):  # noqa: F811 - every store test runs on SQLite and on PostgreSQL
    s = Store.open(store_url)
    yield s
    s.close()


def test_db_file_is_owner_only_and_wal(tmp_path):
    path = tmp_path / "x.db"
    with Store.open(path) as s:
        s.create_list("a")
        s.add_entries("a", [EntryIn("md5", "a" * 32)])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def test_create_list_and_duplicate_name(store):
    info = store.create_list("caid", source="partner", jurisdiction="UK", category_scheme="UK")
    assert info.version == 1 and info.category_scheme == "uk" and info.entry_count == 0
    with pytest.raises(ListExists):
        store.create_list("caid")
    with pytest.raises(StoreError):
        store.create_list("bad/name")
    with pytest.raises(ListNotFound):
        store.get_list("nope")


def test_add_dedup_and_version(store):
    store.create_list("l")
    items = [
        EntryIn("md5", "a" * 32, Category("uk", "A"), ("x",), "ref1"),
        EntryIn("pdq", PDQ_A, Category("uk", "A"), (), "ref1"),
        EntryIn("md5", "a" * 32, Category("uk", "A"), ("x",), "ref1"),  # identical
    ]
    r = store.add_entries("l", items)
    assert (r.added, r.duplicates) == (2, 1)
    v1 = store.get_list("l").version
    r2 = store.add_entries("l", items)
    assert (r2.added, r2.duplicates) == (0, 3)
    assert store.get_list("l").version == v1  # nothing changed, no new version
    # same hash, other category: a distinct entry, so a conflict stays visible
    r3 = store.add_entries("l", [EntryIn("md5", "a" * 32, Category("uk", "B"))])
    assert r3.added == 1
    cats = sorted(str(e.category) for e in store.lookup("md5", ["a" * 32]))
    assert cats == ["uk:A", "uk:B"]


def test_uncategorised_entries_dedup(store):
    store.create_list("l")
    r = store.add_entries("l", [EntryIn("sha1", "b" * 40)] * 3)
    assert (r.added, r.duplicates) == (1, 2)


def test_unknown_signal_type_rejected(store):
    store.create_list("l")
    with pytest.raises(KeyError):
        store.add_entries("l", [EntryIn("nosuchhash", "x")])
    assert store.get_list("l").entry_count == 0


def test_remove_restore_and_change_feed(store):
    store.create_list("l")
    with store.snapshot() as snap:
        pos0 = snap.position
        assert [s for b in snap.changed(pos0) for s in b] == []  # nothing after itself
    r = store.add_entries("l", [EntryIn("pdq", PDQ_A), EntryIn("pdq", PDQ_B),
                                EntryIn("md5", "a" * 32)])
    with store.snapshot() as snap:
        pos1 = snap.position
        # level-triggered: the entries' current states, PDQ only
        assert sorted(s for b in snap.changed(pos0) for s in b) == sorted(
            [(r.added_ids[0], PDQ_A), (r.added_ids[1], PDQ_B)])
    assert store.remove_entries("l", [r.added_ids[0]]) == 1
    assert store.lookup("pdq", [PDQ_A]) == []
    with store.snapshot() as snap:
        assert [s for b in snap.changed(pos1) for s in b] == [(r.added_ids[0], None)]
        # read from the older position, the entry shows its current state once per change
        assert sorted(s for b in snap.changed(pos0) for s in b) == sorted(
            [(r.added_ids[0], None), (r.added_ids[0], None), (r.added_ids[1], PDQ_B)])
        pos2 = snap.position
    r2 = store.add_entries("l", [EntryIn("pdq", PDQ_A)])
    assert r2.restored == 1 and r2.added == 0 and r2.added_ids == [r.added_ids[0]]
    assert len(store.lookup("pdq", [PDQ_A])) == 1
    with store.snapshot() as snap:
        assert [s for b in snap.changed(pos2) for s in b] == [(r.added_ids[0], PDQ_A)]
        assert store.position_usable(snap.position) and store.position_usable(pos0)
    assert not store.position_usable("sqlite:99999999" if store.dialect == "sqlite"
                                     else "pg:999999999:999999999:")
    assert not store.position_usable("nonsense")


def test_disable_and_soft_delete_hide_entries(store):
    store.create_list("l")
    store.add_entries("l", [EntryIn("md5", "c" * 32)])
    store.set_list_enabled("l", False)
    assert store.lookup("md5", ["c" * 32]) == []
    store.set_list_enabled("l", True)
    assert len(store.lookup("md5", ["c" * 32])) == 1
    store.delete_list("l")
    assert store.lookup("md5", ["c" * 32]) == []
    with pytest.raises(ListNotFound):
        store.get_list("l")
    # the name stays taken: history is kept
    with pytest.raises(ListExists):
        store.create_list("l")


def test_audit_log_is_append_only(store):
    store.create_list("l")
    store.add_entries("l", [EntryIn("md5", "d" * 32)], actor="alice")
    actions = [(a["actor"], a["action"]) for a in store.iter_audit()]
    assert ("cli", "list.create") in actions and ("alice", "entries.add") in actions
    with store.engine.begin() as conn, pytest.raises(sa.exc.DatabaseError):
        conn.execute(sa.text("UPDATE audit_log SET actor='mallory'"))
    with store.engine.begin() as conn, pytest.raises(sa.exc.DatabaseError):
        conn.execute(sa.text("DELETE FROM audit_log"))
    assert len(list(store.iter_audit())) == len(actions)


def test_streaming_add_of_many_entries(store):
    store.create_list("big")
    gen = (EntryIn("md5", f"{i:032x}") for i in range(12_345))
    r = store.add_entries("big", gen)
    assert r.added == 12_345
    assert sum(1 for _ in store.iter_entries(list_name="big", batch=1000)) == 12_345
    assert store.stats() == [{"list": "big", "signal_type": "md5", "entries": 12_345}]


def test_reopen_keeps_data_and_migrations_idempotent(tmp_path):
    path = tmp_path / "r.db"
    with Store.open(path) as s:
        s.create_list("keep")
        s.add_entries("keep", [EntryIn("md5", "e" * 32)])
    with Store.open(path) as s:
        assert s.get_list("keep").entry_count == 1


def test_not_a_database_is_a_clear_error(tmp_path):
    bad = tmp_path / "notdb.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open database"):
        Store.open(bad)
    assert bad.read_bytes() == b"this is not sqlite" * 100  # untouched
    with pytest.raises(StoreError, match="directory"):
        Store.open(tmp_path)


def test_list_counts_come_from_the_live_entries_index(store):
    """Counts skip removed entries, and the database can answer them from the partial index
    (migration 0005_live) instead of visiting every row."""
    store.create_list("l")
    store.create_list("m")
    store.add_entries("l", [EntryIn("md5", f"{i:032x}") for i in range(5)])
    store.add_entries("m", [EntryIn("md5", "f" * 32)])
    ids = [e.id for e in store.lookup("md5", [f"{i:032x}" for i in range(2)])]
    store.remove_entries("l", ids)
    assert {x.name: x.entry_count for x in store.lists()} == {"l": 3, "m": 1}
    assert store.get_list("l").entry_count == 3
    names = {ix["name"] for ix in sa.inspect(store.engine).get_indexes("entries")}
    assert "ix_entries_live" in names


def test_asking_whether_a_list_lost_an_entry_reads_an_index(store):
    """Every add asks whether the list ever had a removal; that question must be answered from
    the partial index of removals (migration 0012), not by scanning the whole change feed."""
    import sqlalchemy as sa

    sql = "SELECT seq FROM changes WHERE list_id = 1 AND op = 'remove' LIMIT 1"
    with store.engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            plan = " ".join(str(r[-1]) for r in conn.execute(sa.text("EXPLAIN QUERY PLAN " + sql)))
        else:
            conn.exec_driver_sql("SET enable_seqscan = off")  # the tables are tiny here
            plan = " ".join(r[0] for r in conn.execute(sa.text("EXPLAIN " + sql)))
    assert "ix_changes_list_remove" in plan
