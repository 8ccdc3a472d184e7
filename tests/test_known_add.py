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
