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
