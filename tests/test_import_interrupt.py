"""Ctrl-C during `hashwatch lists import`: the operator is told what was kept, and what was
kept is what the message says (PostgreSQL bulk: nothing; row import: whole batches, and a
re-run completes the list)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import hashwatch.lists as lists_mod
from conftest_pg import create_database, drop_database, pg_url  # noqa: F401
from hashwatch.cli import app
from hashwatch.store import Store

N = 30_000


def _interrupt_on_second_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real import, with Ctrl-C arriving while it reads its second batch."""
    real = lists_mod.import_stream

    def wrapped(*args, on_batch=None, **kw):
        calls = 0

        def batch(n: int) -> None:
            nonlocal calls
            calls += 1
            if on_batch is not None:
                on_batch(n)
            if calls == 2:
                raise KeyboardInterrupt

        return real(*args, on_batch=batch, **kw)

    monkeypatch.setattr(lists_mod, "import_stream", wrapped)


def _import(url: str, f, method: str):
    return CliRunner().invoke(app, ["lists", "import", "k", str(f), "--format", "hashlines",
                                    "--signal", "pdq", "--method", method, "--db", url])


@pytest.mark.parametrize("backend,method", [("sqlite", "rows"), ("sqlite", "bulk"),
                                            ("postgresql", "bulk")])
def test_interrupted_import_says_what_it_kept(tmp_path, monkeypatch, request, backend, method):
    if backend == "postgresql":
        from conftest_pg import server_url

        request.getfixturevalue("pg_url")
        url = create_database(server_url())
    else:
        url = str(tmp_path / "i.db")
    try:
        with Store.open(url) as s:
            s.create_list("k")
        f = tmp_path / "list.txt"
        f.write_text("".join(f"{i:064x}\n" for i in range(1, N + 1)))
        with monkeypatch.context() as m:
            _interrupt_on_second_batch(m)
            res = _import(url, f, method)
        assert res.exit_code == 130, res.output
        with Store.open(url) as s:
            kept = s.get_list("k").entry_count
        said = " ".join(res.stderr.split())  # the console wraps long lines
        if backend == "postgresql":
            assert "nothing was imported" in said and kept == 0
        elif kept:
            assert f"{kept:,} entries committed before the interrupt are kept" in said
        else:
            assert "nothing was imported yet; run the same command again" in said
            # rows: the batch read before the interrupt was committed; SQLite bulk: staging
            # had not reached its first applied chunk
            assert (0 < kept < N) if method == "rows" else kept == 0
        again = _import(url, f, method)
        assert again.exit_code == 0, again.output
        with Store.open(url) as s:
            assert s.get_list("k").entry_count == N
        assert f"{N - kept} added, {kept} already present" in again.stderr
    finally:
        if backend == "postgresql":
            drop_database(server_url(), url)
