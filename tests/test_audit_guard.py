"""The audit log is append-only against every statement that can remove or replace rows,
on SQLite and on PostgreSQL, at row and statement level: each statement is tried."""

from __future__ import annotations

import sqlite3

import pytest
import sqlalchemy as sa

from conftest_pg import pg_db, pg_url, store_url  # noqa: F401  (fixtures: both backends)
from hashwatch.store import Store

ROW = "(id, at, actor, action, detail) VALUES (1, 'x', 'mallory', 'forged', '{}')"

ATTEMPTS = {
    "sqlite": [
        "UPDATE audit_log SET actor = 'mallory'",
        "UPDATE audit_log SET actor = 'mallory' WHERE id = 1",
        "UPDATE OR REPLACE audit_log SET id = 2 WHERE id = 1",
        "DELETE FROM audit_log",
        "DELETE FROM audit_log WHERE id = 1",
        f"INSERT OR REPLACE INTO audit_log {ROW}",
        f"REPLACE INTO audit_log {ROW}",
        f"INSERT INTO audit_log {ROW} ON CONFLICT(id) DO UPDATE SET actor = 'mallory'",
        "DROP TABLE audit_log",
        "ALTER TABLE audit_log RENAME TO audit_old",
        "ALTER TABLE audit_log DROP COLUMN actor",
        "DROP TRIGGER audit_log_no_delete",
        "DROP TRIGGER audit_log_no_update",
        "DROP TRIGGER audit_log_no_replace",
        "PRAGMA writable_schema = ON",
        # a trigger of one's own that silently drops every later row
        "CREATE TRIGGER audit_mute BEFORE INSERT ON audit_log BEGIN SELECT RAISE(IGNORE); END",
        "CREATE TEMP TRIGGER audit_mute BEFORE INSERT ON main.audit_log "
        "BEGIN SELECT RAISE(IGNORE); END",
    ],
    "postgresql": [
        "UPDATE audit_log SET actor = 'mallory'",
        "UPDATE audit_log SET actor = 'mallory' WHERE id = -1",  # statement level: no row
        "DELETE FROM audit_log",
        "DELETE FROM audit_log WHERE id = -1",
        "TRUNCATE audit_log",
        "TRUNCATE audit_log CASCADE",
        f"INSERT INTO audit_log {ROW} ON CONFLICT (id) DO UPDATE SET actor = 'mallory'",
        "MERGE INTO audit_log a USING (SELECT 1 AS id) s ON a.id = s.id "
        "WHEN MATCHED THEN DELETE",
        "MERGE INTO audit_log a USING (SELECT 1 AS id) s ON a.id = s.id "
        "WHEN MATCHED THEN UPDATE SET actor = 'mallory'",
        "DROP TABLE audit_log",
        "DROP TABLE audit_log CASCADE",
        "ALTER TABLE audit_log RENAME TO audit_old",
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only",
        "ALTER TABLE audit_log DISABLE TRIGGER ALL",
        "DROP TRIGGER audit_log_append_only ON audit_log",
        "DROP TRIGGER audit_log_append_only_stmt ON audit_log",
        "DROP FUNCTION audit_log_append_only() CASCADE",
        "CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger "
        "LANGUAGE plpgsql AS $$ BEGIN RETURN OLD; END $$",
        "ALTER TABLE audit_log ALTER COLUMN actor TYPE text",
        # forged rows through a child table (read with the log, guarded by nothing)
        "CREATE TABLE audit_extra () INHERITS (audit_log)",
        "CREATE TABLE audit_extra (LIKE audit_log)",  # allowed alone: the next one is not
        "ALTER TABLE audit_extra INHERIT audit_log",
        # the guard's own function lived in public: dropping the schema took it along
        "DROP SCHEMA public CASCADE",
    ],
}


def _rows(store: Store) -> list[tuple]:
    return [(e["id"], e["actor"], e["action"]) for e in store.iter_audit()]


def test_every_removing_or_replacing_statement_is_refused(store_url):  # noqa: F811
    with Store.open(store_url) as store:
        store.audit("alice", "list.export", {"n": 1})
        store.audit("alice", "match.hashes", {"n": 2})
        before = _rows(store)
        assert len(before) == 2
        allowed = []
        for stmt in ATTEMPTS[store.dialect]:
            if stmt.startswith("CREATE TABLE audit_extra (LIKE"):
                with store.engine.begin() as conn:  # a plain table is fine (no link to the log)
                    conn.exec_driver_sql(stmt)
                continue
            try:
                with store.engine.begin() as conn:
                    conn.exec_driver_sql(stmt)
            except sa.exc.DBAPIError:
                continue
            allowed.append(stmt)
        assert allowed == []
        assert _rows(store) == before
        store.audit("alice", "list.create", {})  # appending still works
        assert len(_rows(store)) == 3


def test_sqlite_row_guards_hold_without_hashwatchs_connection_settings(tmp_path):
    # another program opening the file (no authorizer): the triggers still refuse
    db = tmp_path / "hw.db"
    with Store.open(str(db)) as store:
        store.audit("alice", "list.export", {})
    conn = sqlite3.connect(db)
    for stmt in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log",
                 f"INSERT OR REPLACE INTO audit_log {ROW}", f"REPLACE INTO audit_log {ROW}",
                 f"INSERT INTO audit_log {ROW} ON CONFLICT(id) DO UPDATE SET actor = 'm'"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute(stmt)
        conn.rollback()
    assert conn.execute("SELECT actor FROM audit_log").fetchall() == [("alice",)]
    conn.close()


REFUSED = "append-only|permission denied|must be owner"


def test_a_database_owner_cannot_drop_the_log_with_its_schema(pg_url):  # noqa: F811
    """The realistic PostgreSQL set-up: a superuser migrates (so the DDL guard exists), the
    service runs as a plain role that owns its database, and so owns ``public`` (PG 15).
    The owner of a schema may drop everything in it: ``DROP SCHEMA public CASCADE`` took the
    guard's function (then in public) and the log together, and the guard never ran."""
    import secrets

    from conftest_pg import drop_database

    role, pw = "hwsvc_" + secrets.token_hex(4), secrets.token_hex(12)
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN PASSWORD '{pw}'")
        conn.exec_driver_sql(f'CREATE DATABASE "{role}" OWNER {role}')
    su_url = pg_url.rsplit("/", 1)[0] + "/" + role
    svc = None
    try:
        with Store.open(su_url) as store:  # migrated by the superuser
            store.audit("alice", "list.export", {})
            with store.engine.begin() as conn:
                conn.exec_driver_sql(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")
                conn.exec_driver_sql(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}")
        u = sa.engine.make_url(su_url).set(username=role, password=pw)
        svc = sa.create_engine(u)
        for stmt in ("DROP SCHEMA public CASCADE", "DROP TABLE audit_log",
                     "DELETE FROM audit_log", "CREATE TABLE x () INHERITS (audit_log)"):
            with pytest.raises(sa.exc.DBAPIError, match=REFUSED), svc.begin() as conn:
                conn.exec_driver_sql(stmt)
        with svc.begin() as conn:  # the service role still appends
            conn.exec_driver_sql("INSERT INTO audit_log (at, actor, action, detail) "
                                 "VALUES ('x', 'svc', 'probe', '{}')")
        with Store.open(su_url, migrate=False) as store:
            assert [e["actor"] for e in store.iter_audit()] == ["alice", "svc"]
    finally:
        if svc is not None:
            svc.dispose()
        drop_database(pg_url, su_url)
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP ROLE IF EXISTS {role}")
        admin.dispose()
