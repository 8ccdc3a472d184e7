"""Robust matcher: border trimming, region finding, hash variants, the local tier, and a tiny
end-to-end run of the evaluation harness on the corpus."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashwatch import robust as R
from hashwatch.edits import apply_edit
from hashwatch.signals.pdq import pdq_hash


def _corpus() -> Path:
    env = os.environ.get("HASHWATCH_CORPUS")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "corpus"
    if not path.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"corpus not found at {path} (CI needs ../shared/corpus)")
        pytest.skip(f"corpus not found at {path}; set HASHWATCH_CORPUS")
    return path


def _picture(h: int, w: int, seed: int) -> np.ndarray:
    """Synthetic photo stand-in: random filled shapes on a gradient, lightly blurred, plus fine
    texture (real structure at every scale, PDQ quality 100)."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([xx / w * rng.uniform(40, 200), yy / h * rng.uniform(40, 200),
                     np.full_like(xx, rng.uniform(40, 200))], axis=2)
    im = Image.fromarray(base.astype(np.uint8))
    d = ImageDraw.Draw(im)
    for _ in range(25):
        x0, y0 = rng.uniform(-0.1, 1.0) * w, rng.uniform(-0.1, 1.0) * h
        x1, y1 = x0 + rng.uniform(0.05, 0.4) * w, y0 + rng.uniform(0.05, 0.4) * h
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)((x0, y0, x1, y1), fill=fill)
    im = im.filter(ImageFilter.GaussianBlur(1.0))
    out = np.asarray(im).astype(np.float32) + rng.normal(0, 4, (h, w, 1))
    return np.clip(out, 0, 255).astype(np.uint8)


def _hamming(a: bytes, b: bytes) -> int:
    return int(np.unpackbits(np.frombuffer(a, np.uint8) ^ np.frombuffer(b, np.uint8)).sum())


# --- pure pieces ---------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(h=st.integers(40, 120), w=st.integers(40, 120), t=st.integers(0, 30), b=st.integers(0, 30),
       left=st.integers(0, 30), right=st.integers(0, 30), colour=st.integers(0, 255),
       seed=st.integers(0, 1000))
def test_trim_box_finds_the_picture_inside_any_uniform_border(
        h: int, w: int, t: int, b: int, left: int, right: int, colour: int, seed: int) -> None:
    pic = _picture(h, w, seed)
    canvas = np.full((h + t + b, w + left + right, 3), colour, np.uint8)
    canvas[t:t + h, left:left + w] = pic
    y0, y1, x0, x1 = R.trim_box(canvas)
    # Border removed (one extra pixel may go: ringing guard), picture kept.
    assert t <= y0 <= t + 1 and h + t - 1 <= y1 <= h + t
    assert left <= x0 <= left + 1 and w + left - 1 <= x1 <= w + left


def test_trim_box_leaves_a_plain_picture_alone() -> None:
    pic = _picture(100, 150, 3)
    assert R.trim_box(pic) == (0, 100, 0, 150)
    flat = np.full((50, 50, 3), 7, np.uint8)
    assert R.trim_box(flat) == (0, 50, 0, 50)  # nothing left inside: keep the whole thing


def test_find_regions_locates_the_picture_in_a_screenshot() -> None:
    pic = _picture(240, 360, 5)
    for name in ("screenshot-light", "screenshot-dark"):
        shot = apply_edit(name, pic, seed=0, key=2)
        boxes = R.query_regions(shot)
        assert boxes, name
        y0, y1, x0, x1 = boxes[0]
        # The bubble picture is 68-80% of the 540-px screen wide, with the picture's aspect.
        assert 0.6 * 540 <= x1 - x0 <= 0.82 * 540, (name, boxes[0])
        assert abs((x1 - x0) / (y1 - y0) - 1.5) < 0.08, (name, boxes[0])


def test_known_signals_start_with_the_interchange_hash() -> None:
    pic = _picture(200, 300, 1)
    known = R.known_signals(pic)
    assert known[0].variant == "full"
    assert known[0].hex == pdq_hash(pic)[0]  # same value as a plain PDQ list holds
    assert len({k.variant for k in known}) == len(known)
    assert all(len(k.code) == 32 and k.quality >= R.MIN_QUALITY for k in known[1:])
    query = R.query_signals(pic)
    assert query[0].variant == "full" and query[0].hex == pdq_hash(pic)[0]
    assert {q.variant for q in query} >= {"full", "full:rot90", "full:fliph"}


def test_plain_pdq_rule_is_unchanged() -> None:
    assert R.THRESHOLDS[("full", "full")] == 31
    assert R.route_threshold("full", "full") == 31
    # Every extra route is at most as loose as plain PDQ.
    assert max(R.THRESHOLDS.values()) <= 31
    assert R.query_class("trim:rot90") == "trim" and R.known_class("crop80") == "crop"
    assert R.query_class("qcrop90") == "qcrop" and R.query_class("qrot+4.5c90") == "qrot"
    assert R.query_class("qrotx-5") == "qrot" and R.query_class("region1-sq") == "region"
    with pytest.raises(ValueError):
        R.query_class("bogus")


@pytest.mark.parametrize("edit", ["mirror", "rot90", "border-white10", "letterbox16:9",
                                  "screenshot-light", "pad0.2"])
def test_hash_tier_finds_what_plain_pdq_misses(edit: str) -> None:
    pic = _picture(240, 360, 11)
    known = R.known_signals(pic)
    edited = apply_edit(edit, pic, seed=0, key=1)
    plain = _hamming(pdq_hash(edited)[0] and bytes.fromhex(pdq_hash(edited)[0]), known[0].code)
    assert plain > 31  # plain PDQ is blind to it
    hit = R.hash_match(R.query_signals(edited), known)
    assert hit is not None and hit[0] <= 31, (edit, R.best_distances(R.query_signals(edited),
                                                                      known))


@pytest.mark.parametrize("edit", ["crop10c", "crop30c", "crop60c", "crop70c", "rotate5",
                                  "rotate-5x"])
def test_query_crops_and_turned_crops_find_copies_between_the_stored_views(edit: str) -> None:
    """A copy cropped between two stored crop levels, or turned by ~5 degrees, is missed by the
    query views without crops and found with them, through a qcrop or qrot route; the stored
    views (the bytes of every known image and export) are the same as before."""
    pic = _picture(240, 360, 12)
    known = R.known_signals(pic)
    assert [k.variant for k in known] == ["full"] + [
        f"crop{round(s * 100)}" for s in R.KNOWN_CROP_SCALES]
    edited = apply_edit(edit, pic, seed=0, key=1)
    assert R.hash_match(R.query_signals(edited, crops=False), known) is None
    hit = R.hash_match(R.query_signals(edited), known)
    assert hit is not None and hit[0] <= 31
    assert R.query_class(hit[1]) in ("qcrop", "qrot"), hit


def test_an_unedited_copy_keeps_its_plain_route() -> None:
    """Query crops are a fallback: a re-encoded or resized copy is reported by the full/full
    route even where a query crop meets a stored crop a little closer."""
    pic = _picture(240, 360, 12)
    known = R.known_signals(pic)
    for edit in ("jpeg75", "resize0.5", "jpeg30"):
        hit = R.hash_match(R.query_signals(apply_edit(edit, pic, seed=0, key=1)), known)
        assert hit is not None and hit[1:] == ("full", "full"), (edit, hit)
    assert R.route_rank("qcrop", 0, 31) > R.route_rank("full", 31, 31)


def test_hash_tier_rejects_an_unrelated_picture() -> None:
    known = R.known_signals(_picture(240, 360, 21))
    for s in range(22, 26):
        assert R.hash_match(R.query_signals(_picture(240, 360, s)), known) is None


def test_local_tier_verifies_an_offset_crop_and_rejects_another_picture() -> None:
    pic = _picture(360, 540, 31)
    k = R.known_local(pic)
    assert 0 < len(k.desc) <= R.LOCAL_MAX_KEYPOINTS and k.nbytes() == len(k.desc) * 40
    crop = apply_edit("crop25o", pic, seed=0, key=3)
    n, ok = R.verify_local(R.query_local(crop), k)
    assert ok and n >= R.LOCAL_MIN_INLIERS
    n2, ok2 = R.verify_local(R.query_local(_picture(360, 540, 32)), k)
    assert not ok2 and n2 < R.LOCAL_MIN_INLIERS


def test_robust_index_cascade_and_plain_lists() -> None:
    pics = {i: _picture(240, 360, 40 + i) for i in range(6)}
    idx = R.RobustIndex()
    for i in range(4):
        idx.add(i, R.known_signals(pics[i]), R.known_local(pics[i]))
    idx.add_plain(4, pdq_hash(pics[4])[0])  # a partner's plain PDQ entry: no extra views
    assert len(idx) == 5
    # exact copy: hash tier, plain route
    m = idx.match(pics[1])
    assert m and m[0].known_id == 1 and m[0].tier == "hash" and m[0].known_variant == "full"
    # mirrored copy of the plain entry: the query's dihedral views still meet it
    m = idx.match(np.ascontiguousarray(pics[4][:, ::-1]))
    assert m and m[0].known_id == 4 and m[0].query_variant.startswith("full:")
    # offset crop: no hash route, the local tier finds it
    crop = apply_edit("crop20o", pics[2], seed=0, key=9)
    m = idx.match(crop)
    assert m and m[0].known_id == 2 and m[0].tier == "local"
    assert m[0].inliers >= R.LOCAL_MIN_INLIERS
    assert idx.match(pics[5]) == []


def test_a_region_match_by_hash_leaves_the_other_pictures_to_the_keypoint_tier() -> None:
    # two known pictures side by side on a white page: the first is found by the hash tier
    # through its region view, the second (an offset crop, no hash route) only by keypoints;
    # the hash match must not end the search (robust.part_of_frame)
    from PIL import Image

    pics = {i: _picture(240, 360, 40 + i) for i in range(3)}
    idx = R.RobustIndex()
    for i in range(3):
        idx.add(i, R.known_signals(pics[i]), R.known_local(pics[i]))
    crop = apply_edit("crop20o", pics[2], seed=0, key=9)
    crop = np.asarray(Image.fromarray(crop).resize(
        (round(crop.shape[1] * 240 / crop.shape[0]), 240)))
    page = np.concatenate([pics[1], np.full((240, 24, 3), 255, np.uint8), crop], axis=1)
    page = np.pad(page, ((24, 24), (24, 24), (0, 0)), constant_values=255)
    got = {m.known_id: m for m in idx.match(page)}
    assert set(got) == {1, 2}
    assert got[1].tier == "hash" and R.part_of_frame(got[1].query_variant)
    assert got[2].tier == "local" and got[2].inliers >= R.LOCAL_MIN_INLIERS
    # a whole-frame hash match ends the search as before
    assert not R.part_of_frame("full") and not R.part_of_frame("trim:r90")
    assert R.part_of_frame("cell3") and R.part_of_frame("rect0") and R.part_of_frame("region1")


# --- corpus: a tiny end-to-end run of the harness ------------------------------------------


@pytest.mark.corpus
def test_eval_harness_tiny_run() -> None:
    from hashwatch.evaluate import EvalConfig, markdown, run_eval, summarise

    corpus = _corpus()
    cfg = EvalConfig(corpus=corpus, n_known=4, seed=1, max_distractors=12,
                     edits=["jpeg50", "mirror", "border-colour25", "crop20o"])
    res = run_eval(cfg)
    assert len(res.known) == 4 and len(res.distractors) == 12
    assert not set(res.known) & set(res.distractors)
    assert not any("cbsd68" in str(p) for p in res.known + res.distractors)
    s = summarise(res)
    assert s.methods[0] == "pdq" and s.methods[-2:] == ["+local", "partner"]
    # Plain PDQ survives re-encoding but not a mirror or a border; the full matcher gets both.
    assert s.per_edit["pdq"]["jpeg50"] == 1.0
    assert s.per_edit["pdq"]["mirror"] < 0.5 and s.per_edit["+dihedral"]["mirror"] >= 0.75
    assert s.per_edit["+local"]["border-colour25"] >= 0.75
    assert s.per_edit["+local"]["crop20o"] >= 0.75
    assert all(v == 0 for v in s.false_distractor.values())
    # partner mode (CSV export in a fresh database, hash tier): the hash routes' answers
    assert s.per_edit["partner"]["jpeg50"] == 1.0 and s.per_edit["partner"]["mirror"] >= 0.75
    assert s.methods[-3] == "+qcrops"  # the whole hash tier, as a partner runs it
    for e in ("border-colour25", "crop20o"):
        assert s.per_edit["partner"][e] == s.per_edit["+qcrops"][e]
    md = markdown(res, s)
    assert "| edit | family | pdq |" in md and "mean recall" in md and "Partner mode" in md
    # 48 distractor x known pairs are too few to fit any route's tail: said, never "nan"
    assert "nan" not in md and "n/a (" in md and "too few for a tail fit" in md


def _verdict(query: np.ndarray, known: np.ndarray) -> R.LocalVerdict:
    """The local tier's verdict for one known picture, as the matcher reaches it."""
    store = R.LocalStore()
    store.add(0, R.known_local(known))
    hashes = R.known_signals(known)
    out = store.inliers(R.query_local(query), lambda _: hashes, scene_all=True)
    assert 0 in out, "the known picture was not even a candidate"
    return out[0]


def test_scene_check_rejects_another_photo_of_the_same_scene(corpus_dir) -> None:
    """Two photographs of one flower bed taken moments apart (consecutive Flickr ids): enough
    keypoints agree on one transform, but it is not the same picture."""
    from hashwatch.evaluate import load_pixels

    tulips = corpus_dir / "flowers128" / "tulip"
    known = load_pixels(tulips / "13530690445_9f1f5cf43a_n.jpg")
    other = load_pixels(tulips / "13530786873_0d34880300_n.jpg")
    v = _verdict(other, known)
    assert v.sane and v.inliers >= R.LOCAL_MIN_INLIERS  # geometry alone is fooled
    assert v.scene is not None and not v.scene.ok and not v.ok
    # while edited copies of the known photo pass both checks
    for edit in ("crop25o", "rotate5", "side-by-side"):
        partners = [other] if edit == "side-by-side" else []
        v = _verdict(apply_edit(edit, known, seed=0, key=1, partners=partners), known)
        assert v.ok, (edit, v)


def test_scene_check_passes_edited_copies_and_fails_strangers() -> None:
    pic = _picture(360, 540, 33)
    for edit in ("crop25o", "rotate-5x", "crop20c"):
        v = _verdict(apply_edit(edit, pic, seed=0, key=2), pic)
        assert v.ok and v.scene is not None and v.scene.ok, (edit, v)
    store = R.LocalStore()
    store.add(0, R.known_local(pic))
    hashes = R.known_signals(pic)
    for s in range(34, 38):
        out = store.inliers(R.query_local(_picture(360, 540, s)), lambda _: hashes)
        assert not any(v.ok for v in out.values())


def test_query_view_travels_with_query_features_but_never_with_known_ones() -> None:
    pic = _picture(240, 360, 35)
    known = R.known_local(pic)
    assert "view" not in known.extra
    stored = R.known_extras(pic)["local"]
    assert isinstance(stored, bytes)
    assert "view" not in R.decode_local(stored).extra
    assert len(stored) == len(R._LOCAL_MAGIC) + 12 + known.nbytes()
    q = R.query_local(pic)
    back = R.decode_local(R.encode_local(q, with_view=True))
    assert np.array_equal(back.extra["view"], q.extra["view"])
    assert back.extra["view"].shape == (q.size[1], q.size[0])
    with pytest.raises(ValueError):
        R.decode_local(R.encode_local(q, with_view=True)[:-5])
    with pytest.raises(ValueError, match="no view"):
        R.scene_check(back.__class__(back.xy, back.desc, back.size), known, np.eye(2, 3), [])
