"""Moving pictures end to end: animated GIF/WebP/APNG frames, video display rotation and robust
frame views, bounded decoding, pdq_matchable, and vPDQ (hashing, index, matching, the CLI and
triage). Every input is generated here (tests/media_gen.py)."""

from __future__ import annotations

import csv
import json
import os
import random
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from hashwatch.cli import app
from hashwatch.known import group_vpdq, vpdq_entries
from hashwatch.media import FrameLimits, MediaError, hash_media
from hashwatch.media.vpdq_index import VpdqIndex
from hashwatch.signals import get_signal_type
from hashwatch.signals.base import InvalidSignalValue
from hashwatch.signals.vpdq import (
    VpdqFeature,
    format_vpdq,
    match_percentages,
    parse_vpdq,
)
from hashwatch.store import Store
from media_gen import (
    animation,
    boxed,
    scenes,
    set_rotation_90,
    still_video,
    synth,
    write_video,
)

runner = CliRunner()


def run(*args: str) -> str:
    res = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.stdout


def records(out: str) -> dict[str, dict]:
    recs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return {Path(r["path"]).name: r for r in recs}


@pytest.fixture(scope="module")
def known(tmp_path_factory) -> tuple[Path, Path, Image.Image]:
    """A list with one known picture; returns (db, folder, picture)."""
    d = tmp_path_factory.mktemp("known")
    pic = synth()
    pic.save(d / "known.png")
    db = d / "k.db"
    run("lists", "create", "known", "--db", db)
    run("lists", "add", "known", d / "known.png", "--db", db)
    return db, d, pic


# --- animated images ------------------------------------------------------------------------

@pytest.mark.parametrize("fmt,ext", [("GIF", "gif"), ("WEBP", "webp"), ("PNG", "png")])
def test_known_picture_in_a_later_frame_is_found(known, tmp_path, fmt, ext) -> None:
    db, _d, pic = known
    card = Image.new("RGB", pic.size, (128, 128, 128))
    other = synth(seed=99)
    animation(tmp_path / f"later.{ext}", [card, other, pic], [500, 400, 3000], fmt)
    animation(tmp_path / f"without.{ext}", [card, other], [500, 3000], fmt)
    recs = records(run("match", tmp_path / f"later.{ext}", tmp_path / f"without.{ext}",
                       "--db", db))
    hit = recs[f"later.{ext}"]["matches"]
    assert len(hit) == 1 and hit[0]["ref"] == "known.png"
    assert hit[0]["frame"] == {"index": 2, "t": 0.9}  # which frame, and when it shows
    assert recs[f"without.{ext}"]["matches"] == []


def test_animation_frames_are_distinct_and_bounded(tmp_path) -> None:
    pics = [synth(96, 64, seed=s) for s in range(40)]
    # a frame repeated later is hashed once
    animation(tmp_path / "rep.gif", [pics[0], pics[1], pics[0], pics[2]], [100] * 4, "GIF")
    m = hash_media((tmp_path / "rep.gif").read_bytes(), "animation")
    assert [f.index for f in m.frames] == [0, 1, 3] and m.info.frame_count == 4
    assert m.info.duration == 0.4
    # more frames than may be kept: thinned evenly over the whole animation
    animation(tmp_path / "long.gif", pics, [100] * 40, "GIF")
    data = (tmp_path / "long.gif").read_bytes()
    m = hash_media(data, "animation", limits=FrameLimits(every=0, max_samples=8))
    assert 4 <= len(m.frames) <= 8 and m.frames[0].index == 0 and m.frames[-1].index >= 30
    assert m.info.limited == "max_samples"  # thinned: the file was covered only in part
    # decode bounds stop hostile files: frames, and pixels x frames
    m = hash_media(data, "animation", limits=FrameLimits(every=0, max_frames=5))
    assert m.info.limited == "max_frames" and m.info.frame_count == 5
    m = hash_media(data, "animation", limits=FrameLimits(every=0, max_pixel_frames=96 * 64 * 3))
    assert m.info.limited == "max_pixel_frames" and m.info.frame_count == 3
    with pytest.raises(MediaError):
        hash_media(data, "animation", limits=FrameLimits(max_frame_pixels=1000))


def test_known_picture_late_in_a_long_animation_is_found(known, tmp_path) -> None:
    """Hundreds of distinct frames (more than the robust views are computed for) and the known
    picture near the end: every distinct frame is hashed with the default bounds."""
    db, _d, pic = known
    small = pic.resize((96, 64))
    rnd = random.Random(7)
    noise = [Image.frombytes("RGB", (6, 4), rnd.randbytes(72)).resize((96, 64)) for _ in range(900)]
    frames = noise[:850] + [small] + noise[850:]
    animation(tmp_path / "long.gif", frames, [40] * len(frames), "GIF")
    rec = records(run("match", tmp_path / "long.gif", "--db", db))["long.gif"]
    assert [m["frame"]["index"] for m in rec["matches"]] == [850]
    m = hash_media((tmp_path / "long.gif").read_bytes(), "animation")
    assert m.info.limited is None and m.info.frame_count == len(frames) > 600


def test_known_picture_shown_briefly_between_samples_is_found(known, tmp_path) -> None:
    """Half a second of the known picture inside a slide show, between two of the one-per-
    second samples: the cut into it is kept as an extra frame; the vPDQ stays one per second."""
    db, _d, pic = known
    show = scenes(5, 6, size=pic.size)
    write_video(tmp_path / "flash.mp4", lambda i: pic if 23 <= i <= 27 else show(i), 60)
    write_video(tmp_path / "plain.mp4", show, 60)
    recs = records(run("match", tmp_path / "flash.mp4", tmp_path / "plain.mp4", "--db", db))
    assert {m["ref"] for m in recs["flash.mp4"]["matches"]} == {"known.png"}
    assert 2.3 <= recs["flash.mp4"]["matches"][0]["frame"]["t"] <= 2.7
    assert recs["plain.mp4"]["matches"] == []
    m = hash_media(tmp_path / "flash.mp4", "video")
    assert [round(f.timestamp) for f in m.vpdq] == [0, 1, 2, 3, 4, 5]  # the reference's sampling
    assert any(f.cut for f in m.frames) and len(m.frames) <= 6 + 4


# --- videos: rotation, robust views, triage --------------------------------------------------

@pytest.fixture(scope="module")
def videos(known, tmp_path_factory) -> Path:
    _db, _d, pic = known
    ev = tmp_path_factory.mktemp("videos")
    stored = pic.transpose(Image.Transpose.ROTATE_90)  # pixels turned 90 degrees ccw
    still_video(ev / "upright.mp4", pic)
    set_rotation_90(still_video(ev / "rotated_tag90.mp4", stored))
    still_video(ev / "rotated_notag.mp4", stored)
    still_video(ev / "letterboxed.mp4", boxed(pic, 1.0))  # bars above and below
    still_video(ev / "pillarboxed.mp4", boxed(pic, 2.2))  # bars left and right
    set_rotation_90(still_video(ev / "pillarboxed_tag90.mp4",
                                boxed(pic, 2.2).transpose(Image.Transpose.ROTATE_90)))
    still_video(ev / "unrelated.mp4", synth(seed=3))
    return ev


FOUND = ["upright.mp4", "rotated_tag90.mp4", "rotated_notag.mp4", "letterboxed.mp4",
         "pillarboxed.mp4", "pillarboxed_tag90.mp4"]


def test_display_rotation_is_honoured(videos) -> None:
    recs = records(run("hash", videos / "upright.mp4", videos / "rotated_tag90.mp4",
                       videos / "rotated_notag.mp4"))
    up, tag, notag = (recs[n] for n in ("upright.mp4", "rotated_tag90.mp4", "rotated_notag.mp4"))
    assert (tag["width"], tag["height"], tag["rotation"]) == (384, 256, 270)
    assert (notag["width"], notag["height"], notag["rotation"]) == (256, 384, 0)
    assert get_signal_type("pdq").distance(up["pdq"], tag["pdq"]) <= 4
    assert get_signal_type("pdq").distance(up["pdq"], notag["pdq"]) > 31
    assert up["kind"] == "video" and len(up["frames"]) == 3 and len(up["vpdq"]) == 3


def test_turned_and_boxed_videos_of_a_known_picture_are_found(known, videos) -> None:
    db, _d, _pic = known
    recs = records(run("match", videos, "--db", db))
    for name in FOUND:
        ms = recs[name]["matches"]
        assert ms and ms[0]["ref"] == "known.png" and ms[0]["frame"]["t"] == 0.0, name
    assert recs["unrelated.mp4"]["matches"] == []
    assert recs["rotated_notag.mp4"]["matches"][0]["route"].startswith("full:rot")
    assert recs["letterboxed.mp4"]["matches"][0]["route"].startswith("trim")


def test_all_black_image_is_not_pdq_matchable(known, tmp_path) -> None:
    db, d, _pic = known
    Image.new("RGB", (200, 150), (0, 0, 0)).save(tmp_path / "black.png")
    recs = records(run("match", tmp_path / "black.png", d / "known.png", "--db", db))
    black = recs["black.png"]
    assert black["matches"] == [] and black["pdq_matchable"] is False
    assert "below the matching floor" in black["pdq_reason"]
    assert recs["known.png"]["pdq_matchable"] is True and recs["known.png"]["matches"]


def test_video_decode_bounds_and_bad_input(tmp_path) -> None:
    v = write_video(tmp_path / "s.mp4", scenes(1, 4), 40)
    m = hash_media(v, "video", limits=FrameLimits(max_frames=12))
    assert m.info.limited == "max_frames" and m.info.frame_count == 12 and len(m.frames) == 2
    m = hash_media(v, "video", limits=FrameLimits(max_pixel_frames=320 * 240 * 5))
    assert m.info.limited == "max_pixel_frames" and m.info.frame_count == 5
    m = hash_media(v, "video", limits=FrameLimits(every=0.1, max_samples=10))
    assert len(m.frames) <= 10 and m.frames[-1].t >= 3.0  # thinned, still spans the clip
    (tmp_path / "junk.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 500)
    recs = records(run("hash", tmp_path / "junk.mp4"))
    assert recs["junk.mp4"]["error"] and recs["junk.mp4"]["sha256"]


# --- vPDQ -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("clips")
    src = scenes(1, 10)
    write_video(d / "known_clip.mp4", src, 100)
    write_video(d / "reencoded.mp4", src, 100, codec="libx264", bit_rate=300_000)
    write_video(d / "trimmed.mp4", lambda i: src(i + 15), 70)  # 1.5 s off each end
    write_video(d / "resized.mp4", lambda i: src(i).resize((160, 120)), 100)
    write_video(d / "letterboxed.mp4", lambda i: boxed(src(i).resize((240, 180)), 16 / 9), 100)
    write_video(d / "unrelated_clip.mp4", scenes(2, 10), 100)
    return d


def test_vpdq_known_video_found_after_edits(clips, tmp_path) -> None:
    db = tmp_path / "v.db"
    run("lists", "create", "videos", "--db", db)
    run("lists", "add", "videos", clips / "known_clip.mp4", "--db", db)
    queries = ["reencoded.mp4", "trimmed.mp4", "resized.mp4", "letterboxed.mp4",
               "unrelated_clip.mp4"]
    recs = records(run("match", *[clips / q for q in queries], "--db", db))
    for q in queries[:-1]:
        v = [m for m in recs[q]["matches"] if m["signal"] == "vpdq"]
        assert len(v) == 1 and v[0]["ref"] == "known_clip.mp4", q
        assert v[0]["query_match_percent"] >= 80, (q, v[0])
    boxed_ = next(m for m in recs["letterboxed.mp4"]["matches"] if m["signal"] == "vpdq")
    assert boxed_["route"] == "vpdq:views"  # the frames' bars trimmed: not plain vPDQ
    assert "route" not in next(m for m in recs["resized.mp4"]["matches"] if m["signal"] == "vpdq")
    trimmed = next(m for m in recs["trimmed.mp4"]["matches"] if m["signal"] == "vpdq")
    assert 55 <= trimmed["compared_match_percent"] <= 90  # 7 of 10 s are in the query
    assert not [m for m in recs["unrelated_clip.mp4"]["matches"] if m["signal"] == "vpdq"]
    # thresholds are the caller's: demanding all of the known video rejects the trimmed copy
    recs = records(run("match", clips / "trimmed.mp4", "--vpdq-compared-percent", "95",
                       "--db", db))
    assert not [m for m in recs["trimmed.mp4"]["matches"] if m["signal"] == "vpdq"]


def test_vpdq_values_parse_and_round_trip() -> None:
    h = "a" * 64
    fs = parse_vpdq(json.dumps([f"{h},100,0.000", f"{'b' * 64},49,1.000"]))
    assert fs == [VpdqFeature(h, 100, 0.0), VpdqFeature("b" * 64, 49, 1.0)]
    assert parse_vpdq(format_vpdq(fs)) == fs
    old = json.dumps({"1": {"hash": "b" * 64, "quality": 49, "timestamp": 1.0},
                      "0": {"hash": h, "quality": 100, "timestamp": 0.0}})
    assert parse_vpdq(old) == fs
    assert parse_vpdq(f"0,{h},100,0.0\n1,{'b' * 64},49,1.0\n") == fs
    st_ = get_signal_type("vpdq")
    assert st_.validate(f"{h.upper()},100,0") == f"{h},100,0.000"
    for bad in ("", "zz,1,1", f"{h},101,0", f"{h},50,-1", f"{h},50", "[]"):
        with pytest.raises(InvalidSignalValue):
            parse_vpdq(bad) if bad.startswith("[") or bad == "" else st_.validate(bad)
    # list entries: one per frame, regrouped for export
    ents = vpdq_entries(fs, group_ref="g1") + vpdq_entries(fs[:1], group_ref="g2")
    assert len(ents) == 3 and ents[0].variant != ents[2].variant

    class Row:
        def __init__(self, e, i):
            self.group_ref, self.list_id, self.value, self.id = e.group_ref, 1, e.value, i

    groups = list(group_vpdq(Row(e, i) for i, e in enumerate(ents)))
    assert [g[1] for g in groups] == [fs, fs[:1]]


def _flip(h: str, bits: list[int]) -> str:
    v = int(h, 16)
    for b in bits:
        v ^= 1 << b
    return f"{v:064x}"


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), n_videos=st.integers(1, 4))
def test_vpdq_index_equals_reference_brute_force(tmp_path, seed, n_videos) -> None:
    """The index's percentages are exactly the reference brute-force matcher's, for every
    known video the query touches (frames near the 31-bit edge, low quality, repeats)."""
    rng = random.Random(seed)
    base = [f"{rng.getrandbits(256):064x}" for _ in range(12)]

    def video() -> list[VpdqFeature]:
        fs = []
        for i in range(rng.randint(1, 10)):
            h = _flip(rng.choice(base), rng.sample(range(256), rng.choice([0, 10, 28, 31, 32, 40])))
            fs.append(VpdqFeature(h, rng.choice([100, 100, 60, 49, 0]), float(i)))
        return fs

    known = [video() for _ in range(n_videos)]
    query = video()
    with Store.open(tmp_path / f"p{uuid.uuid4().hex}.db") as store:
        store.create_list("v")
        for k, fs in enumerate(known):
            store.add_entries("v", vpdq_entries(fs, group_ref=f"video{k}"))
        idx = VpdqIndex(store)
        hits = {h.entry_id: h for h in idx.query(query, query_percent=0.0,
                                                 compared_percent=0.0)}
        firsts = {}
        for e in store.iter_entries(signal_type="vpdq"):
            firsts.setdefault(e.group_ref, e.id)
        for k, fs in enumerate(known):
            qp, cp = match_percentages(query, fs)
            h = hits.get(firsts[f"video{k}"])
            if qp == 0:
                assert h is None
            else:
                assert h is not None and (h.query_match_percent, h.compared_match_percent) == (
                    round(qp, 2), round(cp, 2))


def test_vpdq_index_follows_the_change_feed(tmp_path) -> None:
    fs = [VpdqFeature(f"{i:064x}" if i else "f" * 64, 100, float(i)) for i in range(3)]
    with Store.open(tmp_path / "f.db") as store:
        store.create_list("v")
        idx = VpdqIndex(store)
        assert idx.query(fs) == []
        res = store.add_entries("v", vpdq_entries(fs, group_ref="g"))
        idx.refresh()
        assert len(idx.query(fs)) == 1 and idx.videos == 1
        store.remove_entries("v", res.added_ids)
        idx.refresh()
        assert idx.query(fs) == [] and len(idx) == 0


def test_reference_vpdq_hashes_match_hashwatch(clips) -> None:
    """Compatibility with Meta's vpdq package (optional: it needs FFmpeg's development
    libraries to build): its hash of a clip and hashwatch's match each other fully."""
    try:
        import vpdq
    except ImportError:
        msg = ("vpdq (reference) not installed: pip install '.[reference]' after "
               "apt-get install pkg-config libav*-dev libsw*-dev (.ci/run does both)")
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    ref = [VpdqFeature(f.hex, f.quality, f.timestamp)
           for f in vpdq.computeHash(str(clips / "known_clip.mp4"))]
    ours = hash_media(clips / "known_clip.mp4", "video").vpdq
    assert len(ref) == len(ours) == 10
    qp, cp = match_percentages(ours, ref)
    assert qp == 100.0 and cp == 100.0
    # the reference's own serialisation is read as is
    assert parse_vpdq(json.dumps([f"{f.pdq},{f.quality},{f.timestamp:.3}" for f in ref])) == ref


@pytest.mark.parametrize("fmt", ["csv", "vics"])
def test_vpdq_list_export_import_round_trip(clips, tmp_path, fmt) -> None:
    """A known video's vPDQ leaves as one value (the reference's JSON) per video, comes back
    frame for frame, and the re-imported list finds the video."""
    db = tmp_path / "a.db"
    run("lists", "create", "a", "--db", db)
    run("lists", "add", "a", clips / "known_clip.mp4", clips / "unrelated_clip.mp4", "--db", db)
    out = tmp_path / f"a.{fmt}"
    run("lists", "export", "a", "--format", fmt, "--out", out, "--db", db)
    text = out.read_text()
    if fmt == "csv":
        rows = [r for r in csv.DictReader(text.splitlines()) if r["signal_type"] == "vpdq"]
        assert len(rows) == 2 and all(len(json.loads(r["value"])) == 10 for r in rows)
    else:
        alts = [a for m in json.loads(text)["value"] for a in m.get("AlternativeHashes", [])]
        assert [len(json.loads(a["HashValue"])) for a in alts if a["HashName"] == "vPDQ"] == [
            10, 10]
    db2 = tmp_path / "b.db"
    run("lists", "import", "b", out, "--format", fmt, "--create", "--db", db2)
    with Store.open(db) as s1, Store.open(db2) as s2:
        def ents(s):  # VICS groups a record by its MD5, hashwatch's csv keeps the group_ref
            return sorted((e.value, e.group_ref if fmt == "csv" else "", e.variant if fmt ==
                           "csv" else "") for e in s.iter_entries() if e.signal_type == "vpdq")

        def videos(s):
            return len({e.group_ref for e in s.iter_entries() if e.signal_type == "vpdq"})
        assert ents(s1) == ents(s2) and len(ents(s1)) == 20 and videos(s1) == videos(s2) == 2
    with Store.open(db2) as s2:
        before = sum(1 for _ in s2.iter_entries())
    run("lists", "import", "b", out, "--format", fmt, "--db", db2)  # again: nothing new
    with Store.open(db2) as s2:
        assert sum(1 for _ in s2.iter_entries()) == before
    recs = records(run("match", clips / "trimmed.mp4", "--db", db2))
    assert [m["ref"] for m in recs["trimmed.mp4"]["matches"] if m["signal"] == "vpdq"] == [
        "known_clip.mp4"]


def test_vpdq_wide_csv_and_reference_json_import(tmp_path) -> None:
    """A partner's wide CSV with a vpdq column holding the reference's JSON value."""
    fs = [VpdqFeature(f"{i + 1:064x}", 100, float(i)) for i in range(4)]
    p = tmp_path / "wide.csv"
    with p.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["md5", "vpdq", "category"])
        w.writerow(["d" * 32, format_vpdq(fs), "vics:1"])
        w.writerow(["e" * 32, "[not json", ""])
    db = tmp_path / "w.db"
    out = runner.invoke(app, ["lists", "import", "w", str(p), "--format", "csv", "--create",
                              "--db", str(db)])
    assert out.exit_code == 0, out.output
    with Store.open(db) as s:
        es = list(s.iter_entries())
    vp = [e for e in es if e.signal_type == "vpdq"]
    assert [VpdqFeature.parse(e.value) for e in vp] == fs
    assert {e.group_ref for e in vp} == {"d" * 32} and str(vp[0].category) == "vics:1"
    # a malformed vPDQ cell is a bad cell: the row's MD5 still comes in
    assert "e" * 32 in {e.value for e in es if e.signal_type == "md5"}
    assert "vpdq" in out.output


def test_vpdq_and_frame_matches_are_explained_in_words() -> None:
    from hashwatch.explain import explain

    v = explain({"list": "v", "ref": "clip.mp4", "signal": "vpdq", "distance": 4,
                 "exact": False, "route": "vpdq:views", "query_match_percent": 100.0,
                 "compared_match_percent": 70.0})
    assert v["route"] == "vpdq" and "100% of the video's frames" in v["how"]
    assert "70% of its frames" in v["how"] and "border-trimmed" in v["how"]
    f = explain({"list": "k", "ref": "known.png", "signal": "pdq", "distance": 8,
                 "exact": False, "frame": {"index": 1, "t": 0.5}})
    assert f["route"] == "pdq_full" and f["how"].startswith("frame at 0.5 s:")
