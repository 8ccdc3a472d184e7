"""Opening a store's database: a SQLite path or an SQLAlchemy URL to a guarded engine (owner-only
file, WAL, the text guard and SQLite authorizer), and the Alembic migrations applied on open."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from hashwatch.store.guards import install_sqlite_authorizer, install_text_guard
from hashwatch.store.records import StoreError, default_db_path
from hashwatch.store.redact import redact_text, redact_url

log = logging.getLogger("hashwatch.store")


def upgrade_notice(current: str, target: str) -> str:
    """What an operator is told before a database is upgraded from schema revisions
    ``current`` to ``target`` (the words every caller of ``Store.open(on_upgrade=...)`` uses)."""
    return (f"schema {current} -> {target}; on a large list this rebuilds indexes and can take "
            "minutes (do not interrupt it)")


def _make_url(target: str | os.PathLike[str]) -> tuple[str, Path | None]:
    text = os.fspath(target)
    if "://" in text:
        return text, None
    path = Path(text).expanduser()
    return f"sqlite:///{path}", path


def _create_private_file(path: Path) -> None:
    """Create the SQLite file owner-only before SQLite does (it copies these bits to
    its -wal/-shm files): hash lists are sensitive."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)


def connect(target: str | os.PathLike[str] | None) -> tuple[sa.Engine, str]:
    """(engine, the target as it may be shown) for a SQLite path or an SQLAlchemy URL
    (``None``: ``$HASHWATCH_DB`` or :func:`default_db_path`). A new SQLite file is created
    owner-only; SQLite connections get WAL, foreign keys, a busy timeout and the authorizer.
    Raises StoreError, whose message never carries the URL's password."""
    if target is None:  # a URL in $HASHWATCH_DB must not go through Path()
        target = os.environ.get("HASHWATCH_DB") or default_db_path()
    url, path = _make_url(target)
    shown = redact_url(target)
    if path is not None:
        if re.search(r"(?i)\b(password|host|dbname|user)\s*=", str(target)):
            # a libpq "key=value" string is not a file name: opening it as SQLite would
            # create an empty database named after the password
            raise StoreError("the database looks like a libpq connection string "
                             "(key=value ...): give a URL such as "
                             "postgresql+psycopg://user:***@host:5432/dbname")
        if path.exists() and path.is_dir():
            raise StoreError(f"database path {path} is a directory")
        _create_private_file(path)
    try:
        # PostgreSQL: a pooled connection may have died with a server restart; test it on
        # checkout (one local round trip) so the service recovers by itself
        engine = sa.create_engine(url, future=True,
                                  pool_pre_ping=not url.startswith("sqlite"))
    except Exception as exc:  # ArgumentError quotes the whole URL, password included
        raise StoreError(f"cannot open database {shown}: "
                         f"{redact_text(type(exc).__name__ + ': ' + str(exc))}") from None
    install_text_guard(engine)
    if engine.dialect.name == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _rec: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()
            install_sqlite_authorizer(dbapi_conn)

    return engine, shown


def migrate_schema(engine: sa.Engine, on_upgrade: Callable[[str, str], None] | None = None
                   ) -> None:
    """Bring the schema to the newest revision (Alembic ``upgrade heads``);
    ``on_upgrade(current, target)`` first when an existing database is behind."""
    cfg = Config()
    cfg.set_main_option(
        "script_location", str(resources.files("hashwatch.store") / "migrations")
    )
    with engine.begin() as conn:
        current = MigrationContext.configure(conn).get_current_heads()
        target = ScriptDirectory.from_config(cfg).get_heads()
        if current and set(current) != set(target):
            # only the branches that move (the schema has several heads)
            cur = ", ".join(sorted(set(current) - set(target)))
            tgt = ", ".join(sorted(set(target) - set(current)))
            log.info("upgrading the database: %s", upgrade_notice(cur, tgt))
            if on_upgrade is not None:
                on_upgrade(cur, tgt)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "heads")
