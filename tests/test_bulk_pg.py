"""PostgreSQL bulk import's server side: ``entries.list_id`` integrity without a row-level
foreign key (migration 0013) and the de-duplicated plain INSERT racing another writer."""

from __future__ import annotations

import io
import re
import threading
import time

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from conftest_pg import pg_db, pg_url  # noqa: F401
from hashwatch.lists import import_stream
from hashwatch.store import EntryIn, Store
from hashwatch.store.schema import entries, hash_lists

_ROW = {"signal_type": "md5", "category_scheme": "", "category_code": "", "labels": "",
        "source_ref": "", "group_ref": "", "variant": "", "added_at": "t", "added_by": "t"}


def _raw(url: str) -> psycopg.Connection:
    return psycopg.connect(url.replace("postgresql+psycopg", "postgresql"))


def _insert(conn: psycopg.Connection, list_ids: list[int], prefix: str = "a") -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO entries (list_id, signal_type, value, added_at) "
            "VALUES (%s, 'md5', %s, 't')",
            [(lid, f"{prefix}{i:031x}") for i, lid in enumerate(list_ids)])


def test_entries_refer_to_existing_lists_on_postgresql(pg_db):  # noqa: F811
    with Store.open(pg_db) as s:
        s.create_list("a")
        s.create_list("empty")
        s.add_entries("a", [EntryIn("md5", "0" * 32)])
        lid, empty = s.get_list("a").id, s.get_list("empty").id
        fks = s.engine.connect().exec_driver_sql(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'entries'::regclass "
            "AND contype = 'f'").scalar_one()
    assert fks == 0  # the row-level foreign key is gone: the triggers below hold instead
    with _raw(pg_db) as conn:
        # one bogus list id among good ones: the whole statement is refused
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("INSERT INTO entries (list_id, signal_type, value, added_at) "
                         "SELECT l, 'md5', md5(l::text), 't' FROM unnest(%s::int[]) l",
                         ([lid, lid + 1000],))
        conn.rollback()
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            _insert(conn, [999_999])
        conn.rollback()
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("UPDATE entries SET list_id = 999999")
        conn.rollback()
        # a referenced list cannot be deleted, nor its id changed
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("DELETE FROM hash_lists WHERE id = %s", (lid,))
        conn.rollback()
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("UPDATE hash_lists SET id = 999999 WHERE id = %s", (lid,))
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM entries").fetchone()[0] == 1
        # an entry may move to another existing list; a list without entries may go
        conn.execute("UPDATE entries SET list_id = %s", (empty,))
        conn.execute("DELETE FROM hash_lists WHERE id = %s", (lid,))
        conn.rollback()


def test_list_delete_waits_for_an_uncommitted_insert_on_postgresql(pg_db):  # noqa: F811
    """The statement-level check locks the lists it refers to (FOR KEY SHARE, as the
    foreign key did): a delete of that list waits for the inserting transaction and then
    sees its entries; an insert into a list being deleted waits and is then refused."""
    with Store.open(pg_db) as s:
        s.create_list("a")
        s.create_list("b")
        a, b = s.get_list("a").id, s.get_list("b").id
    with _raw(pg_db) as ins, _raw(pg_db) as dele:
        _insert(ins, [a])  # uncommitted
        dele.execute("SET lock_timeout = '300ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            dele.execute("DELETE FROM hash_lists WHERE id = %s", (a,))
        dele.rollback()
        ins.commit()
        dele.execute("SET lock_timeout = '300ms'")
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            dele.execute("DELETE FROM hash_lists WHERE id = %s", (a,))
        dele.rollback()
        # the other order: the delete holds the list, the insert waits, then is refused
        dele.execute("DELETE FROM hash_lists WHERE id = %s", (b,))
        ins.execute("SET lock_timeout = '300ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            _insert(ins, [b], "b")
        ins.rollback()
        done: list[BaseException] = []

        def late_insert() -> None:
            try:
                with _raw(pg_db) as c2:
                    _insert(c2, [b], "c")
                    c2.commit()
            except BaseException as exc:  # noqa: BLE001 - asserted below
                done.append(exc)

        t = threading.Thread(target=late_insert)
        t.start()
        _wait_for_lock_waiter(pg_db)
        dele.commit()
        t.join(30)
        assert len(done) == 1 and isinstance(done[0], psycopg.errors.ForeignKeyViolation)
        assert ins.execute("SELECT count(*) FROM entries WHERE list_id = %s",
                           (b,)).fetchone()[0] == 0


def _wait_for_lock_waiter(url: str, timeout: float = 30.0) -> None:
    """Until some backend of this database waits on a lock."""
    end = time.monotonic() + timeout
    with _raw(url) as c:
        c.autocommit = True
        while time.monotonic() < end:
            if c.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                         "current_database() AND wait_event_type = 'Lock'").fetchone()[0]:
                return
            time.sleep(0.02)
    raise AssertionError("no backend waited on a lock")


def test_entries_list_guard_migration_downgrades_on_postgresql(pg_db):  # noqa: F811
    with Store.open(pg_db) as s:
        cfg = Config()
        cfg.set_main_option("script_location", "hashwatch.store:migrations")

        def fk_count() -> int:
            with s.engine.connect() as conn:
                return conn.exec_driver_sql(
                    "SELECT count(*) FROM pg_constraint WHERE conrelid = 'entries'::regclass "
                    "AND confrelid = 'hash_lists'::regclass AND contype = 'f'").scalar_one()

        def triggers() -> int:
            with s.engine.connect() as conn:
                return conn.exec_driver_sql(
                    "SELECT count(*) FROM pg_trigger WHERE tgname IN ('entries_list_check', "
                    "'entries_list_change', 'hash_lists_referenced')").scalar_one()

        assert (fk_count(), triggers()) == (0, 3)
        with s.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "entries_list_guard@-1")
        assert (fk_count(), triggers()) == (1, 0)
        s.create_list("a")
        with pytest.raises(sa.exc.IntegrityError), s.engine.begin() as conn:
            conn.execute(entries.insert().values(list_id=999_999, value="0" * 32, **_ROW))
        s.migrate()
        assert (fk_count(), triggers()) == (0, 3)


def test_bulk_import_survives_a_concurrent_identical_write_on_postgresql(pg_db, monkeypatch):  # noqa: F811
    """Another writer commits an entry of the file after the import's chunk statement took
    its snapshot: the plain INSERT meets it in the unique index, the chunk is applied again
    with ON CONFLICT DO NOTHING, and the import completes with that entry once."""
    from hashwatch.store import bulk

    monkeypatch.setattr(bulk, "_BATCH", 10)
    monkeypatch.setattr(bulk, "PG_CHUNK_FIRST", 50)
    values = [f"{i:032x}" for i in range(200)]
    text = "\n".join(values) + "\n"
    taken = values[170]  # in the import's third chunk (rows 151-200, after 50 and 100)
    with Store.open(pg_db) as s:
        s.create_list("k")
        lid = s.get_list("k").id
        other = s.engine.connect()
        tx = other.begin()
        errors: list[BaseException] = []

        def hold_then_commit() -> None:
            try:
                _wait_for_lock_waiter(pg_db)  # the import's INSERT waits on our row
                tx.commit()
            except BaseException as exc:  # noqa: BLE001 - asserted below
                errors.append(exc)

        chunks: list[int] = []
        real = bulk._apply_pg_chunk

        def apply(conn, params, *a):
            chunks.append(1)
            if len(chunks) == 3:  # just before the chunk that holds ``taken``
                other.execute(entries.insert().values(list_id=lid, value=taken, **_ROW))
                threading.Thread(target=hold_then_commit, daemon=True).start()
            return real(conn, params, *a)

        monkeypatch.setattr(bulk, "_apply_pg_chunk", apply)
        res = import_stream(s, "k", io.StringIO(text), "hashlines", signal="md5",
                            method="bulk")
        other.close()
        assert not errors
        assert len(chunks) == 3
        assert (res.added, res.duplicates) == (199, 1)
        with s.engine.connect() as conn:
            n = conn.execute(sa.select(sa.func.count()).select_from(entries).where(
                entries.c.list_id == lid)).scalar_one()
            dup = conn.execute(sa.select(sa.func.count()).select_from(entries).where(
                entries.c.value == taken)).scalar_one()
            version = conn.execute(sa.select(hash_lists.c.version).where(
                hash_lists.c.id == lid)).scalar_one()
        assert (n, dup) == (200, 1)
        assert version == 2  # the import committed as one more version of the list


def test_identity_index_serves_lookups_by_hash_on_postgresql(pg_db):  # noqa: F811
    """Migrations 0014 and 0016: one unique index leads with the value (then the signal
    type); the separate (signal type, value) index is gone; a lookup by hash and an
    identity probe are index scans on the unique index; the statements that read one rare
    signal type's entries (how a worker loads its vPDQ index, how reconciliation surveys
    it) read the partial (signal type, id) index, not the table. Each downgrade restores
    the indexes before it."""
    cfg = Config()
    cfg.set_main_option("script_location", "hashwatch.store:migrations")
    with Store.open(pg_db) as s:
        s.create_list("a")
        s.add_entries("a", [EntryIn("pdq", f"{i:064x}") for i in range(3000)])
        s.add_entries("a", [EntryIn("md5", f"{i:032x}") for i in range(3)])

        def indexes() -> dict[str, str]:
            with s.engine.connect() as conn:
                return dict(conn.exec_driver_sql(
                    "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'entries'"
                ).all())

        def plan(conn, sql: str, params=None) -> str:
            return "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + sql, params))

        ix = indexes()
        assert "ix_entries_signal_value" not in ix
        assert "(value, signal_type, list_id, category_scheme" in ix["uq_entries_identity"]
        assert "(signal_type, id) WHERE ((signal_type)::text <> 'pdq'::text)" in ix[
            "ix_entries_signal_id"]
        with s.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE entries")
        # the statements the store really sends to read the rare type, with their parameters
        sent: list[tuple[str, object]] = []

        def record(conn, cursor, statement, parameters, context, executemany):
            # (iter_entries joins the lists: its plan follows their statistics; results only)
            if "signal_type" in statement and "hash_lists" not in statement:
                sent.append((statement, parameters))

        sa.event.listen(s.engine, "before_cursor_execute", record)
        try:
            assert sorted(v for b in s.iter_signal_values("md5") for _i, v in b) == [
                f"{i:032x}" for i in range(3)]
            assert len(list(s.iter_entries(signal_type="md5"))) == 3
            with s.snapshot() as snap:
                assert sum(len(b) for b in snap.live("md5")) == 3
        finally:
            sa.event.remove(s.engine, "before_cursor_execute", record)
        assert len(sent) >= 2, sent
        with s.engine.connect() as conn:
            # the generic plan too: psycopg prepares a statement run 5 times on a connection,
            # and PostgreSQL may then plan it once for any value of its parameters
            cur = conn.connection.driver_connection.cursor()
            cur.execute("SET plan_cache_mode = force_generic_plan")
            for k, (statement, params) in enumerate(sent):
                names: list[str] = []

                def number(m: re.Match, names: list[str] = names) -> str:
                    if m[1] not in names:
                        names.append(m[1])
                    return f"${names.index(m[1]) + 1}"

                sql = re.sub(r"%\((\w+)\)s", number, statement)
                types = ", ".join("bigint" if isinstance(params[n], int) else "text"
                                  for n in names)
                cur.execute(f"PREPARE q{k}({types}) AS {sql}")
                args = psycopg.sql.SQL(", ").join(psycopg.sql.Literal(params[n]) for n in names)
                cur.execute(psycopg.sql.SQL("EXPLAIN EXECUTE {}({})").format(
                    psycopg.sql.Identifier(f"q{k}"), args))
                got = "\n".join(r[0] for r in cur.fetchall())
                assert "$" in got, got  # a generic plan: the parameters stay parameters
                assert "ix_entries_signal_id" in got, got
                assert "Seq Scan on entries" not in got, got
            cur.execute("SET plan_cache_mode = auto")
            conn.exec_driver_sql("SET enable_seqscan = off")  # the plan, not the table size
            for sql in ("SELECT id FROM entries WHERE signal_type = 'md5' AND value IN "
                        f"('{1:032x}', '{2:032x}')",
                        "SELECT id FROM entries WHERE list_id = 1 AND signal_type = 'pdq' "
                        f"AND value = '{7:064x}' AND variant = ''"):
                assert "uq_entries_identity" in plan(conn, sql), plan(conn, sql)
        assert [e.value for e in s.lookup("md5", [f"{1:032x}"])] == [f"{1:032x}"]
        with s.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "entries_identity_order@-1")  # undoes 0016
        ix = indexes()
        assert "ix_entries_signal_id" not in ix
        assert "(signal_type, value, list_id" in ix["uq_entries_identity"]
        with s.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "entries_identity_order@-1")  # undoes 0014
        ix = indexes()
        assert "ix_entries_signal_value" in ix
        assert "(list_id, signal_type, value" in ix["uq_entries_identity"]
        s.migrate()
        ix = indexes()
        assert "ix_entries_signal_value" not in ix and "ix_entries_signal_id" in ix
        assert "(value, signal_type, list_id" in ix["uq_entries_identity"]


def test_bulk_import_plan_probes_the_identity_index_on_postgresql(pg_db):  # noqa: F811
    """The import's NOT EXISTS is a nested-loop anti-join probing ``uq_entries_identity``
    per staged row, even when the statistics say the list is tiny and the staging table
    large (the case where the planner went quadratic at 2M lines without the settings)."""
    from hashwatch.store import bulk

    with Store.open(pg_db) as s:
        s.create_list("a")
        s.add_entries("a", [EntryIn("md5", f"{i:032x}") for i in range(20)])
        lid = s.get_list("a").id
        with s.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE entries")
        with s.engine.begin() as conn:
            conn.exec_driver_sql(bulk._PG_STAGE)
            conn.exec_driver_sql(
                "INSERT INTO hw_stage SELECT g, 'md5', md5(g::text), '', '', '', '', '', '' "
                "FROM generate_series(1, 50000) g")
            conn.exec_driver_sql("ANALYZE hw_stage")
            bulk._pg_plan_settings(conn)
            plan = "\n".join(r[0] for r in conn.execute(
                sa.text("EXPLAIN " + bulk._DEDUP), {"lid": lid, "now": "t", "actor": "t"}))
    assert "Anti Join" in plan and "Nested Loop" in plan, plan
    # probed by the value, never through (signal type, id): all of a signal type per row
    assert "uq_entries_identity" in plan and "ix_entries_signal_id" not in plan, plan
    assert "Seq Scan on entries" not in plan, plan
    # the chunk's sort leads with the value in byte order (abbreviated keys), see _PG_ORDER
    assert 'value COLLATE "C"' in plan or "(value)::text COLLATE \"C\"" in plan, plan


def test_group_index_holds_grouped_entries_only(pg_db):  # noqa: F811
    """Migration 0015: ``ix_entries_group`` is partial (grouped entries); a group's lookup
    still reads it, and the downgrade restores the full index."""
    cfg = Config()
    cfg.set_main_option("script_location", "hashwatch.store:migrations")
    with Store.open(pg_db) as s:
        s.create_list("a")
        s.add_entries("a", [EntryIn("md5", f"{i:032x}", group_ref=f"g{i % 7}" if i % 2 else "")
                            for i in range(400)])
        lid = s.get_list("a").id

        def group_index() -> str:
            with s.engine.connect() as conn:
                return conn.exec_driver_sql(
                    "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_entries_group'"
                ).scalar_one()

        assert "WHERE ((group_ref)::text <> ''::text)" in group_index()
        got = s.group_entries(lid, "g3")
        assert sorted(e.value for e in got) == sorted(
            f"{i:032x}" for i in range(400) if i % 2 and i % 7 == 3)
        assert s.group_entries(lid, "") == []
        with s.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE entries")
            conn.exec_driver_sql("SET enable_seqscan = off")
            plan = "\n".join(r[0] for r in conn.exec_driver_sql(
                f"EXPLAIN SELECT id FROM entries WHERE list_id = {lid} AND group_ref = 'g3' "
                "AND group_ref <> ''"))
        assert "ix_entries_group" in plan, plan
        with s.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0015_entries_group_partial@-1")
        assert "WHERE" not in group_index()
        s.migrate()
        assert "WHERE" in group_index()
