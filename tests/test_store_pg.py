"""PostgreSQL-only storage checks beyond tests/test_store.py (which runs on both backends):
list formats round-trip through a PostgreSQL store, and the matcher's change-feed replay."""

from __future__ import annotations

import io
import itertools

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest_pg import create_database, drop_database, pg_db, pg_url  # noqa: F401
from hashwatch.categories import Category
from hashwatch.formats import hashlines as hashlines_fmt
from hashwatch.formats import reader, writer
from hashwatch.matcher import Matcher
from hashwatch.store import EntryIn, Store

_names = itertools.count()

refs = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=20)
cats = st.one_of(st.none(), st.sampled_from([Category("uk", "A"), Category("vics", "2"),
                                             Category("acme", "Red 7 ü")]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(st.tuples(st.sampled_from(["md5", "sha256", "pdq"]), st.randoms(), cats,
                                refs), min_size=1, max_size=10),
       fmt=st.sampled_from(["csv", "vics", "hashlines"]))
def test_formats_round_trip_on_postgresql(pg_url, items, fmt):  # noqa: F811
    lengths = {"md5": 32, "sha256": 64, "pdq": 64}
    entries = [EntryIn(sig, "".join(rnd.choice("0123456789abcdef") for _ in range(lengths[sig])),
                       cat, (), ref.strip(), f"g{i}") for i, (sig, rnd, cat, ref) in
               enumerate(items)]
    url = _shared_db(pg_url)
    n = next(_names)
    with Store.open(url) as s:
        s.create_list(f"src{n}")
        s.add_entries(f"src{n}", entries)
        buf = io.StringIO()
        if fmt == "hashlines":
            hashlines_fmt.write(s.iter_entries(list_name=f"src{n}"), buf)
        else:
            writer(fmt)(s.iter_entries(list_name=f"src{n}"), buf)
        data = buf.getvalue()
        src = io.BytesIO(data.encode()) if fmt == "vics" else io.StringIO(data)
        back = list(reader(fmt)(src))
        assert all(isinstance(e, EntryIn) for e in back)
        s.create_list(f"dst{n}")
        s.add_entries(f"dst{n}", back)

        def view(name: str) -> list:
            rows = s.iter_entries(list_name=name)
            if fmt == "hashlines":
                return sorted((e.signal_type, e.value) for e in rows)
            return sorted((e.signal_type, e.value, str(e.category), e.source_ref) for e in rows)

        assert view(f"dst{n}") == view(f"src{n}")


_db: dict[str, str] = {}


def _shared_db(admin: str) -> str:
    if "url" not in _db:
        _db["url"] = create_database(admin)
    return _db["url"]


def teardown_module() -> None:
    from conftest_pg import server_url

    if "url" in _db:
        drop_database(server_url(), _db.pop("url"))


def test_matcher_replays_the_feed_on_postgresql(pg_db):  # noqa: F811
    rng = np.random.default_rng(3)
    values = [rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex() for _ in range(50)]
    with Store.open(pg_db) as s:
        s.create_list("k")
        s.add_entries("k", [EntryIn("pdq", v) for v in values[:25]])
        m = Matcher(s)  # PostgreSQL: no index file, built from the store
        assert len(m.index) == 25
        r = s.add_entries("k", [EntryIn("pdq", v) for v in values[25:]])
        assert m.refresh() == 25 and len(m.match_pdq(values[40])) == 1
        s.remove_entries("k", r.added_ids[:5])
        m.refresh()
        assert m.match_pdq(values[25]) == [] and len(m.index) == 45
        s.set_list_enabled("k", False)
        assert m.match_pdq(values[0]) == []  # list state applies at read time
