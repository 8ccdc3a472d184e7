"""A PDQ index that holds only some of the known images' views (`Matcher(hash_views=...)`,
`serve --hash-views`): what is held follows the store through builds, the change feed,
saves and reconciliation, and the views left out are never matched by the hash tier."""

from __future__ import annotations

from collections import Counter

import pytest

from conftest_pg import pg_db, pg_url, store_url  # noqa: F401  (fixtures: both backends)
from hashwatch import lists
from hashwatch.demo import demo_images
from hashwatch.matcher import Matcher, check_views
from hashwatch.reconcile import reconcile
from hashwatch.store import EntryIn, Store

HELD = ("full", "trim", "crop60", "crop50")


def _held_ids(store: Store, views: set[str]) -> set[int]:
    return {e.id for e in store.iter_entries(list_name="k")
            if e.signal_type == "pdq" and (e.variant or "full") in views}


def _index_ids(m: Matcher) -> set[int]:
    return {int(i) for i in m.index.range(0, 2**62)[0]}


@pytest.fixture
def store(store_url):  # noqa: F811 - SQLite and PostgreSQL
    with Store.open(store_url) as s:
        s.create_list("k")
        lists.add_files(s, "k", demo_images()[:6])
        yield s


def test_index_holds_only_the_named_views_through_build_feed_and_save(store, tmp_path):
    views = Counter(e.variant or "full" for e in store.iter_entries(list_name="k")
                    if e.signal_type == "pdq")
    assert views["crop90"] and views["crop60"]  # the store holds views the index will not
    m = Matcher(store, hash_views=HELD)
    assert _index_ids(m) == _held_ids(store, set(HELD))
    # the feed: new images add only their held views; a removal of a left-out view is a no-op
    lists.add_files(store, "k", demo_images()[6:9])
    m.refresh()
    assert _index_ids(m) == _held_ids(store, set(HELD))
    gone = [e.id for e in store.iter_entries(list_name="k") if e.variant in ("crop90", "crop60")]
    store.remove_entries("k", gone)
    m.refresh()
    assert _index_ids(m) == _held_ids(store, set(HELD)) and not _index_ids(m) & set(gone)
    # plain entries (no view name) are always held
    store.add_entries("k", [EntryIn("pdq", f"{7:064x}")])
    m.refresh()
    assert m.match_pdq(f"{7:064x}", radius=0)
    # reconciliation compares like with like: nothing missing, nothing extra
    rep = reconcile(m)
    assert (rep.missing, rep.extra, rep.wrong) == (0, 0, 0)
    m.save()
    # reopened with the same views: loaded as saved; with other views: rebuilt for them
    again = Matcher(store, hash_views=HELD)
    assert _index_ids(again) == _index_ids(m)
    every = Matcher(store)
    assert _index_ids(every) == _held_ids(store, {"full", "trim", "crop90", "crop80",
                                                   "crop70", "crop60", "crop50"}) | {
        e.id for e in store.iter_entries(list_name="k") if e.value == f"{7:064x}"}
    assert len(_index_ids(every)) > len(_index_ids(m))
    back = Matcher(store, hash_views=HELD)
    assert _index_ids(back) == _index_ids(m)


def test_a_left_out_view_is_not_matched_by_the_hash_tier(store):
    from hashwatch.matcher import hex_to_codes

    crop = next(e for e in store.iter_entries(list_name="k") if e.variant == "crop90")
    m_all, m_few = Matcher(store, persist=False), Matcher(store, persist=False, hash_views=HELD)
    code = hex_to_codes([crop.value])[0]
    assert crop.id in {int(i) for i, _d in m_all.index.search(code, 0)}
    assert crop.id not in {int(i) for i, _d in m_few.index.search(code, 0)}


def test_unknown_view_names_are_refused(store):
    with pytest.raises(ValueError, match="crop55"):
        Matcher(store, hash_views=("full", "crop55"))
    assert check_views(None) is None and check_views(["full"]) == frozenset({""})


def test_the_service_holds_the_views_it_is_configured_with(store, tmp_path, monkeypatch):
    pytest.importorskip("fastapi")
    from hashwatch.service.settings import Settings
    from test_service import Svc

    monkeypatch.setenv("HASHWATCH_HASH_VIEWS", "full, crop50")
    assert Settings.from_env(db="x.db").hash_views == ["full", "crop50"]
    monkeypatch.delenv("HASHWATCH_HASH_VIEWS")
    svc = Svc(store.engine.url.render_as_string(hide_password=False), hash_views=list(HELD),
              index_path=str(tmp_path / "svc.idx"))
    try:
        m = svc.client.app.state.service.matcher
        assert m.hash_views == frozenset({"", "trim", "crop60", "crop50"})
        ready = svc.client.get("/v1/health/ready").json()
        assert ready["hash_views"] == sorted(HELD)
        assert _index_ids(m) == _held_ids(store, set(HELD))
    finally:
        svc.close()


def test_serve_refuses_an_unknown_view_before_starting(tmp_path):
    pytest.importorskip("fastapi")
    from typer.testing import CliRunner

    from hashwatch.cli import app

    res = CliRunner().invoke(app, ["serve", "--db", str(tmp_path / "s.db"),
                                   "--hash-views", "full,crop55"])
    assert res.exit_code == 2 and "crop55" in res.output
    res = CliRunner().invoke(app, ["serve", "--db", str(tmp_path / "s.db"), "--hash-views", ","])
    assert res.exit_code == 2 and "no view named" in res.output


def test_views_given_as_a_string_or_empty_are_refused(store, tmp_path):
    with pytest.raises(ValueError, match="list of names"):
        Matcher(store, hash_views="full,trim")
    with pytest.raises(ValueError, match="no hash view"):
        Matcher(store, hash_views=[])
    m = Matcher(store, persist=False, hash_views=HELD)
    assert m.views_held() == sorted(HELD) and Matcher(store, persist=False).views_held() is None


def test_each_set_of_views_has_its_own_default_index_and_shares_the_keypoints(tmp_path,
                                                                             caplog):
    # a process holding fewer views (match/triage/scan --hash-views) never replaces the file
    # the others map: each set of views has its own default PDQ index file beside the
    # database, and all of them use the one keypoint folder
    import logging

    from hashwatch.matcher import index_path_for, keypoint_path_for

    db = tmp_path / "v.db"
    with Store.open(str(db)) as s:
        s.create_list("k")
        lists.add_files(s, "k", demo_images()[:4])
        few, every = Matcher(s, hash_views=HELD), Matcher(s)
        assert few.index_path != every.index_path
        assert few.index_path == index_path_for(s, reversed(HELD))  # order does not matter
        assert few.index_path.name == "v.db.pdq-crop50+crop60+full+trim.idx"
        assert every.index_path.name == "v.db.pdq.idx"
        assert (keypoint_path_for(few.index_path) == keypoint_path_for(every.index_path)
                == tmp_path / "v.db.pdq.idx.kp")
        few.save()
        every.save()
        with caplog.at_level(logging.INFO, logger="hashwatch"):
            again_few, again_every = Matcher(s, hash_views=HELD), Matcher(s)
        assert not [r for r in caplog.records if "rebuilding" in r.getMessage()]
        assert _index_ids(again_few) == _index_ids(few)
        assert _index_ids(again_every) == _index_ids(every)
    # an explicit index path keeps its own keypoint folder beside it
    assert keypoint_path_for(tmp_path / "x.idx") == tmp_path / "x.idx.kp"


def test_match_triage_and_scan_take_hash_views(tmp_path):
    import json

    from typer.testing import CliRunner

    from hashwatch.cli import app

    db = tmp_path / "c.db"
    with Store.open(str(db)) as s:
        s.create_list("k")
        lists.add_files(s, "k", demo_images()[:3])
    img = demo_images()[0]
    run = CliRunner().invoke
    res = run(app, ["match", str(img), "--db", str(db), "--hash-views", "full,trim"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.splitlines()[0])["matches"]  # the known image itself
    assert (tmp_path / "c.db.pdq-full+trim.idx").exists()
    assert not (tmp_path / "c.db.pdq.idx").exists()
    res = run(app, ["triage", "--case", "case1", str(img), "--db", str(db), "--hash-views",
                    "full,trim", "--out", str(tmp_path / "t"), "--workers", "1", "--no-pdf"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "t" / "report.json").read_text())
    assert report["methods"]["hash_views"] == ["full", "trim"]
    assert "held only these views" in (tmp_path / "t" / "report.html").read_text()
    for cmd in (["match", str(img)],
                ["triage", "--case", "case2", str(img), "--out", str(tmp_path / "u")],
                ["scan", "run", str(tmp_path / "m"), "--out", str(tmp_path / "o")],
                ["serve"]):
        res = run(app, [*cmd, "--db", str(db), "--hash-views", "full,crop55"])
        assert res.exit_code == 2 and "crop55" in res.output, (cmd, res.output)
    # the environment variable is read by every command too
    res = run(app, ["match", str(img), "--db", str(db)],
              env={"HASHWATCH_HASH_VIEWS": "full,crop55"})
    assert res.exit_code == 2 and "HASHWATCH_HASH_VIEWS" in res.output
