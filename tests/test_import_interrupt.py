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


def _detail(stopped: list[dict]) -> dict:
    """The import's own detail fields (file name, format...) of the one interrupted row."""
    return {k: v for k, v in stopped[0].items()
            if k not in ("added", "restored", "interrupted", "method")} if stopped else {}


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
            kept, version = s.get_list("k").entry_count, s.get_list("k").version
            stopped = [a["detail"] for a in s.iter_audit() if "interrupted" in a["detail"]]
        # kept content is a new version, and the audit says what was kept and why it stopped
        assert version == (2 if kept else 1)
        assert stopped == ([{"added": kept, "restored": 0, "interrupted": "KeyboardInterrupt",
                             **({"method": "bulk"} if method == "bulk" else {}),
                             **_detail(stopped)}] if kept else [])
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
            info = s.get_list("k")
            assert info.version == (3 if kept else 2)
            # the list's time is its last change's, not the first batch's
            import sqlalchemy as sa

            with s.engine.connect() as c:
                last = c.execute(sa.text("SELECT max(at) FROM changes")).scalar()
            assert info.updated_at >= last
        assert f"{N - kept} added, {kept} already present" in again.stderr
    finally:
        if backend == "postgresql":
            drop_database(server_url(), url)


def test_sqlite_bulk_interrupted_between_chunks_keeps_a_new_version(tmp_path, monkeypatch):
    # Ctrl-C after the set-based step committed its first chunk: the kept rows are a new
    # version of the list, audited as interrupted; a re-run completes it
    import hashwatch.store.bulk as bulk

    url = str(tmp_path / "c.db")
    with Store.open(url) as s:
        s.create_list("k")
    f = tmp_path / "list.txt"
    f.write_text("".join(f"{i:064x}\n" for i in range(1, N + 1)))
    real, calls = bulk._apply_sqlite_chunk, []

    def chunk(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(bulk, "SQLITE_CHUNK_FIRST", 5_000)
    monkeypatch.setattr(bulk, "SQLITE_CHUNK", 5_000)
    monkeypatch.setattr(bulk, "_apply_sqlite_chunk", chunk)
    res = _import(url, f, "bulk")
    assert res.exit_code == 130, res.output
    with Store.open(url) as s:
        info = s.get_list("k")
        stopped = [a["detail"] for a in s.iter_audit() if "interrupted" in a["detail"]]
    assert info.entry_count == 5_000 and info.version == 2
    assert [(d["added"], d["interrupted"]) for d in stopped] == [(5_000, "KeyboardInterrupt")]
    monkeypatch.setattr(bulk, "_apply_sqlite_chunk", real)
    assert _import(url, f, "bulk").exit_code == 0
    with Store.open(url) as s:
        assert s.get_list("k").entry_count == N and s.get_list("k").version == 3
