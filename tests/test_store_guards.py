"""Store-level guards: text the databases cannot hold, identifiers, secret redaction."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from conftest_pg import pg_db, pg_url, store_url  # noqa: F401  (fixtures: both backends)
from hashwatch.store import EntryIn, InvalidName, InvalidText, Store
from hashwatch.store.redact import install_log_redaction, redact_text

PDQ = "ab" * 32


# -- text the database cannot hold: refused on both backends, nothing written -------------
@pytest.mark.parametrize("bad", ["a\x00b", "\ud800", "x\udfffy"])
def test_nul_and_lone_surrogates_are_refused_before_the_driver(store_url, bad):  # noqa: F811
    with Store.open(store_url) as s:
        s.create_list("l")
        with pytest.raises(InvalidText):
            s.add_entries("l", [EntryIn("pdq", PDQ, source_ref=bad)], actor="t")
        with pytest.raises(InvalidText):
            s.audit(bad, "list.export", {})
        with pytest.raises(InvalidText):
            s.get_list(bad)
        assert s.get_list("l").entry_count == 0  # nothing half-written
        s.add_entries("l", [EntryIn("pdq", PDQ, source_ref="ok é ✓")], actor="t")
        assert s.get_list("l").entry_count == 1


# -- identifiers ------------------------------------------------------------------------
@pytest.mark.parametrize("name", [
    "a\u202eb",      # right-to-left override
    "\u2066x\u2069",  # isolates
    "a\u200bb",      # zero width space
    "a\tb", "a\nb", "a\x1bb", "a\x7fb",
    "..", ".", "a/../b", "a..b", "a/b", "a\\b", "", "   ", "x" * 201,
    "a\u2028b",      # line separator
])
def test_list_names_refuse_control_bidi_and_path_like_values(tmp_path, name):
    with Store.open(str(tmp_path / "hw.db")) as s, pytest.raises(InvalidName):
        s.create_list(name)


def test_ordinary_names_still_work(tmp_path):
    with Store.open(str(tmp_path / "hw.db")) as s:
        for name in ("caid", "NCMEC 2026-11", "liste_é", "список", "a.b-c@d"):
            assert s.create_list(name).name == name


# -- database passwords are never printed ------------------------------------------------
SECRET = "s3cr3t-Pa55"


def test_redact_text_forms():
    for text in (f"postgresql+psycopg://hw:{SECRET}@db.example:5432/hw",
                 f"postgresql://hw:{SECRET}@h/d?sslmode=require",
                 f"host=h user=hw password={SECRET} dbname=hw",
                 f"postgresql://hw:{SECRET}@with@at@h/d"):
        out = redact_text(text)
        assert SECRET not in out and "***" in out
        assert "hw" in out  # the user stays: it helps and is not a secret
    assert redact_text("/var/lib/a:b@c/hw.db") == "/var/lib/a:b@c/hw.db"  # a path, no URL


@pytest.mark.parametrize("url", [
    f"postgresql+psycopg://hw:{SECRET}@127.0.0.1:1/hw",          # refused connection
    f"postgresql+psycopg://hw:{SECRET}@127.0.0.1:notaport/hw",   # malformed URL
    f"nosuchdialect://hw:{SECRET}@127.0.0.1/hw",                 # unknown dialect
])
def test_store_open_errors_never_carry_the_password(url):
    with pytest.raises(Exception) as e:
        Store.open(url)
    text = "".join(str(x) for x in (e.value, e.value.__cause__, e.value.__context__))
    assert SECRET not in text and "***" in str(e.value)


def test_cli_errors_never_print_the_password(tmp_path):
    url = f"postgresql+psycopg://hw:{SECRET}@127.0.0.1:1/hw"
    env = dict(os.environ, HASHWATCH_DB=url)
    for args in (["lists", "show"], ["keys", "list", "--db", url],  # $HASHWATCH_DB, --db
                 ["grades", "C-1", "--db", url]):
        r = subprocess.run([sys.executable, "-m", "hashwatch.cli", *args], env=env,
                           capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert r.returncode != 0
        out = r.stdout + r.stderr
        assert SECRET not in out, (args, out)
        assert "hw:***@" in out, (args, out)
    assert not any(tmp_path.iterdir())  # the URL was not taken for a SQLite path


def test_a_libpq_connection_string_is_not_taken_for_a_file_name(tmp_path):
    # it was: an empty SQLite database (and index files) named after the password
    dsn = f"host=127.0.0.1 port=1 user=hw password={SECRET} dbname=hw"
    for args in (["keys", "list", "--db", dsn], ["serve", "--port", "1", "--db", dsn]):
        r = subprocess.run([sys.executable, "-m", "hashwatch.cli", *args],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path)
        out = r.stdout + r.stderr
        assert r.returncode != 0 and "libpq connection string" in out, (args, out)
        assert SECRET not in out, (args, out)
    assert not any(tmp_path.iterdir())


def test_log_records_are_redacted(caplog):
    install_log_redaction()
    log = logging.getLogger("hashwatch.test")
    url = f"postgresql://hw:{SECRET}@h/d"
    with caplog.at_level(logging.INFO, logger="hashwatch.test"):
        log.info("connecting to %s", url)
        try:
            raise RuntimeError(f"cannot reach {url}")
        except RuntimeError:
            log.exception("failed")
    text = caplog.text + "".join(r.exc_text or "" for r in caplog.records)
    assert SECRET not in text and "hw:***@h/d" in text
