"""The scale study's own machinery: recombined keypoint sets, the query cache, merging the
query parts, the fitted laws. (The study itself is a benchmark: benchmarks/scale_study.py.)"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hashwatch import robust as R
from hashwatch.robust.local import LocalFeatures, mirrored_count, tile_count
from hashwatch.scalestudy import (
    Query,
    QueryCache,
    SizeResult,
    _merge,
    fit_affine,
    fit_power,
    recombine,
)


def _set(rng: np.random.Generator, n: int, w: int, h: int) -> LocalFeatures:
    xy = np.stack([rng.uniform(0, w, n), rng.uniform(0, h, n)], 1).astype(np.float32)
    desc = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    return LocalFeatures(xy, desc, (w, h), {}, rng.integers(0, 256, n).astype(np.uint8),
                         rng.integers(0, 8, n).astype(np.uint8))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 200), st.integers(1, 200),
       st.integers(40, 900), st.integers(40, 900))
def test_recombine_keeps_real_rows_inside_the_new_frame(seed: int, na: int, nb: int,
                                                         w: int, h: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = _set(rng, na, w, h), _set(rng, nb, h, w)
    c = recombine(a, b, np.random.default_rng(seed + 1))
    rows_ab = {r.tobytes() for r in np.concatenate([a.desc, b.desc])}
    assert all(r.tobytes() in rows_ab for r in c.desc)
    assert len(c.desc) == len(c.xy) == len(c.angle) == len(c.octave) <= na + nb
    cw, ch = c.size
    assert (c.xy[:, 0] >= 0).all() and (c.xy[:, 1] >= 0).all()
    assert (c.xy[:, 0] <= cw + 1).all() and (c.xy[:, 1] <= ch + 1).all()
    # every kept keypoint keeps its own angle and octave
    src = {r.tobytes(): (ang, o) for f in (a, b) for r, ang, o in zip(f.desc, f.angle,
                                                                       f.octave, strict=True)}
    assert all(src[r.tobytes()] == (ang, o) for r, ang, o in zip(c.desc, c.angle, c.octave,
                                                                  strict=True))


def test_recombine_takes_a_part_of_each_set() -> None:
    rng = np.random.default_rng(3)
    a, b = _set(rng, 200, 400, 300), _set(rng, 200, 400, 300)
    c = recombine(a, b, np.random.default_rng(4))
    a_rows = {r.tobytes() for r in a.desc}
    from_a = sum(r.tobytes() in a_rows for r in c.desc)
    assert 40 < from_a < len(c.desc) - 40  # 30-70% cuts: both parts are there


def test_query_cache_keeps_the_pass_counts(tmp_path) -> None:
    rng = np.random.default_rng(0)
    f = _set(rng, 30, 100, 80)
    f.extra.update({"view": rng.integers(0, 256, (80, 100), dtype=np.uint8), "mirrored": 12,
                    "tiles": 5})
    g = _set(rng, 10, 50, 40)  # plain features, no passes
    g.extra["view"] = rng.integers(0, 256, (40, 50), dtype=np.uint8)
    code = bytes(range(32))
    qs = [Query("crop60c", 3, [], [R.QueryHash("full", code, 90)], False, f, 0.1, 0.2),
          Query("crop60c", 4, [7], [R.QueryHash("full", code, 90)], False, g, 0.1, 0.2),
          Query("crop60c", 5, [], [R.QueryHash("full", code, 90)], True, None, 0.1, 0.0)]
    cache = QueryCache(tmp_path)
    cache.save("crop60c", qs)
    back = cache.load("crop60c")
    assert (mirrored_count(back[0].local), tile_count(back[0].local)) == (12, 5)
    assert (mirrored_count(back[1].local), tile_count(back[1].local)) == (0, 0)
    assert back[2].local is None and back[1].partners == [7]
    assert np.array_equal(back[0].local.desc, f.desc)
    assert np.array_equal(back[0].local.extra["view"], f.extra["view"])


def test_merge_adds_counts_and_keeps_lists_aligned() -> None:
    a, b = SizeResult(10, 2, 5), SizeResult(10, 2, 5)
    a.found["x"], b.found["y"] = [True], [False, True]
    a.n_queries["edited"], b.n_queries["edited"] = 3, 4
    a.t_kind, a.t_cpu = ["edited"], [0.01]
    b.t_kind, b.t_cpu = ["distractor", "edited"], [0.2, 0.03]
    out = SizeResult(10, 2, 5)
    _merge(out, a)
    _merge(out, b)
    assert out.found == {"x": [True], "y": [False, True]}
    assert out.n_queries == {"edited": 7}
    assert list(zip(out.t_kind, out.t_cpu, strict=True)) == [
        ("edited", 0.01), ("distractor", 0.2), ("edited", 0.03)]


def test_laws_recover_known_forms() -> None:
    n = [2e5, 5e5, 1e6]
    k, b = fit_power(n, [3.0 * x ** 0.5 for x in n])
    assert abs(k - 3.0) < 1e-6 and abs(b - 0.5) < 1e-9
    a0, c = fit_affine(n, [7.0 + 0.25 * x for x in n])
    assert abs(a0 - 7.0) < 1e-4 and abs(c - 0.25) < 1e-12


def test_duplicate_distractors_finds_the_same_photograph_under_another_name(tmp_path) -> None:
    from PIL import Image

    from hashwatch.scaleset import duplicate_distractors

    def picture(seed: int) -> np.ndarray:
        r = np.random.default_rng(seed)
        small = r.integers(0, 256, (12, 16, 3), dtype=np.uint8)  # blocky, PDQ-rich
        return np.asarray(Image.fromarray(small).resize((320, 240), Image.BILINEAR))

    a, b, c = picture(1), picture(2), picture(3)
    paths = {}
    for name, px in (("a.png", a), ("b.png", b), ("c.png", c)):
        paths[name] = tmp_path / name
        Image.fromarray(px).save(paths[name])
    # the same photograph as "a", smaller and re-encoded: a different file
    paths["a_small.jpg"] = tmp_path / "a_small.jpg"
    Image.fromarray(a).resize((160, 120)).save(paths["a_small.jpg"], quality=85)
    got = duplicate_distractors([paths["a_small.jpg"], paths["c.png"]],
                                [paths["a.png"], paths["b.png"]])
    assert got == [0]
