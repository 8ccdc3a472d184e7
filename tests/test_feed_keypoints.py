"""The keypoint tier follows the commit-ordered change feed (issue 12).

It used to read new ``local_features`` rows by id (``id > last``): on PostgreSQL ids are
handed out at insert time and become visible at commit time, so two overlapping ``lists add``
runs could make a worker skip a known image's keypoints for good. These tests force that
interleaving on a real PostgreSQL server, run random interleavings of writers and refreshes
against the rule "the tier holds exactly the keypoint-live sets", and check that
reconciliation finds and repairs a tier that differs.
"""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest_pg import create_database, drop_database, pg_db, pg_url  # noqa: F401
from hashwatch.matcher import Matcher
from hashwatch.reconcile import reconcile
from hashwatch.store import EntryIn, Store
from hashwatch.store.records import entry_row, utcnow

_BLOB: list[bytes] = []


def _blob() -> bytes:
    """One real keypoint set (ORB on a generated textured picture), computed once."""
    if not _BLOB:
        from hashwatch.robust.local import encode_local, known_local

        rng = np.random.default_rng(7)
        small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        pixels = np.kron(small, np.ones((12, 12, 1), np.uint8))  # blocks: corners for ORB
        _BLOB.append(encode_local(known_local(pixels)))
    return _BLOB[0]


def _pdq(i: int) -> str:
    return bytes(np.random.default_rng(5000 + i).integers(0, 256, 32, dtype=np.uint8)).hex()


def _entries(group: str, i: int) -> list[EntryIn]:
    """A known image's entries: its PDQ and SHA-256, one group."""
    sha = bytes(np.random.default_rng(9000 + i).integers(0, 256, 32, dtype=np.uint8)).hex()
    return [EntryIn("pdq", _pdq(i), group_ref=group), EntryIn("sha256", sha, group_ref=group)]


def _feature_id(s: Store, list_id: int, group: str) -> int:
    with s.engine.connect() as conn:
        return conn.execute(sa.text("SELECT id FROM local_features WHERE list_id = :l AND "
                                    "group_ref = :g"), {"l": list_id, "g": group}).scalar_one()


def _keypoint_live(s: Store) -> set[int]:
    with s.snapshot() as snap:
        return {i for part in snap.keypoint_live(data=False) for i, _l, _d in part}


def _held(m: Matcher) -> set[int]:
    assert m.keypoints is not None  # loads the tier on first use
    kpf = m.keypoint_feed
    assert kpf is not None
    held = set(kpf.held_ids().tolist())
    # the bitmap and the index itself agree
    assert held == set(kpf.kp.live_image_ids().tolist())
    return held


def test_late_keypoint_commit_is_not_skipped_on_postgresql(pg_db):  # noqa: F811
    with Store.open(pg_db) as s:
        lid = s.create_list("k").id
        s.add_entries("k", _entries("a", 1) + _entries("b", 2))
        m = Matcher(s)
        assert len(m.keypoints) == 0  # the tier is loaded (empty)
        # run A inserts its image's keypoints and holds; run B inserts and commits
        conn_a = s.engine.connect()
        tx_a = conn_a.begin()
        try:
            s._write_local_features(conn_a, lid, [("a", _blob())], utcnow())
            s.add_local_features("k", [("b", _blob())])
            m.refresh()  # the worker reads B; A is not visible yet
            a_id, b_id = _feature_id(s, lid, "b") - 1, _feature_id(s, lid, "b")
            assert _held(m) == {b_id}
            tx_a.commit()  # A commits after B was read, with the smaller id
        finally:
            conn_a.close()
        assert _feature_id(s, lid, "a") == a_id < b_id  # the dangerous order
        m.refresh()
        assert _held(m) == {a_id, b_id} == _keypoint_live(s)
        assert m.keypoints.holds(a_id)


def test_late_keypoint_commit_is_not_skipped_on_sqlite(tmp_path):
    # one writer at a time: the worker refreshes while A holds its transaction
    with Store.open(tmp_path / "k.db") as s:
        lid = s.create_list("k").id
        s.add_entries("k", _entries("a", 1))
        m = Matcher(s, persist=False)
        assert len(m.keypoints) == 0
        conn_a = s.engine.connect()
        tx_a = conn_a.begin()
        try:
            s._write_local_features(conn_a, lid, [("a", _blob())], utcnow())
            m.refresh()
            assert _held(m) == set()
            tx_a.commit()
        finally:
            conn_a.close()
        m.refresh()
        assert _held(m) == {_feature_id(s, lid, "a")}


def test_keypoint_tier_follows_every_signal_of_the_group_and_list_deletion(tmp_path):
    """A set stays while any entry of its group is live (of any signal type), leaves with
    the last one, comes back with a restore, and leaves when its list is deleted; a saved
    tier reopens at its feed position and catches up."""
    with Store.open(tmp_path / "g.db") as s:
        lid = s.create_list("k").id
        s.add_entries("k", _entries("a", 1) + _entries("b", 2))
        s.add_local_features("k", [("a", _blob()), ("b", _blob())])
        a_id, b_id = _feature_id(s, lid, "a"), _feature_id(s, lid, "b")
        m = Matcher(s)
        assert _held(m) == {a_id, b_id}
        by_sig = {(e.group_ref, e.signal_type): e.id for e in s.iter_entries(list_name="k")}
        s.remove_entries("k", [by_sig[("a", "pdq")]])
        m.refresh()
        assert _held(m) == {a_id, b_id}  # its SHA-256 is still live
        s.remove_entries("k", [by_sig[("a", "sha256")]])
        m.refresh()
        assert _held(m) == {b_id}
        m.save()
        s.add_entries("k", _entries("a", 1))  # restores both entries
        reopened = Matcher(s)  # the saved tier, caught up from its position
        assert _held(reopened) == {a_id, b_id}
        m.refresh()
        assert _held(m) == {a_id, b_id}
        s.delete_list("k")
        m.refresh()
        assert _held(m) == set() == _keypoint_live(s)


def test_reconciliation_finds_and_repairs_the_keypoint_tier(tmp_path):
    with Store.open(tmp_path / "r.db") as s:
        lid = s.create_list("k").id
        s.add_entries("k", _entries("a", 1) + _entries("b", 2) + _entries("c", 3))
        s.add_local_features("k", [("a", _blob()), ("b", _blob()), ("c", _blob())])
        a_id, b_id = _feature_id(s, lid, "a"), _feature_id(s, lid, "b")
        m = Matcher(s, persist=False)
        assert reconcile(m).keypoints is None  # not loaded yet: nothing to check
        assert len(m.keypoints) == 3
        clean = reconcile(m)
        assert clean.differences == 0 and clean.keypoints is not None
        assert [c.as_dict()["in_sync"] for c in clean.keypoints] == [True]
        assert clean.keypoints[0].store_count == 3
        # damage the tier behind the feed's back: one set lost, one dead set held
        kpf = m.keypoint_feed
        with s.snapshot() as snap:
            kpf.set_states(snap, [(a_id, False)])
        s.remove_entries("k", [e.id for e in s.iter_entries(list_name="k")
                               if e.group_ref == "b"])
        with s.engine.begin() as conn:  # the removals' change rows lost
            conn.execute(sa.text("DELETE FROM changes WHERE op = 'remove'"))
        m.refresh()
        assert _held(m) == {a_id + 2, b_id}
        rep = reconcile(m, repair=False)
        assert (rep.kp_missing, rep.kp_extra) == (1, 1)
        assert [c.as_dict()["in_sync"] for c in rep.keypoints] == [False]
        assert rep.as_dict()["keypoints"]["missing"] == 1
        rep = reconcile(m)
        assert (rep.extra, rep.kp_missing, rep.kp_extra) == (1, 1, 1)  # b's PDQ too
        assert rep.differences == 3
        assert _held(m) == _keypoint_live(s) == {a_id, a_id + 2}
        assert reconcile(m).differences == 0


# -- any interleaving of writers and refreshes (PostgreSQL) -------------------------------
# ops: ("begin",), ("image"|"features"|"remove"|"commit"|"abort", t), ("refresh",)
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("begin")),
        st.tuples(st.sampled_from(["image", "features", "remove", "commit", "abort"]),
                  st.integers(0, 3)),
        st.tuples(st.just("refresh")),
    ),
    min_size=1,
    max_size=30,
)
_db: dict[str, str] = {}
_lists = iter(range(10**6))


def _shared_db(admin: str) -> str:
    if "url" not in _db:
        _db["url"] = create_database(admin)
        Store.open(_db["url"]).close()
    return _db["url"]


def teardown_module() -> None:
    from conftest_pg import server_url

    if "url" in _db:
        drop_database(server_url(), _db.pop("url"))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(ops=_ops)
def test_any_interleaving_leaves_keypoint_tier_equal_to_store(pg_url, ops):  # noqa: F811
    with Store.open(_shared_db(pg_url), migrate=False) as s:
        name = f"k{next(_lists)}"
        lid = s.create_list(name).id
        s.add_entries(name, _entries("g0", 0))
        s.add_local_features(name, [("g0", _blob())])
        m = Matcher(s)
        assert m.keypoints is not None
        open_tx: list[tuple[sa.Connection, sa.RootTransaction]] = []
        n = 100 * lid
        try:
            for op in ops:
                if op[0] == "begin":
                    if len(open_tx) < 4:
                        conn = s.engine.connect()
                        open_tx.append((conn, conn.begin()))
                elif op[0] == "refresh":
                    m.refresh()
                    live = {i for i in _keypoint_live(s) if i in _list_sets(s, lid)}
                    assert _held(m) & _list_sets(s, lid) == live
                elif open_tx:
                    conn, tx = open_tx[op[1] % len(open_tx)]
                    now = utcnow()
                    if op[0] == "image":  # a known image's entries (its keypoints later)
                        n += 1
                        rows = [entry_row(lid, e, now, "t") for e in _entries(f"g{n}", n)]
                        s._write_batch(conn, lid, rows, False, now)
                    elif op[0] == "features":  # keypoints of an image (maybe no entries yet)
                        n += 1
                        s._write_local_features(conn, lid, [(f"g{n - 1}", _blob())], now)
                    elif op[0] == "remove":  # one live entry (nowait: never block the test)
                        row = conn.execute(sa.text(
                            "SELECT id FROM entries WHERE list_id = :l AND removed_at IS NULL "
                            "ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"), {"l": lid}).first()
                        if row is not None:
                            s._remove_in(conn, lid, [row[0]], now)
                    else:
                        (tx.commit if op[0] == "commit" else tx.rollback)()
                        conn.close()
                        open_tx.remove((conn, tx))
        finally:
            for conn, tx in open_tx:
                tx.commit()
                conn.close()
        m.refresh()
        live = {i for i in _keypoint_live(s) if i in _list_sets(s, lid)}
        assert _held(m) & _list_sets(s, lid) == live


def _list_sets(s: Store, lid: int) -> set[int]:
    with s.engine.connect() as conn:
        return {int(i) for (i,) in conn.execute(
            sa.text("SELECT id FROM local_features WHERE list_id = :l"), {"l": lid})}


@pytest.mark.parametrize("legacy_last_row", [True])
def test_keypoint_index_saved_before_the_feed_is_caught_up(tmp_path, legacy_last_row):
    """An index saved by the id-following reader (meta ``last_row``) is caught up once from
    that row; reconciliation then confirms it."""
    with Store.open(tmp_path / "l.db") as s:
        lid = s.create_list("k").id
        s.add_entries("k", _entries("a", 1) + _entries("b", 2))
        s.add_local_features("k", [("a", _blob())])
        m = Matcher(s)
        a_id = _feature_id(s, lid, "a")
        assert _held(m) == {a_id}
        kp_dir = m.index_path.with_name(m.index_path.name + ".kp")
        m.keypoints.save(kp_dir, meta={"last_row": a_id}, replace=True)
        s.add_local_features("k", [("b", _blob())])
        m2 = Matcher(s)
        assert _held(m2) == {a_id, _feature_id(s, lid, "b")}
        assert reconcile(m2).differences == 0
