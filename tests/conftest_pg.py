"""PostgreSQL for tests: a throw-away cluster and a fresh database per test.

``pg_url``: HASHWATCH_TEST_PG_URL if set (CI starts the cluster with .ci/postgres.sh);
otherwise, when PostgreSQL 15's initdb is installed, this process starts a cluster itself
with the same script (once per test process) and stops it at exit, so ``make test`` works
alone. Without PostgreSQL the tests fail under CI=true and are skipped elsewhere.

Use from a test module with ``from conftest_pg import pg_url, pg_db  # noqa: F401`` (or
register this module with ``pytest_plugins = ["conftest_pg"]`` in conftest.py).
"""

from __future__ import annotations

import atexit
import os
import secrets
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / ".ci" / "postgres.sh"
PGBIN = Path(os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin"))

_cluster: dict[str, str] = {}


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL needed under CI=true: {reason}")
    pytest.skip(f"PostgreSQL not available: {reason}")


def _stop() -> None:
    d = _cluster.get("dir")
    if d:
        subprocess.run([str(SCRIPT), "stop", d], check=False, capture_output=True)


def server_url() -> str:
    """The admin URL of a running cluster (started on first use)."""
    url = os.environ.get("HASHWATCH_TEST_PG_URL")
    if url:
        return url
    if "url" in _cluster:
        return _cluster["url"]
    if not (PGBIN / "initdb").exists():
        _unavailable(f"HASHWATCH_TEST_PG_URL unset and no initdb in {PGBIN}")
    res = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        _unavailable(f".ci/postgres.sh failed: {res.stderr.strip()[-500:]}")
    env = dict(
        line.removeprefix("export ").split("=", 1)
        for line in res.stdout.splitlines() if line.startswith("export ")
    )
    _cluster["url"] = env["HASHWATCH_TEST_PG_URL"].strip("'")
    _cluster["dir"] = env["HASHWATCH_TEST_PG_DIR"].strip("'")
    atexit.register(_stop)
    return _cluster["url"]


def create_database(admin_url: str) -> str:
    import sqlalchemy as sa

    name = "hwtest_" + secrets.token_hex(6)
    eng = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with eng.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    eng.dispose()
    return admin_url.rsplit("/", 1)[0] + "/" + name


def drop_database(admin_url: str, url: str) -> None:
    import sqlalchemy as sa

    name = url.rsplit("/", 1)[1]
    eng = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with eng.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    eng.dispose()


@pytest.fixture(scope="session")
def pg_url() -> str:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("the psycopg package is not installed")
    return server_url()


@pytest.fixture
def pg_db(pg_url: str):
    """URL of a new, empty database, dropped after the test."""
    url = create_database(pg_url)
    yield url
    drop_database(pg_url, url)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    """A database target for each backend: a SQLite path, or a fresh PostgreSQL URL."""
    if request.param == "sqlite":
        return str(tmp_path / "hw.db")
    return request.getfixturevalue("pg_db")
