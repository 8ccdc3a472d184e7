"""The cheaper verification gives the verdicts of the path it replaced: the same tentative
pairs (Hamming rows in C, the k nearest picked only in rows with a stored descriptor within
the radius), the same re-found count of the scene check (all stored keypoints at once), and
a scene check that stops at its first proof with the same verdict, inliers and transform."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hashwatch import robust as R
from hashwatch.edits import apply_edit
from hashwatch.robust import kpcore
from hashwatch.robust._pixels import _POPCOUNT
from hashwatch.robust.scene import _refound
from hashwatch.robust.verify import greedy_pairs
from test_robust import _picture


def _bits(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances by unpacking every bit (independent of kpcore)."""
    return np.unpackbits(a[:, None, :] ^ b[None, :, :], axis=-1).sum(-1).astype(np.int32)


def _pairs_before(qd: np.ndarray, kd: np.ndarray, knn: int, radius: int) -> np.ndarray:
    """The tentative pairs as candidate_pairs formed them before: the k nearest of every
    query row of the whole distance matrix, then the radius, then greedy_pairs."""
    d = _bits(qd, kd)
    kk = min(knn, d.shape[1])
    j = np.argpartition(d, kk - 1, axis=1)[:, :kk] if kk < d.shape[1] else \
        np.broadcast_to(np.arange(d.shape[1]), d.shape)
    dist = np.take_along_axis(d, j, axis=1).ravel()
    qi = np.repeat(np.arange(len(qd)), j.shape[1])
    ki = np.asarray(j).ravel()
    good = dist <= radius
    return greedy_pairs(dist[good], qi[good], ki[good])


def _descriptors(nq: int, nk: int, flips: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stored descriptors and query ones, many of them a few bits from a stored one (and
    exact copies), so rows hold several pairs within the radius and distance ties."""
    rng = np.random.default_rng(seed)
    kd = rng.integers(0, 256, (nk, 32), dtype=np.uint8)
    if nk > 3:
        kd[1::4] = kd[0::4][: len(kd[1::4])]  # duplicated stored descriptors: exact ties
    qd = rng.integers(0, 256, (nq, 32), dtype=np.uint8)
    if nk:
        src = rng.integers(0, nk, nq)
        near = rng.random(nq) < 0.6
        qd[near] = kd[src[near]]
        for i in np.flatnonzero(near):
            for b in rng.integers(0, 256, rng.integers(0, flips + 1)):
                qd[i, b // 8] ^= np.uint8(1 << (b % 8))
    return qd, kd


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nq=st.integers(0, 90), nk=st.integers(0, 70), flips=st.integers(0, 60),
       knn=st.integers(1, 8), radius=st.integers(0, 120), seed=st.integers(0, 10_000))
def test_candidate_pairs_are_those_of_the_whole_matrix(nq: int, nk: int, flips: int, knn: int,
                                                      radius: int, seed: int) -> None:
    qd, kd = _descriptors(nq, nk, flips, seed)
    q = R.LocalFeatures(np.zeros((nq, 2), np.float32), qd, (64, 64))
    k = R.LocalFeatures(np.zeros((nk, 2), np.float32), kd, (64, 64))
    for numpy in (False, True):  # the extension's knn_pairs and hamming, and their twins
        kpcore.use_numpy(numpy)
        try:
            got = R.candidate_pairs(q, k, knn=knn, radius=radius)
        finally:
            kpcore.use_numpy(False)
        if nq == 0 or nk == 0:
            assert got.shape == (0, 2)
            continue
        assert np.array_equal(got, _pairs_before(qd, kd, knn, radius))


@settings(max_examples=30, deadline=None)
@given(nq=st.integers(1, 60), nk=st.integers(1, 60), flips=st.integers(0, 40),
       seed=st.integers(0, 10_000))
def test_candidate_pairs_of_a_shortened_record_compare_its_tests_only(
        nq: int, nk: int, flips: int, seed: int) -> None:
    qd, kd = _descriptors(nq, nk, flips, seed)
    kd[:, 24:] = 0  # a format-2 record keeps ORB's first 24 bytes
    q = R.LocalFeatures(np.zeros((nq, 2), np.float32), qd, (64, 64))
    k = R.LocalFeatures(np.zeros((nk, 2), np.float32), kd, (64, 64), {"desc_bytes": 24})
    qd24 = kpcore.prefix_desc(qd, 24)
    want = _pairs_before(qd24, kd, R.LOCAL_KNN, kpcore.scaled_radius(R.LOCAL_MATCH_RADIUS, 24))
    assert np.array_equal(R.candidate_pairs(q, k), want)


def _refound_before(dxy: np.ndarray, dd: np.ndarray, kxy: np.ndarray, kdesc: np.ndarray,
                    max_bits: int) -> int:
    """The scene check's re-found count as its loop over the stored keypoints counted it."""
    hit = 0
    for i in range(len(kxy)):
        near = np.flatnonzero(np.hypot(*(dxy - kxy[i]).T) <= 2.0)
        if len(near):
            bits = _POPCOUNT[np.bitwise_xor(dd[near], kdesc[i])].sum(1)
            hit += int(bits.min() <= max_bits)
    return hit


@settings(max_examples=60, deadline=None)
@given(nd=st.integers(1, 120), nk=st.integers(0, 60), max_bits=st.integers(0, 256),
       f64=st.booleans(), seed=st.integers(0, 10_000))
def test_refound_counts_what_the_loop_counted(nd: int, nk: int, max_bits: int, f64: bool,
                                              seed: int) -> None:
    rng = np.random.default_rng(seed)
    # positions on a quarter-pixel grid of a small picture: many pairs exactly 2 px apart
    # (and at 2 px on one axis only), the edge of the test
    dxy = (rng.integers(0, 60, (nd, 2)) / 4).astype(np.float32)
    kxy = (rng.integers(0, 60, (nk, 2)) / 4).astype(np.float64 if f64 else np.float32)
    dd = rng.integers(0, 256, (nd, 32), dtype=np.uint8)
    kdesc = rng.integers(0, 256, (nk, 32), dtype=np.uint8)
    if nk and nd:
        kdesc[: min(nk, nd)] = dd[: min(nk, nd)]  # some found again with 0 bits
    assert _refound(dxy, dd, kxy, kdesc, max_bits) == _refound_before(dxy, dd, kxy, kdesc,
                                                                       max_bits)


@pytest.mark.parametrize("edit", ["crop25o", "rotate5", "crop40c", "mirror", "aspect1.3w",
                                  "border-colour25", "jpeg10", "crop70c"])
def test_a_scene_check_that_stops_at_its_first_proof_gives_the_same_verdict(edit: str) -> None:
    pic = _picture(300, 420, 41)
    other = _picture(300, 420, 42)
    hashes = R.known_signals(pic)
    k = R.known_local(pic)
    for query in (apply_edit(edit, pic, seed=0, key=3), other):
        q = R.query_local(query)
        n, _, m = R.fit_local(q, k, R.candidate_pairs(q, k))
        if m is not None:
            full = R.scene_check(q, k, m, hashes)
            first = R.scene_check(q, k, m, hashes, full=False)
            assert first.ok == full.ok
            assert full.complete
            if first.complete:
                assert first == full
            else:
                assert first.pdq <= R.SCENE_PDQ_MAX and full.pdq <= first.pdq
        quick = R.verify(q, k, hashes)
        measured = R.verify(q, k, hashes, scene_all=True)
        assert (quick.ok, quick.inliers, quick.sane, quick.fit, quick.frame_share) == \
            (measured.ok, measured.inliers, measured.sane, measured.fit, measured.frame_share)
        if measured.scene is not None and quick.scene is not None:
            assert measured.scene.complete and quick.scene.ok == measured.scene.ok
    # the edited copy is found at all (the comparison above is not of two failures)
    assert R.verify(R.query_local(apply_edit(edit, pic, seed=0, key=3)), k, hashes).ok
