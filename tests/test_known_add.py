"""What ``lists add`` stores for a known image, and how: the extra views without a second
full-image PDQ, the spread keypoints, and local features written batch by batch."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from hashwatch import robust as R
from hashwatch.demo import demo_images
from hashwatch.hashing import hash_file
from hashwatch.known import entries_for_record
from hashwatch.lists import add_records
from hashwatch.robust.local import _spread
from hashwatch.store import Store
from hashwatch.store.schema import local_features


def test_known_extras_are_known_signals_without_the_full_hash() -> None:
    """The workers' extras hold exactly the stored views of :func:`known_signals` after its
    first (the full-image PDQ, which the worker has already): same variants, same values."""
    for p in demo_images()[:4]:
        rec = hash_file(p, extras=R.known_extras)
        from hashwatch.decode import decode_image

        px = decode_image(p).pixels
        views = R.known_signals(px)
        assert views[0].variant == "full"
        assert rec.extras["pdq_variants"] == [(v.variant, v.hex, v.quality) for v in views[1:]]
        assert len(rec.extras["pdq_variants"]) >= 5  # trim/crops of a real photograph


def _spread_by_the_rule(kps, n, w, h, grid=4):  # noqa: ANN001, ANN202
    """The rule as written (each cell its strongest n // grid^2 first, then the strongest
    left over), one keypoint at a time; no more than n: all of them, as they came."""
    if len(kps) <= n:
        return list(kps)
    order = sorted(range(len(kps)), key=lambda i: -kps[i].response)
    used: dict[int, int] = {}
    taken = set()
    for i in order:
        c = (min(grid - 1, int(kps[i].pt[0] * grid / w)) * grid
             + min(grid - 1, int(kps[i].pt[1] * grid / h)))
        if used.get(c, 0) < n // (grid * grid):
            used[c] = used.get(c, 0) + 1
            taken.add(i)
    for i in order:
        if len(taken) >= n:
            break
        taken.add(i)
    return [kps[i] for i in order if i in taken]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 99.9), st.floats(0, 59.9),
                          st.sampled_from([0.5, 1.0, 2.0, 3.0, 7.0])), max_size=120),
       st.integers(1, 80))
def test_spread_keeps_the_rule(points, n) -> None:  # noqa: ANN001
    """Ties in response included (few distinct values): the vectorised spread picks the same
    keypoints in the same order as the rule applied one keypoint at a time."""
    kps = [cv2.KeyPoint(x, y, 31, -1, r) for x, y, r in points]
    got = _spread(kps, n, 100, 60)
    want = _spread_by_the_rule(kps, n, 100, 60)
    assert [id(k) for k in got] == [id(k) for k in want]


def _feature_groups(s: Store) -> set[str]:
    with s.engine.connect() as conn:
        return {r[0] for r in conn.execute(sa.select(local_features.c.group_ref))}


def test_an_interrupted_add_keeps_the_keypoints_of_what_it_kept(tmp_path) -> None:  # noqa: ANN001
    """Keypoints are written as their images' entries commit, not at the end: stopped
    midway, the add leaves every image whose entries all committed with its keypoints (and
    none without), and running it again completes the rest."""
    recs = [hash_file(p, extras=R.known_extras) for p in demo_images()[:6]]
    per_image = {r.sha256: len(entries_for_record(r)) for r in recs}

    def stopped():  # noqa: ANN202
        yield from recs[:5]
        raise KeyboardInterrupt  # the user stops it

    with Store.open(tmp_path / "a.db") as s:
        s.create_list("known")
        s.BATCH = 7  # several commits per image
        with pytest.raises(KeyboardInterrupt):
            add_records(s, "known", stopped())
        stored: dict[str, int] = {}
        for e in s.iter_entries(list_name="known"):
            stored[e.group_ref] = stored.get(e.group_ref, 0) + 1
        complete = {g for g, k in stored.items() if k == per_image[g]}
        assert 3 <= len(complete) <= 5
        assert _feature_groups(s) == complete
        res = add_records(s, "known", recs)
        assert res.files == 6 and res.local_features == 6 - len(complete)
        assert _feature_groups(s) == set(per_image)
        assert res.added == sum(per_image.values()) - sum(stored.values())


def test_a_batch_boundary_inside_an_image_waits_for_its_last_entry(tmp_path) -> None:  # noqa: ANN001
    """With one entry per commit every boundary falls inside an image; all are stored with
    their keypoints, each written once."""
    recs = [hash_file(p, extras=R.known_extras) for p in demo_images()[:3]]
    with Store.open(tmp_path / "b.db") as s:
        s.create_list("known")
        s.BATCH = 1
        res = add_records(s, "known", recs)
        assert res.local_features == 3 and _feature_groups(s) == {r.sha256 for r in recs}
        assert res.added == sum(len(entries_for_record(r)) for r in recs)
        assert np.all([r.extras["local"] for r in recs])


# -- cheaper known-image features (issue 10, "adding 250,000 known images") -----------------

def _trim_by_the_rule(pixels, tol=12.0, spill=0.12, max_frac=0.45):  # noqa: ANN001, ANN202
    """trim_box's rule as first written: each side's lines from the edge inwards, in chunks
    doubling from 4; a line is a border line when at most ``spill`` of its pixels leave the
    line's median colour by more than ``tol``; one more line for JPEG ringing."""
    g = pixels.astype(np.int16)
    h, w = g.shape[:2]

    def run(lines):  # noqa: ANN001, ANN202
        k, step = 0, 4
        while k < len(lines):
            chunk = lines[k:k + step]
            ref = np.median(chunk, axis=1, keepdims=True)
            bad = (np.abs(chunk - ref).max(axis=2) > tol).mean(axis=1) > spill
            if bad.any():
                k += int(np.argmax(bad))
                break
            k += len(chunk)
            step = min(64, step * 2)
        return k + 1 if k > 0 else 0

    mh, mw = int(h * max_frac), int(w * max_frac)
    if mh < 1 or mw < 1:
        return 0, h, 0, w
    y0, y1 = run(g[:mh]), h - run(g[::-1][:mh])
    x0, x1 = run(g[:, :mw].transpose(1, 0, 2)), w - run(g[:, ::-1][:, :mw].transpose(1, 0, 2))
    if y1 - y0 < 8 or x1 - x0 < 8:
        return 0, h, 0, w
    return y0, y1, x0, x1


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 90), st.integers(1, 90), st.integers(0, 2**32 - 1),
       st.tuples(st.integers(0, 40), st.integers(0, 40), st.integers(0, 40), st.integers(0, 40)),
       st.sampled_from([1, 16, 64]))
def test_trim_box_keeps_the_rule(h, w, seed, border, levels) -> None:  # noqa: ANN001
    """Pictures with and without borders of a uniform or slightly noisy colour, coarse or
    fine pixel values: the same box as the rule applied side by side."""
    rng = np.random.default_rng(seed)
    px = (rng.integers(0, 256, (h, w, 3)) // levels * levels).astype(np.uint8)
    t, b, left, r = border
    colour = rng.integers(0, 256, 3)
    px = cv2.copyMakeBorder(px, t, b, left, r, cv2.BORDER_CONSTANT, value=colour.tolist())
    px = np.clip(px.astype(np.int16) + rng.integers(-13, 14, px.shape) * (seed % 3 == 0),
                 0, 255).astype(np.uint8)
    assert R.trim_box(px) == _trim_by_the_rule(px)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.integers(1, 300), st.integers(0, 2**32 - 1))
def test_luma_is_pillows_integer_formula(h, w, seed) -> None:  # noqa: ANN001
    """The full-image PDQ's luma: (19595 R + 38470 G + 7471 B + 0x8000) >> 16, exactly."""
    from hashwatch.signals.pdq import _luma

    px = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    acc = px.astype(np.uint32) @ np.array([19595, 38470, 7471], np.uint32) + 0x8000
    assert np.array_equal(_luma(px), (acc >> 16).astype(np.uint8))


def test_pdq_weights_are_the_reference_filters() -> None:
    """The views' banded weights equal the full-resolution estimate's (pdq._axis_weights, the
    two box filters built by their transposes) at every axis length up to 600 px."""
    from hashwatch.robust._pixels import _pdq_weights
    from hashwatch.signals.pdq import _axis_weights

    rows = np.arange(64)[:, None]
    for n in range(1, 601):
        dense = np.zeros((2, 64, n))
        for k, (idx, wt) in enumerate((_pdq_weights(n), _axis_weights(n, n))):
            np.add.at(dense[k], (rows, idx), wt)
        assert np.abs(dense[0] - dense[1]).max() < 1e-6, n


def test_known_views_are_pdqhash_of_the_views() -> None:
    """Every stored view (trim, centred crops) of photographs, plain and with a border, is
    the value pdqhash (Meta's reference code) gives for the same pixels: computing them from
    one luma picture without filtering every pixel changes no bit on these pictures."""
    from hashwatch.decode import decode_image
    from hashwatch.robust._pixels import _centre, _pdq, _work
    from hashwatch.robust.views import known_extra_views

    for p in demo_images():
        px = decode_image(p).pixels
        for pic in (px, cv2.copyMakeBorder(px, 12, 30, 5, 0, cv2.BORDER_CONSTANT,
                                           value=(250, 250, 250))):
            w = _work(pic)
            y0, y1, x0, x1 = R.trim_box(w)
            core = w[y0:y1, x0:x1]
            want = [("trim", *_pdq(core))] if core.shape != w.shape else []
            want += [(f"crop{round(s * 100)}", *_pdq(_centre(core, s)))
                     for s in R.KNOWN_CROP_SCALES]
            want = [(v, c.hex(), q) for v, c, q in want if q >= 50]
            assert [(k.variant, k.hex, k.quality) for k in known_extra_views(pic)] == want


@settings(max_examples=40, deadline=None)
@given(st.integers(64, 300), st.integers(64, 300), st.integers(0, 2**32 - 1),
       st.floats(0.5, 6.0))
def test_pdq_from_luma_stays_at_the_reference(h, w, seed, blur) -> None:  # noqa: ANN001
    """On random smooth pictures of 64 px and more a side (smaller views get the reference
    itself) the luma route is the reference hash up to a bit or two (two DCT coefficients
    within float rounding of the median can swap) and the same quality up to one step."""
    from hashwatch.robust._pixels import _luma_f32, _pdq, _pdq_luma

    rng = np.random.default_rng(seed)
    px = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), blur)
    (a, qa), (b, qb) = _pdq(px), _pdq_luma(_luma_f32(px))
    bits = np.unpackbits(np.frombuffer(a, np.uint8) ^ np.frombuffer(b, np.uint8)).sum()
    assert bits <= 2 and abs(qa - qb) <= 1


def test_known_orb_in_one_call_is_the_two_call_form() -> None:
    """Detecting and describing in one ORB call stores what detecting, spreading and then
    describing the kept keypoints stores: same keypoints, order, descriptors, angles, octaves."""
    from hashwatch.decode import decode_image
    from hashwatch.robust.local import (
        KNOWN_CANDIDATES,
        KNOWN_FAST,
        KNOWN_LEVELS,
        KNOWN_MIN_SIDE,
        KNOWN_SIDE,
        _local,
    )

    for p in demo_images()[:6]:
        px = decode_image(p).pixels
        for pic in (px, px[::4, ::4]):  # the small one: enlarged, lower FAST threshold
            a, b = (_local(pic, 200, KNOWN_SIDE, KNOWN_MIN_SIDE, levels=KNOWN_LEVELS,
                           candidates=KNOWN_CANDIDATES, fast=KNOWN_FAST, joint=j)
                    for j in (True, False))
            assert len(a.desc) > 50 and a.size == b.size
            for x, y in ((a.xy, b.xy), (a.desc, b.desc), (a.angle, b.angle),
                         (a.octave, b.octave)):
                assert np.array_equal(x, y)
