"""Reconciliation finds every difference between an index and the store, per list, and
repairs it without a rebuild; digests do not depend on order."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest_pg import pg_db, pg_url, store_url  # noqa: F401
from hashwatch.matcher import Matcher, hex_to_codes
from hashwatch.reconcile import entry_digests, reconcile
from hashwatch.store import EntryIn, Store

rng = np.random.default_rng(11)
VALUES = [bytes(rng.integers(0, 256, 32, dtype=np.uint8)).hex() for _ in range(60)]


@pytest.fixture
def store(store_url):  # noqa: F811 - both backends
    s = Store.open(store_url)
    yield s
    s.close()


def _by_list(rep) -> dict[str, dict]:
    return {c.list: c.as_dict() for c in rep.lists}


def test_in_sync_index_reports_no_difference(store):
    store.create_list("a")
    store.create_list("b")
    ra = store.add_entries("a", [EntryIn("pdq", v) for v in VALUES[:30]])
    store.add_entries("b", [EntryIn("pdq", v) for v in VALUES[30:40]] + [EntryIn("md5", "a" * 32)])
    store.remove_entries("a", ra.added_ids[:4])
    m = Matcher(store, persist=False)
    rep = reconcile(m)
    assert rep.differences == 0 and rep.suspect_buckets == 0 and not rep.repaired
    lists = _by_list(rep)
    assert lists["a"]["store_count"] == 26 and lists["b"]["store_count"] == 10  # PDQ only
    assert all(c["in_sync"] for c in lists.values())


def test_every_kind_of_difference_is_found_and_repaired(store):
    store.create_list("a")
    store.create_list("b")
    ra = store.add_entries("a", [EntryIn("pdq", v) for v in VALUES[:20]])
    rb = store.add_entries("b", [EntryIn("pdq", v) for v in VALUES[20:30]])
    m = Matcher(store, persist=False)
    # damage the index behind the feed's back: one entry lost, one stray, one wrong code
    lost, wrong = ra.added_ids[3], rb.added_ids[2]
    m.index.remove(np.array([lost]))
    m.index.add(np.array([10**9]), hex_to_codes([VALUES[50]]))
    m.index.add(np.array([wrong]), hex_to_codes([VALUES[51]]))
    assert not m.match_pdq(VALUES[3], radius=0)
    rep = reconcile(m)
    assert (rep.missing, rep.extra, rep.wrong) == (1, 1, 1) and rep.repaired
    lists = _by_list(rep)
    assert lists["a"]["index_count"] == 19 and not lists["a"]["in_sync"]
    assert lists["b"]["index_count"] == 9 and not lists["b"]["in_sync"]
    assert lists["?"]["index_count"] == 1  # the stray id belongs to no list
    # repaired: matchable again, the stray gone, and a second pass finds nothing
    assert m.match_pdq(VALUES[3], radius=0) and m.match_pdq(VALUES[22], radius=0)
    assert 10**9 not in m.index
    again = reconcile(m)
    assert again.differences == 0 and all(c["in_sync"] for c in _by_list(again).values())


def test_check_only_does_not_repair(store):
    store.create_list("a")
    r = store.add_entries("a", [EntryIn("pdq", v) for v in VALUES[:5]])
    m = Matcher(store, persist=False)
    m.index.remove(np.array([r.added_ids[0]]))
    assert reconcile(m, repair=False).missing == 1
    assert reconcile(m).missing == 1 and reconcile(m).differences == 0


def test_changes_after_the_survey_are_not_reported_as_differences(tmp_path):
    # the index moves on while reconciliation reads: a write between the survey and the
    # confirmation makes a bucket suspect but is no difference
    with Store.open(tmp_path / "r.db") as s:
        s.create_list("a")
        m = Matcher(s, persist=False)
        s.add_entries("a", [EntryIn("pdq", v) for v in VALUES[:10]])  # not refreshed yet
        rep = reconcile(m)
        assert rep.suspect_buckets == 1 and rep.differences == 0
        assert len(m.index) == 10  # caught up by the confirmation step


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 50), seed=st.integers(0, 2**32 - 1))
def test_digest_is_order_independent_and_sensitive(n, seed):
    r = np.random.default_rng(seed)
    ids = r.choice(10**12, size=n, replace=False).astype(np.int64)
    codes = r.integers(0, 256, (n, 32), dtype=np.uint8)
    total = int(entry_digests(ids, codes).sum(dtype=np.uint64))
    perm = r.permutation(n)
    assert int(entry_digests(ids[perm], codes[perm]).sum(dtype=np.uint64)) == total
    flipped = codes.copy()
    flipped[0, r.integers(0, 32)] ^= np.uint8(1 << int(r.integers(0, 8)))
    assert int(entry_digests(ids, flipped).sum(dtype=np.uint64)) != total
    moved = ids.copy()
    moved[0] += 1
    if moved[0] not in ids[1:]:
        assert int(entry_digests(moved, codes).sum(dtype=np.uint64)) != total


def test_service_shows_reconciliation_and_repairs_on_demand(tmp_path):
    from test_service import Svc

    svc = Svc(str(tmp_path / "s.db"))
    try:
        c, h = svc.client, svc.h()
        c.post("/v1/lists", json={"name": "r"}, headers=h)
        ids = c.post("/v1/lists/r/entries", headers=h, json={"entries": [
            {"signal_type": "pdq", "value": v} for v in VALUES[:8]]}).json()["ids"]
        ready = c.get("/v1/health/ready").json()
        assert ready["feed"]["push"] == "poll"  # SQLite: polling only
        # damage this worker's index behind the feed's back, then ask for a check
        c.app.state.service.matcher.index.remove(np.array(ids[:2]))
        rep = c.post("/v1/index/reconcile", headers=h).json()
        assert rep["missing"] == 2 and rep["repaired"]
        assert rep["lists"][0]["list"] == "r" and rep["lists"][0]["store_count"] == 8
        ready = c.get("/v1/health/ready").json()
        assert ready["feed"]["reconcile"]["missing"] == 2
        assert ready["feed"]["reconcile_differences_total"] == 2 and ready["index_size"] == 8
        metrics = c.get("/v1/health/metrics").text
        assert "hashwatch_reconcile_differences_total 2" in metrics
        q = {"hashes": [{"signal_type": "pdq", "value": VALUES[0]}]}
        assert c.post("/v1/match/hashes", json=q, headers=h).json()["results"][0]["matches"]
        # a key without the admin scope may not trigger it
        k = svc.key("m", "match")
        assert c.post("/v1/index/reconcile", headers=svc.h(k)).status_code == 403
        # readiness names its worker; a reconciliation request this worker sent (PostgreSQL
        # NOTIFY, payload: its id) does not run it again, another worker's does
        from hashwatch.store.listen import RECONCILE_CHANNEL

        me = ready["worker"]
        assert me["pid"] == os.getpid() and me["id"]
        state = c.app.state.service
        runs = state.counters["reconcile_runs"]
        state._reconcile_wake.clear()
        state._on_notify(RECONCILE_CHANNEL, me["id"])
        assert not state._reconcile_wake.is_set()
        state._on_notify(RECONCILE_CHANNEL, "another-worker")
        end = time.monotonic() + 20
        while state.counters["reconcile_runs"] == runs and time.monotonic() < end:
            time.sleep(0.05)
        assert state.counters["reconcile_runs"] == runs + 1
    finally:
        svc.close()
