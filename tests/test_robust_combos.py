"""The keypoint tier on edits in combination: mirrored crops, stretched and keystoned copies,
small pictures inside a bigger frame (issue 11)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashwatch import robust as R
from hashwatch.edits import apply_edit
from hashwatch.robust import geometry as G
from hashwatch.robust.geometry import LOCAL_MIN_INLIERS_HOMOGRAPHY, homography_sane
from hashwatch.robust.local import mirrored_count, tile_count
from hashwatch.robust.regions import find_leaves
from test_robust import _picture  # the synthetic photo stand-in of the robust tests

PIC = _picture(360, 540, 71)
FILLERS = [_picture(300, 400, s) for s in range(80, 96)]


def _verdict(query: np.ndarray, known: np.ndarray) -> R.LocalVerdict | None:
    store = R.LocalStore()
    store.add(0, R.known_local(known))
    hashes = R.known_signals(known)
    return store.inliers(R.query_local(query), lambda _: hashes).get(0)


@pytest.mark.parametrize("edit", ["mirror+crop", "transverse+crop", "flip+border"])
def test_mirrored_copies_meet_the_known_keypoints(edit: str) -> None:
    q = apply_edit(edit, PIC, seed=0, key=1)
    # without the mirrored pass, the keypoint tier does not find a mirrored crop
    plain = R.query_local(q, mirror=False, tiles=False)
    n, sane, _ = R.fit_local(plain, R.known_local(PIC))
    assert not (sane and n >= R.LOCAL_MIN_INLIERS)
    v = _verdict(q, PIC)
    assert v is not None and v.ok, v


def test_mirrored_fit_includes_the_reflection() -> None:
    q = np.ascontiguousarray(apply_edit("crop10c", PIC)[:, ::-1])
    feats = R.query_local(q, tiles=False)
    assert mirrored_count(feats) > 0
    n, sane, m = R.fit_local(feats, R.known_local(PIC))
    assert sane and n >= R.LOCAL_MIN_INLIERS and m is not None
    assert np.linalg.det(np.asarray(m)[:2, :2]) < 0  # known -> query flips orientation


@pytest.mark.parametrize("edit", ["stretch1.5+crop10", "shear0.2+crop10", "perspective20"])
def test_stretched_sheared_and_keystoned_copies_fit_a_homography(edit: str) -> None:
    q = apply_edit(edit, PIC, seed=0, key=2)
    v = _verdict(q, PIC)
    assert v is not None and v.ok and v.inliers >= LOCAL_MIN_INLIERS_HOMOGRAPHY, v


def test_a_stretched_crop_is_fitted_by_an_affine_map() -> None:
    """Stretch and shear are affine: the geometric check fits the 6-parameter map (no
    perspective terms), whose singular values give the stretch back."""
    pic = _picture(160, 160, 72)
    q = apply_edit("stretch1.5+crop10", pic, seed=0, key=0)
    k = R.known_local(pic)
    n, sane, m = R.fit_local(R.query_local(q, mirror=False, tiles=False), k)
    assert sane and n >= G.LOCAL_MIN_INLIERS_AFFINE and m is not None
    m = np.asarray(m)
    assert np.allclose(m[2], [0.0, 0.0, 1.0])
    sv = np.linalg.svd(m[:2, :2], compute_uv=False)
    assert 1.35 <= sv[0] / sv[1] <= 1.65
    d = G.describe_transform(m, k.size)  # what a keypoint match's route says of it
    assert d.model == "affine" and not d.mirrored and 1.35 <= d.stretch <= 1.65
    # the similarity alone does not explain it
    ns, sane_s, _ = R.fit_local(R.query_local(q, mirror=False, tiles=False), k,
                                model="similarity")
    assert not (sane_s and ns >= R.LOCAL_MIN_INLIERS) or ns < 0.6 * n
    with pytest.raises(ValueError):
        R.fit_local(R.query_local(q, mirror=False, tiles=False), k, model="projective")


def test_the_affine_map_has_its_own_inlier_minimum(monkeypatch: pytest.MonkeyPatch) -> None:
    """The affine model's minimum (its chance tail is the heaviest) is its own: an affine fit
    one inlier short of it is refused, whatever the homography's minimum."""
    pic = _picture(160, 160, 72)
    q = R.query_local(apply_edit("stretch1.5+crop10", pic, seed=0, key=0), mirror=False,
                      tiles=False)
    k = R.known_local(pic)
    n, sane, m = R.fit_local(q, k, model="affine")
    assert sane and m is not None and n >= G.LOCAL_MIN_INLIERS_AFFINE
    monkeypatch.setattr(G, "LOCAL_MIN_INLIERS_AFFINE", n + 1)
    n2, sane2, m2 = R.fit_local(q, k, model="affine")
    assert m2 is None and not sane2
    assert n >= G.LOCAL_MIN_INLIERS_HOMOGRAPHY  # not what refused it


def test_scene_check_tries_the_other_models_when_the_winner_fails_it() -> None:
    """A mild keystone: the similarity passes the geometric check on most pairs, but
    rectifies the far side wrongly and fails the scene check; the richer models get their own
    scene check and the copy is found (before, it was lost)."""
    from hashwatch.robust.verify import candidate_pairs, verify

    pic = _picture(160, 160, 73)
    q = R.query_local(apply_edit("perspective12", pic, seed=0, key=0), mirror=False,
                      tiles=False)
    k, hashes = R.known_local(pic), R.known_signals(pic)
    pairs = candidate_pairs(q, k)
    n, sane, m = R.fit_local(q, k, pairs, model="similarity")
    assert sane and n >= R.LOCAL_MIN_INLIERS and m is not None
    assert not R.scene_check(q, k, m, hashes).ok
    v = verify(q, k, hashes, pairs=pairs)
    assert v.ok, v


def test_homography_screen_passes_weak_stretches_and_stops_chance_pairs() -> None:
    """The cheap screen before the RANSAC homography: a stretched copy whose pairs hold only
    ~16% inliers (closest descriptors first, as verification orders them) passes it; pairs
    with no common transform do not."""
    from hashwatch.robust.geometry import _homography_possible

    h = np.array([[1.3, 0.2, 5.0], [0.05, 1.0, 3.0], [4e-4, 2e-4, 1.0]])
    passed = chance = 0
    for seed in range(10):
        rng = np.random.default_rng(seed)
        src = rng.uniform(0, 400, (128, 2)).astype(np.float32)
        other = rng.uniform(0, 400, (128, 2)).astype(np.float32)
        p = np.c_[src, np.ones(128)] @ h.T
        dst = (p[:, :2] / p[:, 2:] + rng.normal(0, 1, (128, 2))).astype(np.float32)
        dst[20:] = other[20:]  # 20 inliers of 128
        order = np.argsort(np.r_[rng.normal(32, 8, 20), rng.normal(42, 5, 108)])
        passed += _homography_possible(src[order], dst[order])
        chance += _homography_possible(src, other)
    assert passed == 10 and chance == 0


def test_homography_limits() -> None:
    size = (400, 300)
    assert homography_sane(np.eye(3), size)
    assert homography_sane(np.diag([1.5, 1.0, 1.0]), size)  # a stretch
    assert not homography_sane(np.diag([4.0, 1.0, 1.0]), size)  # too anisotropic
    assert not homography_sane(np.diag([-1.0, 1.0, 1.0]), size)  # a reflection, unasked
    assert homography_sane(np.diag([-1.0, 1.0, 1.0]), size, mirrored=True)
    assert not homography_sane(np.diag([0.05, 0.05, 1.0]), size)  # degenerate scale
    fold = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-0.004, 0.0, 1.0]])  # horizon inside
    assert not homography_sane(fold, size)
    keystone = np.array([[1.0, 0.1, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0005, 1.0]])
    assert homography_sane(keystone, size)


def test_strangers_stay_unmatched_with_every_new_check() -> None:
    store = R.LocalStore()
    store.add(0, R.known_local(PIC))
    hashes = R.known_signals(PIC)
    for s in range(72, 74):
        for q in (_picture(360, 540, s), apply_edit("grid3x3", _picture(300, 300, s),
                                                    fillers=FILLERS)):
            out = store.inliers(R.query_local(q), lambda _: hashes)
            assert not any(v.ok for v in out.values())


def test_grid_leaves_and_the_small_picture_pass() -> None:
    q = apply_edit("grid3x3", PIC, seed=0, key=5, fillers=FILLERS)
    leaves = find_leaves(q)
    # most cells come out one by one (a seam between two similar cells can be missed)
    cells = [b for b in leaves if 150 <= b[1] - b[0] <= 215 and 150 <= b[3] - b[2] <= 215]
    assert len(leaves) >= 6 and len(cells) >= 5
    feats = R.query_local(q, tiles=True)
    assert tile_count(feats) > 0
    lazy = R.query_local(q)  # by default the search computes the pass from the view
    assert tile_count(lazy) == 0 and len(lazy.desc) == len(feats.desc) - tile_count(feats)
    v = _verdict(q, PIC)
    assert v is not None and v.ok, v


def test_picture_in_picture_is_found_by_the_tile_pass() -> None:
    q = apply_edit("pip45-generated", PIC, seed=0, key=6)
    v = _verdict(q, PIC)
    assert v is not None and v.ok, v


def test_query_passes_survive_the_worker_to_matcher_encoding() -> None:
    q = R.query_local(apply_edit("pip45-generated", PIC, seed=0, key=6), tiles=True)
    data = R.encode_local(q, with_view=True)
    back = R.decode_local(data)
    assert mirrored_count(back) == mirrored_count(q) > 0
    assert tile_count(back) == tile_count(q) > 0
    np.testing.assert_array_equal(back.desc, q.desc)
    with pytest.raises(ValueError):
        R.decode_local(data[:30])
    # known features keep the old stored form, byte for byte
    k = R.known_local(PIC)
    assert R.encode_local(k).startswith(R._LOCAL_MAGIC)


@contextmanager
def _demo_matcher(tmp_path: Path) -> Iterator[tuple[list[Path], list[np.ndarray], Any]]:
    """(the 6 demo pictures' paths, their pixels, a Matcher over a list holding the first 4
    with their keypoints: the product path)."""
    from PIL import Image

    from hashwatch.demo import demo_images
    from hashwatch.hashing import hash_file
    from hashwatch.lists import add_records
    from hashwatch.matcher import Matcher
    from hashwatch.store import Store

    imgs = demo_images()[:6]
    pics = [np.asarray(Image.open(p).convert("RGB")) for p in imgs]
    with Store.open(tmp_path / "c.db") as s:
        s.create_list("known")
        add_records(s, "known", [hash_file(p, extras=R.known_extras) for p in imgs[:4]])
        yield imgs, pics, Matcher(s)


def test_combined_edits_through_the_matcher_and_its_keypoint_index(tmp_path) -> None:
    """The product path: known images added with their keypoints to a list, the keypoint index
    nominates, the stages verify: a mirrored crop (mirrored pass) and a picture in a 3 x 3 grid
    (small-picture pass, computed by the matcher from the query's view) are found, a stranger's
    grid is not."""
    from PIL import Image

    from hashwatch.explain import explain
    from hashwatch.hashing import hash_file

    with _demo_matcher(tmp_path) as (imgs, pics, m):
        cases = {
            "mirror+crop": apply_edit("mirror+crop", pics[1], seed=0, key=1),
            "grid3x3": apply_edit("grid3x3", pics[2], seed=0, key=2, fillers=FILLERS),
        }
        targets = {"mirror+crop": 1, "grid3x3": 2}
        routes = {}
        for name, px in cases.items():
            path = tmp_path / f"{name}.png"
            Image.fromarray(px).save(path)
            rec = hash_file(path, extras=m.query_extras())
            found = m.match_hashes(rec)
            assert [x.ref for x in found] == [imgs[targets[name]].name], (name, found)
            routes[name] = found[0].route
        # the route says what the verified transform is, and the explanation says it in words
        assert routes["mirror+crop"] == "local/orb:similarity+mirrored", routes
        assert routes["grid3x3"] == "local/orb:similarity", routes
        how = explain({"list": "known", "ref": "x", "signal": "pdq", "distance": -1,
                       "exact": False, "route": routes["mirror+crop"], "inliers": 20})["how"]
        assert "mirrored" in how and "stretched" not in how
        stranger = tmp_path / "stranger.png"
        Image.fromarray(apply_edit("grid3x3", pics[5], seed=0, key=3, fillers=FILLERS)).save(
            stranger)
        assert m.match_hashes(hash_file(stranger, extras=m.query_extras())) == []


def _similarity(angle: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    a, b = scale * np.cos(np.radians(angle)), scale * np.sin(np.radians(angle))
    return np.array([[a, -b, shift[0]], [b, a, shift[1]], [0.0, 0.0, 1.0]])


@settings(max_examples=60, deadline=None)
@given(angle=st.floats(-179.0, 179.0), scale=st.floats(0.2, 5.0), mirrored=st.booleans(),
       stretch=st.sampled_from([1.0, 1.3, 2.0]))
def test_describe_transform_reads_back_what_made_the_matrix(angle: float, scale: float,
                                                           mirrored: bool,
                                                           stretch: float) -> None:
    """A known -> query map built from a turn, a scale, an optional stretch along the known
    x axis and an optional mirror of the query (as the mirrored pass composes it) is named
    and measured back."""
    m = _similarity(angle, scale, (12.0, -7.0)) @ np.diag([stretch, 1.0, 1.0])
    if mirrored:
        m = np.array([[-1.0, 0.0, 399.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ m
    d = G.describe_transform(m, (400, 300))
    assert d.mirrored is mirrored
    assert d.model == ("similarity" if stretch == 1.0 else "affine")
    assert d.stretch == pytest.approx(stretch, rel=1e-6)
    assert d.scale == pytest.approx(scale * np.sqrt(stretch), rel=1e-6)
    if stretch == 1.0:
        assert abs((d.rotation - angle + 180.0) % 360.0 - 180.0) < 1e-6
    assert d.tag == d.model + ("+mirrored" if mirrored else "")


def test_describe_transform_names_a_homography_and_refuses_degenerate_maps() -> None:
    h = _similarity(5.0, 1.0, (3.0, 4.0))
    h[2, :2] = [4e-4, -1e-4]  # perspective terms: a keystone
    d = G.describe_transform(h, (400, 300))
    assert d.model == "homography" and not d.mirrored
    assert G.describe_transform(_similarity(0.0, 1.0, (0.0, 0.0))[:2],
                                (400, 300)).model == "similarity"  # a 2x3 affine form
    for bad in (np.zeros((3, 3)), np.full((3, 3), np.nan),
                np.array([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0], [0.0, 0.0, 1.0]])):
        with pytest.raises(ValueError):
            G.describe_transform(bad, (400, 300))


@pytest.mark.parametrize("edit", ["mirror+grid3x3", "mirror+pip45-generated",
                                  "flip+pip45-generated"])
def test_a_mirrored_small_picture_is_found_by_the_mirrored_small_pass(edit: str) -> None:
    """A mirrored (or flipped) picture filling part of the frame, the whole-picture mirrored
    pass left out: the plain stages do not meet the known keypoints, the mirrored
    small-picture pass (its boxes alone, last) does, and the verdict says the transform
    reflects."""
    from hashwatch.robust.local import small_pass, small_stages
    from hashwatch.robust.verify import SMALL_BOXES_ALONE

    q = apply_edit(edit, PIC, seed=0, key=6, fillers=FILLERS)
    feats = R.query_local(q, mirror=False)
    store = R.LocalStore()
    store.add(0, R.known_local(PIC))
    hashes = R.known_signals(PIC)
    seen: list[int] = []

    def search(f: R.LocalFeatures, top: int | None) -> dict[int, R.LocalVerdict]:
        seen.append(len(f.desc))
        return store._stage(f, lambda _: hashes, top or 3, 8, False)

    got = R.search_in_stages(feats, search, top=3).get(0)
    assert got is not None and got.ok and got.fit is not None and got.fit.mirrored, got
    # the plain pass and the plain small-picture pass's searches all ran first
    plain_small = small_stages(small_pass(feats))
    assert len(seen) > 1 + min(len(plain_small), 1 + SMALL_BOXES_ALONE)


def test_mirrored_pictures_in_part_of_the_frame_through_the_matcher(tmp_path) -> None:
    """The product path (issue 11's reviewer cases): a mirrored picture as one cell of a 3 x 3
    grid (keypoints: the mirrored small-picture pass), one picture of a 2 x 2 collage of
    known pictures (keypoints: the unmirrored partner matches first, and covers only part of
    the frame, so the mirrored stage still runs), pasted at 45% of a photograph (the pasted
    rectangle's mirrored hash; or keypoints) is found by ``Matcher.match_hashes`` through a
    mirrored route; a stranger's mirrored grid is not. (Seeded cases the path finds; how
    often it does is the eval's figure, BENCHMARKS.md issue 11.)"""
    from PIL import Image

    from hashwatch.hashing import hash_file

    with _demo_matcher(tmp_path) as (imgs, pics, m):
        cases = [("mirror+grid3x3", 1, {}, "local/orb:similarity+mirrored"),
                 ("mirror+collage4", 1, {"partners": [pics[5], pics[2], pics[4]]},
                  "local/orb:similarity+mirrored"),
                 ("mirror+pip45-photo", 0, {}, "rect0:fliph/full"),
                 ("mirror+pip45-photo", 1, {}, "local/orb:similarity+mirrored")]
        for name, target, more, route in cases:
            px = apply_edit(name, pics[target], seed=0, key=target, fillers=FILLERS, **more)
            path = tmp_path / f"{name}-{target}.png"
            Image.fromarray(px).save(path)
            found = {x.ref: x.route for x in m.match_hashes(
                hash_file(path, extras=m.query_extras()))}
            assert found.get(imgs[target].name) == route, (name, found)
            # in the collage, the unmirrored known partner is found as well (a true match)
            assert set(found) == {imgs[target].name} | (
                {imgs[2].name} if name == "mirror+collage4" else set()), (name, found)
        stranger = tmp_path / "stranger.png"
        Image.fromarray(apply_edit("mirror+grid3x3", pics[5], seed=0, key=3,
                                   fillers=FILLERS)).save(stranger)
        assert m.match_hashes(hash_file(stranger, extras=m.query_extras())) == []


@settings(max_examples=60, deadline=None)
@given(st.floats(0.2, 2.0), st.floats(-180, 180), st.booleans(), st.floats(-300, 500),
       st.floats(-300, 400), st.integers(80, 400), st.integers(80, 400))
def test_frame_share_counts_only_the_part_inside_the_frame(scale, angle, mirror, tx, ty, kw, kh):
    """geometry.frame_share (the rule that lets later keypoint stages run after a match on one
    picture among several) against a raster of the same outline: the known picture's corners
    mapped by a (mirrored) similarity, filled into the query's frame and counted, so the part
    of a crop-to-fill collage cell's picture that reaches past the frame does not count."""
    import cv2

    qw, qh = 320, 240
    a = np.radians(angle)
    lin = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    if mirror:
        lin = lin @ np.diag([-1.0, 1.0])
    m = np.eye(3)
    m[:2, :2], m[:2, 2] = lin, (tx, ty)
    corners = np.array([[0, 0, 1], [kw, 0, 1], [kw, kh, 1], [0, kh, 1]], float) @ m.T
    canvas = np.zeros((qh * 4, qw * 4), np.uint8)  # 4x supersampled
    cv2.fillConvexPoly(canvas, np.round(corners[:, :2] * 4 * 16).astype(np.int32), 1,
                       lineType=cv2.LINE_8, shift=4)
    raster = canvas.mean()
    share = G.frame_share(m, (kw, kh), (qw, qh))
    assert 0.0 <= share <= 1.0
    assert abs(share - raster) <= 0.02 + 0.02 * raster
    # the whole-picture estimate the rule used before never counts less
    assert share <= min(1.0, scale ** 2 * kw * kh / (qw * qh)) + 1e-6


def test_a_crop_to_fill_collage_cell_is_part_of_the_frame() -> None:
    """A reviewer's collage: a 680x1024 portrait cropped to fill the top-right 400x300 cell of
    an 800x600 collage maps to an outline reaching far past the frame's top; counted whole
    (scale^2 x area) it looked like half the frame and the mirrored picture beside it was never
    searched. Inside the frame it covers 0.376 of it, and the outline's right side lying on
    the frame's edge (where cv2.intersectConvexConvex fails) changes nothing."""
    from hashwatch.robust.verify import PART_OF_FRAME

    s = 400 / 680
    m = np.array([[s, 0, 400], [0, s, 150 - 1024 * s / 2], [0, 0, 1]])
    assert s * s * 680 * 1024 / (800 * 600) >= PART_OF_FRAME
    share = G.frame_share(m, (680, 1024), (800, 600))
    assert share < PART_OF_FRAME
    assert share == pytest.approx(400 * (150 + 1024 * s / 2) / (800 * 600), rel=1e-9)
    # a corner a hair off the frame's edge, as a fitted transform gives (cv2 said 0 here)
    tilt = np.array([[np.cos(0.017), -np.sin(0.017), 1e-12], [np.sin(0.017), np.cos(0.017), 1],
                     [0, 0, 1]])
    assert G.frame_share(tilt, (80, 80), (320, 240)) == pytest.approx(6400 / 76800, rel=0.05)
