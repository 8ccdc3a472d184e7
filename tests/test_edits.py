"""The edit suite: every edit runs, is reproducible, and does what its name says."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashwatch.edits import COMBINED_EDITS, EDITS, apply_edit, edit_names, expand_edits

THORN = ["watermark", "blur2", "vignette", "gamma2", "jpeg95", "pad0.2", "crop0.05", "noise0.2",
         "rotate4", "resize0.5"]


def _picture(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    """A smooth synthetic photo-like picture (gradients + blobs), not flat, not noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.zeros((h, w, 3), np.float32)
    for c in range(3):
        for _ in range(4):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(8, 40)
            out[..., c] += rng.uniform(40, 120) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2)
                                                         / (2 * r * r))
        out[..., c] += xx * rng.uniform(-0.5, 0.5) + yy * rng.uniform(-0.5, 0.5)
    return np.clip(out + 40, 0, 255).astype(np.uint8)


PARTNERS = [_picture(seed=s) for s in (1, 2, 3)]
FILLERS = [_picture(60, 80, seed=s) for s in range(10, 25)]


def test_suite_covers_the_issue() -> None:
    names = set(edit_names())
    assert set(THORN) <= names
    assert {"jpeg75", "jpeg50", "jpeg30", "jpeg10", "jpeg3"} <= names
    assert {f"crop{a}c" for a in (10, 20, 30, 40, 50, 60, 70, 80)} <= names
    assert {"mirror", "rot90", "rot180", "screenshot-light", "collage2-gutter",
            "side-by-side", "collage4", "aspect1.3w", "webp80", "caption-bar"} <= names
    assert {EDITS[n].family for n in names} >= {"thorn", "copydays-jpeg", "copydays-crop",
                                                 "border", "screenshot", "collage", "format"}
    assert edit_names(["orientation"]) == ["mirror", "flip", "rot90", "rot180", "rot270"]


@pytest.mark.parametrize("name", edit_names())
def test_every_edit_is_reproducible(name: str) -> None:
    p = _picture()
    a = apply_edit(name, p, seed=3, key=7, partners=PARTNERS, fillers=FILLERS)
    b = apply_edit(name, p, seed=3, key=7, partners=PARTNERS, fillers=FILLERS)
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
    assert a.shape[0] >= 8 and a.shape[1] >= 8
    np.testing.assert_array_equal(a, b)
    if name != "png":
        # every edit but the lossless re-encoding changes the pixels
        assert a.shape != p.shape or not np.array_equal(a, p)


def test_seed_changes_random_edits_only() -> None:
    p = _picture()
    a = apply_edit("crop25o", p, seed=1, key=0)
    b = [apply_edit("crop25o", p, seed=s, key=0) for s in range(2, 8)]
    assert any(x.shape != a.shape or not np.array_equal(x, a) for x in b)
    np.testing.assert_array_equal(apply_edit("mirror", p, seed=1), apply_edit("mirror", p, seed=9))


def test_geometry_is_exact() -> None:
    p = _picture()
    np.testing.assert_array_equal(apply_edit("mirror", p), p[:, ::-1])
    np.testing.assert_array_equal(apply_edit("flip", p), p[::-1])
    np.testing.assert_array_equal(apply_edit("rot180", p), p[::-1, ::-1])
    np.testing.assert_array_equal(apply_edit("rot90", p), np.rot90(p))
    c = apply_edit("crop50c", p)
    assert abs(c.shape[0] * c.shape[1] / (96 * 128) - 0.5) < 0.03
    pad = apply_edit("border-black5", p)
    assert pad.shape[:2] == (96 + 2 * 5, 128 + 2 * 6)
    assert (pad[:5] == 0).all() and (pad[:, :6] == 0).all()
    np.testing.assert_array_equal(pad[5:-5, 6:-6], p)
    lb = apply_edit("letterbox16:9", p)
    assert abs(lb.shape[1] / lb.shape[0] - 16 / 9) < 0.02


def test_composites_contain_the_picture() -> None:
    p = _picture(200, 300)
    s = apply_edit("screenshot-light", p, seed=0, key=1)
    assert s.shape == (960, 540, 3)
    sbs = apply_edit("side-by-side", p, seed=0, key=1, partners=PARTNERS)
    assert sbs.shape[0] == 360 and sbs.shape[1] > 500
    with pytest.raises(ValueError, match="partner"):
        apply_edit("collage4", p, partners=PARTNERS[:1])
    with pytest.raises(ValueError):
        apply_edit("mirror", p[..., 0])


@settings(max_examples=25, deadline=None)
@given(h=st.integers(16, 80), w=st.integers(16, 80), seed=st.integers(0, 2**31 - 1),
       name=st.sampled_from(["crop10o", "trim20side", "border-frame", "pad0.2", "rotate-5x",
                             "watermark", "caption-overlay", "noise0.2", "aspect0.75h"]))
def test_edits_accept_any_size(h: int, w: int, seed: int, name: str) -> None:
    p = _picture(h, w, seed % 1000)
    out = apply_edit(name, p, seed=seed, key=seed // 7)
    assert out.dtype == np.uint8 and out.shape[2] == 3 and min(out.shape[:2]) >= 8
    np.testing.assert_array_equal(out, apply_edit(name, p, seed=seed, key=seed // 7))


# --- combined edits (issue 11) ----------------------------------------------------------------


def test_suite_has_the_combined_kinds() -> None:
    names = set(edit_names())
    for o in ("mirror", "flip", "rot90", "rot180", "rot270", "transpose", "transverse"):
        assert {f"{o}+crop", f"{o}+border", f"{o}+stretch"} <= names
    fam = {EDITS[n].family for n in names}
    assert {"stretch-crop", "perspective", "grid", "picture-in-picture",
            "screenshot-small"} <= fam
    assert {"grid3x3", "grid4x4", "pip30-generated", "pip30-photo"} <= names
    assert len(edit_names(["perspective"])) >= 3


def _contains(big: np.ndarray, small: np.ndarray, tol: float = 3.0) -> bool:
    """Whether ``small`` appears in ``big`` at some offset, with an RMS pixel difference of at
    most ``tol`` (OpenCV template matching, squared differences, every offset)."""
    import cv2

    if small.shape[0] > big.shape[0] or small.shape[1] > big.shape[1]:
        return False
    r = cv2.matchTemplate(big.astype(np.float32), small.astype(np.float32), cv2.TM_SQDIFF)
    return float(r.min()) / small.size <= tol * tol


def test_mirror_crop_is_a_mirrored_part_of_the_picture() -> None:
    p = _picture()
    out = apply_edit("mirror+crop", p, seed=1, key=2)
    area = out.shape[0] * out.shape[1] / (96 * 128)
    assert 0.88 <= area <= 0.96  # a crop of under 10% of the surface
    # JPEG q80 on top: the crop sits somewhere in the mirrored picture, close but not exact
    assert _contains(p[:, ::-1], out, tol=6.0)
    assert not _contains(p, out, tol=6.0)


def test_turn_with_border_keeps_the_turned_picture_whole() -> None:
    p = _picture()
    out = apply_edit("rot90+border", p, seed=0, key=3)
    assert out.shape[0] > 128 and out.shape[1] > 96
    assert _contains(out, np.rot90(p), tol=0.5)
    assert not _contains(out, np.rot90(p, -1), tol=0.5)


def test_stretch_changes_one_side_only() -> None:
    p = _picture()
    out = apply_edit("transpose+stretch", p, seed=0, key=0)
    h, w = out.shape[:2]  # transposed: 128 x 96, then one side x1.3
    assert (h, w) in ((round(128 * 1.3), 96), (128, round(96 * 1.3)))


def test_grid_shows_the_picture_in_one_cell_and_fillers_elsewhere() -> None:
    p = _picture(200, 200, seed=5)
    out = apply_edit("grid3x3", p, seed=0, key=4, fillers=FILLERS)
    assert out.shape[0] == out.shape[1] and 600 <= out.shape[0] <= 632
    with pytest.raises(ValueError, match="filler"):
        apply_edit("grid4x4", p, fillers=FILLERS[:3])


def test_picture_in_picture_is_the_stated_size() -> None:
    from PIL import Image

    p = _picture(120, 160, seed=6)
    for size in (60, 30):
        out = apply_edit(f"pip{size}-generated", p, seed=0, key=size)
        H, W = out.shape[:2]
        assert (W, H) in ((640, 480), (480, 640), (640, 360))
        # fitted into size% of the frame's width and height, aspect kept
        s = min(size / 100 * W / 160, size / 100 * H / 120)
        small = np.asarray(Image.fromarray(p).resize((round(160 * s), round(120 * s)),
                                                     Image.Resampling.LANCZOS))
        assert _contains(out, small[2:-2, 2:-2], tol=6.0)  # JPEG q85 blurs the edge
        assert not _contains(out, small[2:-2, 2:-2][:, ::-1], tol=6.0)


def test_perspective_narrows_one_side() -> None:
    p = np.full((100, 140, 3), 230, np.uint8)
    out = apply_edit("perspective20", p, seed=0, key=9)
    bright = out.mean(axis=2) > 150
    rows = bright.sum(axis=1)[bright.any(axis=1)]
    cols = bright.sum(axis=0)[bright.any(axis=0)]
    # one pair of opposite sides differs by about 20% of its length
    ratio = max(rows[2] / rows[-3], rows[-3] / rows[2], cols[2] / cols[-3], cols[-3] / cols[2])
    assert 1.12 <= ratio <= 1.35


def test_edit_sets_by_name_family_or_kind() -> None:
    assert expand_edits("mirror,grid") == ["mirror", "grid3x3", "grid4x4"]
    assert set(expand_edits("combined")) == set(COMBINED_EDITS)
    assert len(expand_edits("single")) + len(COMBINED_EDITS) == len(EDITS)
    assert "grid3x3" in COMBINED_EDITS and "mirror" not in COMBINED_EDITS
    with pytest.raises(KeyError):
        expand_edits("mirror,nosuch")
