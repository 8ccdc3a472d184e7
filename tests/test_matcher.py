"""Matcher: exact first, then PDQ; the index follows the store's change feed."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from hashwatch.categories import Category
from hashwatch.matcher import Matcher
from hashwatch.store import EntryIn, Store


def flip(hex_value: str, bits: list[int]) -> str:
    v = int(hex_value, 16)
    for b in bits:
        v ^= 1 << b
    return f"{v:064x}"


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "m.db")
    s.create_list("a", category_scheme="uk")
    s.create_list("b", category_scheme="vics")
    yield s
    s.close()


class Rec:
    def __init__(self, pdq=None, md5=None, quality=100):
        self.md5, self.sha1, self.sha256 = md5, None, None
        self.pdq, self.pdq_quality = pdq, quality


rng = np.random.default_rng(7)
BASE = [bytes(rng.integers(0, 256, 32, dtype=np.uint8)).hex() for _ in range(50)]


def test_near_and_exact_matches_with_conflicting_categories(store):
    store.add_entries(
        "a",
        [EntryIn("pdq", h, Category("uk", "A"), source_ref=f"a{i}") for i, h in enumerate(BASE)],
    )
    store.add_entries(
        "b",
        [
            EntryIn("pdq", BASE[3], Category("vics", "2"), source_ref="b3"),
            EntryIn("md5", "f" * 32, Category("vics", "1"), source_ref="m"),
        ],
    )
    m = Matcher(store)
    q = flip(BASE[3], [0, 5, 100, 200])
    res = m.match_hashes(Rec(pdq=q))
    assert [(x.list, x.ref, x.distance, x.category) for x in res] == [
        ("a", "a3", 4, "uk:A"),
        ("b", "b3", 4, "vics:2"),
    ]
    # boundary: 31 bits matches, 32 does not
    assert m.match_hashes(Rec(pdq=flip(BASE[7], list(range(31)))))[0].distance == 31
    assert m.match_hashes(Rec(pdq=flip(BASE[7], list(range(32))))) == []
    # low quality queries are not matched perceptually
    assert m.match_hashes(Rec(pdq=BASE[7], quality=49)) == []
    ex = m.match_hashes(Rec(md5="f" * 32))
    assert [(x.exact, x.signal, x.list) for x in ex] == [(True, "md5", "b")]
    assert m.match_hashes(Rec(pdq=BASE[3]), lists=["b"])[0].list == "b"


def test_index_follows_adds_and_removes_without_rebuild(store, tmp_path):
    r = store.add_entries("a", [EntryIn("pdq", h) for h in BASE[:10]])
    m = Matcher(store)
    idx_file = m.index_path
    assert idx_file is not None and idx_file.exists()
    assert stat.S_IMODE(os.stat(idx_file).st_mode) == 0o600
    first_index = m.index
    store.add_entries("a", [EntryIn("pdq", BASE[20])])
    assert m.match_hashes(Rec(pdq=BASE[20])) == []  # not yet refreshed
    assert m.refresh() == 1
    assert m.index is first_index  # updated in place, not rebuilt
    assert m.match_hashes(Rec(pdq=BASE[20]))[0].distance == 0
    store.remove_entries("a", [r.added_ids[0]])
    m.refresh()
    assert m.match_hashes(Rec(pdq=BASE[0])) == []
    # re-adding restores
    store.add_entries("a", [EntryIn("pdq", BASE[0])])
    m.refresh()
    assert len(m.match_hashes(Rec(pdq=BASE[0]))) == 1
    m.save()
    # a new matcher loads the saved index and replays only what changed since
    store.add_entries("a", [EntryIn("pdq", BASE[30])])
    m2 = Matcher(store)
    assert len(m2.index) == 12
    assert m2.match_hashes(Rec(pdq=BASE[30]))[0].distance == 0
    with store.snapshot() as snap:
        assert m2.position == snap.position


def test_disabled_list_stops_matching_without_index_change(store):
    store.add_entries("a", [EntryIn("pdq", BASE[1])])
    m = Matcher(store)
    store.set_list_enabled("a", False)
    assert m.match_hashes(Rec(pdq=BASE[1])) == []
    store.set_list_enabled("a", True)
    assert len(m.match_hashes(Rec(pdq=BASE[1]))) == 1


def test_corrupt_index_file_is_rebuilt(store):
    store.add_entries("a", [EntryIn("pdq", h) for h in BASE[:5]])
    m = Matcher(store)
    m.index_path.write_bytes(b"garbage")
    m2 = Matcher(store)
    assert len(m2.index) == 5
    assert m2.match_hashes(Rec(pdq=BASE[4]))[0].distance == 0


def test_robust_views_match_edits_and_plain_lists_still_work(tmp_path):
    """Known images added with their views; mirrored, bordered and cropped copies match,
    unrelated pictures don't; a partner's plain PDQ list still answers the dihedral views."""
    from PIL import Image, ImageOps

    from hashwatch import robust
    from hashwatch.demo import demo_images
    from hashwatch.hashing import hash_file
    from hashwatch.lists import add_records

    imgs = demo_images()
    with Store.open(tmp_path / "r.db") as s:
        s.create_list("known")
        s.create_list("plain")
        recs = [hash_file(p, extras=robust.known_extras) for p in imgs[:4]]
        res = add_records(s, "known", recs)
        assert res.files == 4 and res.local_features == 4
        s.add_entries("plain", [EntryIn("pdq", r.pdq, source_ref="p" + r.path[-9:])
                                for r in recs])
        m = Matcher(s)
        assert m.local_enabled
        src = Image.open(imgs[1]).convert("RGB")
        edits = {
            "mirror": ImageOps.mirror(src),
            "border": ImageOps.expand(src, border=80, fill=(0, 0, 0)),
            "crop": src.crop((60, 40, src.width - 20, src.height - 50)),
        }
        for name, im in edits.items():
            path = tmp_path / f"{name}.png"
            im.save(path)
            rec = hash_file(path, extras=m.query_extras())
            found = m.match_hashes(rec, lists=["known"])
            assert found and found[0].ref == imgs[1].name, name
            if name == "mirror":
                plain = m.match_hashes(rec, lists=["plain"])
                assert plain and plain[0].route.startswith("full") and plain[0].distance <= 31
            # the plain rule alone misses these edits
            assert m.match_pdq(rec.pdq, rec.pdq_quality, lists=["known"]) == [], name
        for other in imgs[6:10]:
            rec = hash_file(other, extras=m.query_extras())
            assert m.match_hashes(rec) == [], other.name


def _keypoint_only_edit(src_path, out_path):
    """A copy the hash tier misses: turned by 12 degrees, then an off-centre crop."""
    from PIL import Image

    im = Image.open(src_path).convert("RGB").rotate(12, resample=Image.Resampling.BICUBIC)
    w, h = im.size
    im.crop((int(w * 0.25), int(h * 0.1), int(w * 0.95), int(h * 0.85))).save(out_path)


def test_keypoint_tier_through_the_saved_index(tmp_path):
    """The keypoint tier finds what the hash tier cannot, from the index saved beside the
    database (and from a read-only mapped copy of it), marks it for review, and follows
    removals and restores of the known image's entries."""
    from hashwatch import robust
    from hashwatch.demo import demo_images
    from hashwatch.hashing import hash_file
    from hashwatch.lists import add_records

    imgs = demo_images()[:6]
    edit = tmp_path / "edit.png"
    _keypoint_only_edit(imgs[2], edit)
    with Store.open(tmp_path / "k.db") as s:
        s.create_list("known")
        add_records(s, "known", [hash_file(p, extras=robust.known_extras) for p in imgs])
        m = Matcher(s)
        rec = hash_file(edit, extras=m.query_extras())
        assert m.match_views([("full", rec.pdq, rec.pdq_quality),
                              *rec.extras["pdq_variants"]]) == []  # not the hash tier
        found = m.match_hashes(rec)
        assert [x.ref for x in found] == [imgs[2].name]
        # turned 12 degrees and cropped: a similarity, not mirrored
        assert found[0].route == "local/orb:similarity"
        assert found[0].inliers >= robust.LOCAL_MIN_INLIERS
        d = found[0].as_dict()
        assert d["tier"] == "keypoint" and d["confidence"] == "review"
        kp_dir = m.index_path.with_name(m.index_path.name + ".kp")
        assert (kp_dir / "manifest.json").exists()
        # a worker: mapped, read-only, same answer; it never writes the files
        before = (kp_dir / "manifest.json").read_bytes()
        w = Matcher(s, mmap=True, writable=False)
        assert [x.ref for x in w.match_hashes(rec)] == [imgs[2].name]
        # removing the image's entries takes it out of the keypoint tier; restoring brings it
        ids = [e.id for e in s.iter_entries(list_name="known") if e.source_ref == imgs[2].name]
        s.remove_entries("known", ids)
        m.refresh()
        assert m.match_hashes(rec) == []
        w.refresh()
        assert w.match_hashes(rec) == []
        add_records(s, "known", [hash_file(imgs[2], extras=robust.known_extras)])
        m.refresh()
        assert [x.ref for x in m.match_hashes(rec)] == [imgs[2].name]
        w.refresh()
        assert [x.ref for x in w.match_hashes(rec)] == [imgs[2].name]
        w.save()
        assert (kp_dir / "manifest.json").read_bytes() == before  # a worker never writes
        m.save()
        assert (kp_dir / "manifest.json").read_bytes() != before  # the owner does
        reopened = Matcher(s, mmap=True, writable=False)
        assert [x.ref for x in reopened.match_hashes(rec)] == [imgs[2].name]
        assert len(reopened.keypoints) == 6
        # unrelated pictures stay unmatched
        for other in demo_images()[8:11]:
            assert m.match_hashes(hash_file(other, extras=m.query_extras())) == []


def test_matching_in_worker_processes_gives_the_same_results(tmp_path):
    """``match_paths`` with 2 worker processes (indexes mapped in each) answers exactly as
    matching in this process does, keypoint tier included."""
    import shutil

    from hashwatch import robust
    from hashwatch.demo import demo_images
    from hashwatch.hashing import hash_file
    from hashwatch.lists import add_records
    from hashwatch.matchwork import MatchSpec, match_bytes, match_paths

    imgs = demo_images()
    ev = tmp_path / "evidence"
    ev.mkdir()
    shutil.copy(imgs[1], ev / "copy.jpg")
    _keypoint_only_edit(imgs[3], ev / "turned.png")
    shutil.copy(imgs[9], ev / "other.jpg")
    (ev / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    with Store.open(tmp_path / "w.db") as s:
        s.create_list("known")
        add_records(s, "known", [hash_file(p, extras=robust.known_extras) for p in imgs[:5]])
        spec = MatchSpec.for_store(s)
        assert "s3cret" not in repr(MatchSpec("postgresql+psycopg://u:s3cret@h/db"))
        one = {r.path: r for r in match_paths(spec, [ev], workers=1)}
        two = {r.path: r for r in match_paths(spec, [ev], workers=2)}
    assert one.keys() == two.keys() and len(one) == 4
    for path, r in one.items():
        assert [m.as_dict() for m in r.matches] == [m.as_dict() for m in two[path].matches]
        assert r.error == two[path].error
    assert one[str(ev / "copy.jpg")].matches[0].exact
    turned = one[str(ev / "turned.png")].matches
    assert [m.ref for m in turned] == [imgs[3].name] and turned[0].tier == "keypoint"
    assert one[str(ev / "other.jpg")].matches == []
    assert one[str(ev / "broken.jpg")].error and not one[str(ev / "broken.jpg")].matches
    # bytes in (an upload, an archive member): same answer
    r = match_bytes(spec, (ev / "turned.png").read_bytes(), "up.png")
    assert r.path == "up.png" and [m.ref for m in r.matches] == [imgs[3].name]


def test_match_files_with_workers_matches_in_the_workers(tmp_path):
    """The public ``Matcher.match_files(workers=2)`` takes the ``hashwatch match`` path (hash
    and match in the workers, :mod:`hashwatch.matchwork`) and answers as ``workers=1`` does,
    keypoint tier and list filter included."""
    import shutil

    from hashwatch import robust
    from hashwatch.demo import demo_images
    from hashwatch.hashing import hash_file
    from hashwatch.lists import add_records

    imgs = demo_images()
    ev = tmp_path / "evidence"
    ev.mkdir()
    shutil.copy(imgs[1], ev / "copy.jpg")
    _keypoint_only_edit(imgs[3], ev / "turned.png")
    shutil.copy(imgs[9], ev / "other.jpg")
    with Store.open(tmp_path / "w.db") as s:
        s.create_list("known")
        s.create_list("second")
        add_records(s, "known", [hash_file(p, extras=robust.known_extras) for p in imgs[:5]])
        add_records(s, "second", [hash_file(imgs[1], extras=robust.known_extras)])
        m = Matcher(s)
        for lists in (None, ["second"]):
            one = [r.as_dict() for r in m.match_files([ev], lists, workers=1)]
            two = [r.as_dict() for r in m.match_files([ev], lists, workers=2)]
            assert one == two and len(one) == 3
        by_name = {Path(r["path"]).name: r for r in two}
        assert {x["list"] for x in by_name["copy.jpg"]["matches"]} == {"second"}
        turned = [r for r in m.match_files([ev], workers=2) if r.path.endswith("turned.png")]
        assert [x.tier for x in turned[0].matches] == ["keypoint"]


def test_library_threads_are_limited_in_a_worker():
    """``limit_library_threads`` leaves OpenCV and every BLAS/OpenMP pool numpy or FAISS
    loaded at one thread (checked in a fresh interpreter, where they start with one thread
    per core)."""
    import subprocess
    import sys

    code = (
        "import numpy, cv2, faiss\n"
        "from threadpoolctl import threadpool_info\n"
        "from hashwatch.matchwork import limit_library_threads\n"
        "limit_library_threads()\n"
        "pools = [p['num_threads'] for p in threadpool_info()]\n"
        "import json\n"
        "print(json.dumps([cv2.getNumThreads(), faiss.omp_get_max_threads(), pools]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={k: v for k, v in os.environ.items()
                                          if not k.endswith("_NUM_THREADS")}).stdout
    cv, omp, pools = json.loads(out)
    assert cv == 1 and omp == 1 and pools and set(pools) == {1}
