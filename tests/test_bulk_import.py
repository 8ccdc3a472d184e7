"""Bulk import (COPY / staging + one set-based insert) behaves exactly like the row-by-row
import: same rows kept, same first-occurrence rule for duplicates, same restores, same
bad-row report, and the change feed carries the result to the index."""

from __future__ import annotations

import io
import itertools

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest_pg import create_database, drop_database, pg_url  # noqa: F401
from hashwatch.lists import import_stream
from hashwatch.matcher import Matcher
from hashwatch.store import EntryIn, Store

_n = itertools.count()
_dbs: dict[str, str] = {}

HEX = "0123456789abcdef"
values = st.sampled_from([c * 64 for c in HEX[:6]] + [c * 32 for c in HEX[:4]])
row = st.tuples(
    st.sampled_from(["pdq", "md5", "", "bogus"]),
    values,
    st.sampled_from(["", "uk:A", "vics:2", "nonsense-cat"]),
    st.sampled_from(["", "a;b", "c"]),
    # a tab and a backslash: the PostgreSQL path writes COPY text itself and must escape them
    st.sampled_from(["", "r1", "r2", "t\tb\\s"]),
)


def _csv(rows: list[tuple]) -> str:
    out = io.StringIO()
    out.write("signal_type,value,category,labels,source_ref\n")
    for sig, val, cat, labels, ref in rows:
        out.write(f"{sig},{val},{cat},{labels},{ref}\n")
    return out.getvalue()


def _db(backend: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    if backend not in _dbs:
        if backend == "sqlite":
            _dbs[backend] = str(tmp_path_factory.mktemp("bulk") / "b.db")
        else:
            from conftest_pg import server_url

            _dbs[backend] = create_database(server_url())
        Store.open(_dbs[backend]).close()
    return _dbs[backend]


def teardown_module() -> None:
    if "postgresql" in _dbs:
        from conftest_pg import server_url

        drop_database(server_url(), _dbs.pop("postgresql"))


def _state(s: Store, name: str) -> list[tuple]:
    return sorted(
        (e.signal_type, e.value, str(e.category), e.labels, e.source_ref, e.removed_at is None)
        for e in s.iter_entries(list_name=name, active_only=False))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(before=st.lists(row, max_size=6), remove=st.lists(st.booleans(), max_size=6),
       rows=st.lists(row, max_size=25))
@example(before=[("pdq", "a" * 64, "", "", "r0")], remove=[True],
         rows=[("pdq", "b" * 64, "uk:A", "", "r1"), ("md5", "c" * 32, "", "a;b", "r2"),
               ("pdq", "b" * 64, "uk:A", "c", "r3"), ("md5", "c" * 32, "", "", "r4"),
               ("pdq", "a" * 64, "", "c", "r5"), ("bogus", "d", "", "", "")])
def test_bulk_import_equals_row_import(backend, tmp_path_factory, request, before, remove, rows):
    if backend == "postgresql":
        request.getfixturevalue("pg_url")
    url = _db(backend, tmp_path_factory)
    k = next(_n)
    with Store.open(url, migrate=False) as s:
        results = {}
        for method in ("rows", "bulk"):
            name = f"{method}{k}"
            s.create_list(name)
            # the list's earlier state: some entries, some of them removed since
            import_stream(s, name, io.StringIO(_csv(before)), "csv")
            ids = [e.id for e in s.iter_entries(list_name=name)]
            gone = [i for i, r in zip(ids, remove, strict=False) if r]
            if gone:
                s.remove_entries(name, gone)
            res = import_stream(s, name, io.StringIO(_csv(rows)), "csv", method=method)
            results[method] = (res.as_dict(), _state(s, name))
        assert results["bulk"] == results["rows"]


def test_bulk_import_reaches_the_index_and_is_audited(tmp_path):
    with Store.open(tmp_path / "i.db") as s:
        s.create_list("k")
        m = Matcher(s, persist=False)
        text = "\n".join(f"{i:064x}" for i in range(1, 5001)) + "\nnot-a-hash\n"
        res = import_stream(s, "k", io.StringIO(text), "hashlines", signal="pdq",
                            method="bulk", actor="tester")
        assert (res.added, res.bad_rows) == (5000, 1) and str(res.errors[0]).startswith(
            "line 5001")
        assert m.refresh() == 5000 and len(m.index) == 5000
        assert m.match_pdq(f"{77:064x}", radius=0)[0].ref == ""
        ev = [e for e in s.iter_audit() if e["action"] == "entries.import"][-1]
        assert ev["actor"] == "tester" and ev["detail"]["method"] == "bulk"
        assert ev["detail"]["added"] == 5000 and ev["detail"]["bad_rows"] == 1
        # re-importing adds nothing
        again = import_stream(s, "k", io.StringIO(text), "hashlines", signal="pdq",
                              method="bulk")
        assert (again.added, again.duplicates) == (0, 5000)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_failed_bulk_import_leaves_nothing(tmp_path, tmp_path_factory, monkeypatch, request,
                                           backend):
    # an unknown signal type in the middle aborts the whole import: atomic. On PostgreSQL
    # it is met while the server applies an earlier chunk (the apply is cancelled or
    # finishes, then everything is rolled back)
    from hashwatch.store import bulk

    monkeypatch.setattr(bulk, "PG_CHUNK_FIRST", 5_000)
    if backend == "postgresql":
        request.getfixturevalue("pg_url")
        url = _db(backend, tmp_path_factory)
    else:
        url = tmp_path / "a.db"
    name = f"k{next(_n)}"
    with Store.open(url) as s:
        s.create_list(name)
        with s.snapshot() as snap:
            before = snap.position
        items = [EntryIn("pdq", f"{i:064x}") for i in range(1, 30_000)]
        items.insert(25_000, EntryIn("nosuch", "x"))
        with pytest.raises(KeyError):
            bulk.bulk_add(s, name, iter(items))
        assert s.get_list(name).entry_count == 0
        with s.snapshot() as snap:
            assert not snap.any_changed(before)
        # the connection is usable again and a good import then goes through
        res = bulk.bulk_add(s, name, iter(items[:100]))
        assert res.added == 100 and s.get_list(name).entry_count == 100


@pytest.mark.parametrize("backend,chunk_seconds",
                         [("sqlite", 2.0), ("sqlite", 1e-9), ("postgresql", None)])
def test_bulk_import_in_chunks_equals_row_import(tmp_path, tmp_path_factory, monkeypatch,
                                                  request, backend, chunk_seconds):
    """Both backends apply the staged rows in chunks (SQLite: one short write transaction
    each; PostgreSQL: one statement each, in the import's one transaction, while the next
    chunk is parsed): the first occurrence still wins across chunk boundaries, restores
    and bad rows are the same as the row-by-row path's, with chunks of 7 rows (PostgreSQL:
    3, 6, 12 rows: doubling), and on SQLite with chunks shrunk to one row (an aimed lock
    hold no chunk can meet)."""
    from hashwatch.store import bulk

    monkeypatch.setattr(bulk, "SQLITE_CHUNK", 7)
    monkeypatch.setattr(bulk, "SQLITE_CHUNK_SECONDS", chunk_seconds or 2.0)
    monkeypatch.setattr(bulk, "SQLITE_PAUSE", 0.0)
    monkeypatch.setattr(bulk, "_BATCH", 3)
    monkeypatch.setattr(bulk, "PG_CHUNK_FIRST", 3)
    monkeypatch.setattr(bulk, "PG_CHUNK", 12)
    vals = [f"{i % 23:064x}" for i in range(60)]  # repeats across chunk boundaries
    rows = [("pdq", v, "uk:A" if i % 5 else "", "", f"r{i}") for i, v in enumerate(vals)]
    rows.insert(30, ("bogus", "x", "", "", ""))
    before = [("pdq", f"{i:064x}", "uk:A", "", "old") for i in range(1, 6)]
    if backend == "postgresql":
        request.getfixturevalue("pg_url")
        url = _db(backend, tmp_path_factory)
    else:
        url = tmp_path / "c.db"
    k = next(_n)
    with Store.open(url) as s:
        results = {}
        for method in ("rows", "bulk"):
            name = f"c{method}{k}"
            s.create_list(name)
            import_stream(s, name, io.StringIO(_csv(before)), "csv")
            s.remove_entries(name, [e.id for e in s.iter_entries(list_name=name)][:3])
            res = import_stream(s, name, io.StringIO(_csv(rows)), "csv", method=method)
            results[method] = (res.as_dict(), _state(s, name))
        assert results["bulk"] == results["rows"]
        assert results["bulk"][0]["restored"] == 3 and results["bulk"][0]["bad_rows"] == 1
        if backend == "sqlite":  # (the PostgreSQL database holds other tests' lists too)
            m = Matcher(s, persist=False)
            assert len(m.index) == len([r for r in results["bulk"][1] if r[5]]) * 2
