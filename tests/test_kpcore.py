"""The keypoint index's hot path: the numpy twins give what the C extension gives, and the
index works (searches, same nominees) when the extension is missing."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hashwatch.robust import kpcore
from hashwatch.robust.keypoint_index import KeypointIndex, KeypointParams
from test_keypoint_index import noisy, random_set, random_vocab

needs_c = pytest.mark.skipif(not kpcore.HAVE_C_EXTENSION, reason="the C extension is not built")


@pytest.fixture
def numpy_twins():
    kpcore.use_numpy(True)
    yield
    kpcore.use_numpy(False)


@needs_c
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 60), m=st.integers(1, 5), probe=st.integers(1, 4),
       seed=st.integers(0, 10_000))
def test_numpy_assign_equals_the_extension(n: int, m: int, probe: int, seed: int) -> None:
    voc = random_vocab(8, 6, seed % 7)
    d = np.random.default_rng(seed).integers(0, 256, (n, 32), dtype=np.uint8)
    # near-duplicates of centres make ties, where both must pick the smaller word
    d[: n // 3] = voc.fine.reshape(-1, 32)[: n // 3]
    out = []
    for on in (False, True):
        kpcore.use_numpy(on)
        try:
            out.append(voc.assign(d, m, coarse_probe=probe))
        finally:
            kpcore.use_numpy(False)
    assert np.array_equal(out[0][0], out[1][0]) and np.array_equal(out[0][1], out[1][1])


def _search_all(ix: KeypointIndex, queries: list) -> list:
    return [[(c.image_id, c.slot, round(c.score, 4)) for c in ix.search(q, top=5)]
            for q in queries]


@needs_c
def test_numpy_search_equals_the_extension(tmp_path) -> None:
    rng = np.random.default_rng(3)
    params = KeypointParams(n_index=48, n_verify=96, ht=4, seal_slots=16, max_df_share=1.0)
    ix = KeypointIndex(random_vocab(16, 32, 0), params)
    sets = [random_set(rng) for _ in range(70)]
    for i, f in enumerate(sets):
        ix.add(1000 + i // 2, f)  # two sets per image: candidates are per image
    ix.remove([1003])
    queries = [noisy(sets[i], rng) for i in (0, 7, 21, 44, 69)] + [random_set(rng)]
    c = _search_all(ix, queries)
    kpcore.use_numpy(True)
    try:
        n = _search_all(ix, queries)
    finally:
        kpcore.use_numpy(False)
    assert c == n
    assert c[0][0][0] == 1000 and c[2][0][0] == 1010
    assert all(1003 not in [x[0] for x in r] for r in c)
    # the vote scratch is clean after each search: the same query gives the same votes again
    assert _search_all(ix, queries) == c


def test_index_searches_without_the_extension(numpy_twins, monkeypatch) -> None:
    """What a checkout without a C compiler gets: one warning, then the same nominations."""
    monkeypatch.setattr(kpcore, "_kpidx", None)
    monkeypatch.setattr(kpcore, "_warned", False)
    rng = np.random.default_rng(5)
    params = KeypointParams(n_index=48, n_verify=96, ht=4, seal_slots=16, max_df_share=1.0)
    ix = KeypointIndex(random_vocab(16, 32, 1), params)
    sets = [random_set(rng) for _ in range(30)]
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        for i, f in enumerate(sets):
            ix.add(i, f)
        got = [ix.search(noisy(sets[i], rng), top=3)[0].image_id for i in (2, 11, 29)]
        ix.search(noisy(sets[4], rng), top=3)
    assert got == [2, 11, 29]
    msgs = [str(x.message) for x in w if issubclass(x.category, RuntimeWarning)]
    assert len(msgs) == 1 and "_kpidx" in msgs[0] and "make install" in msgs[0]


def _scan_reference(offsets, sigs, ids, qw, qs, qwt, ht, stamp, votes, last, touched, m=0):
    """The posting-by-posting loop the scan implements, in plain Python: one vote per
    (descriptor, slot), slots listed in the order they first got a vote. ``qs`` holds one
    signature per descriptor, or (``m`` given and len(qs) == len(qw)) one per (descriptor,
    word)."""
    nq = len(qw) // m if m else len(qs)
    m = len(qw) // nq
    per_word = len(qs) == len(qw) and len(qs) != nq
    scanned = passed = 0
    for i in range(nq):
        qid = stamp + i
        for j in range(m):
            s = int(qs[i * m + j] if per_word else qs[i])
            w, wt = int(qw[i * m + j]), float(qwt[i * m + j])
            if w < 0 or w >= len(offsets) - 1 or wt <= 0:
                continue
            a, b = int(offsets[w]), int(offsets[w + 1])
            scanned += b - a
            for p in range(a, b):
                if bin(int(sigs[p]) ^ s).count("1") > ht:
                    continue
                passed += 1
                slot = int(ids[p])
                if last.get(slot) == qid:
                    continue
                last[slot] = qid
                if votes.get(slot, 0.0) == 0.0:
                    touched.append(slot)
                votes[slot] = float(np.float32(votes.get(slot, 0.0)) + np.float32(wt))
    return scanned, passed


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_words=st.integers(1, 6), n_slots=st.integers(1, 40), lists=st.integers(0, 1500),
       nq=st.integers(1, 30), m=st.integers(1, 4), ht=st.integers(0, 16),
       segments=st.integers(1, 3), cap=st.integers(1, 64), numpy=st.booleans(),
       per_word=st.booleans(), seed=st.integers(0, 10_000))
def test_scan_gives_the_votes_of_the_posting_by_posting_loop(
        n_words: int, n_slots: int, lists: int, nq: int, m: int, ht: int, segments: int,
        cap: int, numpy: bool, per_word: bool, seed: int) -> None:
    """Random posting lists (long ones cross the scan's 256-posting chunks and its vote
    batches; a slot may repeat within a list and across a descriptor's words; few signature
    bits so that many pass), any radius, zero weights and missing words, several segments (each
    its own range of slots, as in the index) sharing the scratch, a touched list that
    overflows, and two searches one after the other on the same scratch (nothing is reset
    between them): the extension (and its numpy twin) give exactly the reference's votes,
    stamps, touched order and counts; with one query signature per descriptor or one per
    (descriptor, word) (the per-word scheme)."""
    rng = np.random.default_rng(seed)
    acc = np.zeros(n_slots * segments, kpcore.ACC_DTYPE)
    touched = np.zeros(cap, np.uint32)
    votes = np.zeros(cap, np.float32)
    ref_last: dict[int, int] = {}  # stamps outlive a search, as the scratch's do
    stamp = int(rng.integers(1, 1000))
    for _search in range(2):
        ref_votes: dict[int, float] = {}
        ref_touched: list[int] = []
        qw = rng.integers(-1, n_words + 1, nq * m).astype(np.int64)
        nqs = nq * m if per_word else nq
        qs = rng.integers(0, 1 << 16, nqs).astype(np.uint16) & np.uint16(rng.integers(1, 1 << 16))
        qwt = np.where(rng.random(nq * m) < 0.15, 0.0, rng.random(nq * m) * 5).astype(np.float32)
        nt = 0
        kpcore.use_numpy(numpy)
        try:
            for g in range(segments):
                words = np.sort(rng.integers(0, n_words, lists))
                counts = np.bincount(words, minlength=n_words)
                offsets = np.zeros(n_words + 1, np.uint64)
                np.cumsum(counts, out=offsets[1:])
                sigs = (rng.integers(0, 1 << 16, lists) & 0x00F3).astype(np.uint16)
                ids = (g * n_slots + rng.integers(0, n_slots, lists)).astype(np.uint32)
                nt, sc, pa = kpcore.scan(offsets, sigs, ids, qw, qs, qwt, ht, stamp, acc, votes,
                                         touched, nt, m)
                rs, rp = _scan_reference(offsets, sigs, ids, qw, qs, qwt, ht, stamp, ref_votes,
                                         ref_last, ref_touched, m)
                assert (sc, pa) == (rs, rp)
        finally:
            kpcore.use_numpy(False)
        assert nt == len(ref_touched)
        kept = min(nt, cap)
        assert touched[:kept].tolist() == ref_touched[:cap]
        # a slot placed in the touched list has all its votes, even when the list overflowed
        assert votes[:kept].tolist() == [np.float32(ref_votes[t]) for t in ref_touched[:cap]]
        want_last = np.zeros(len(acc), np.uint32)
        for k, v in ref_last.items():
            want_last[k] = v
        assert np.array_equal(acc["stamp"], want_last)
        stamp += nq + int(rng.integers(0, 3))  # the next search's stamps are newer


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 300), k=st.integers(1, 40), levels=st.integers(1, 6),
       numpy=st.booleans(), seed=st.integers(0, 10_000))
def test_collect_keeps_the_k_best_live_slots_ties_in_touched_order(
        n: int, k: int, levels: int, numpy: bool, seed: int) -> None:
    """Few distinct vote values (many ties), zero votes, tombstoned slots and slots past the
    tombstone array: the k best live ones, vote descending, a tie kept in touched order."""
    rng = np.random.default_rng(seed)
    touched = rng.permutation(400)[:n].astype(np.uint32)
    votes = (rng.integers(0, levels, n) * 0.5).astype(np.float32)
    dead = (rng.random(380) < 0.2).astype(np.uint8)
    want = [(float(v), int(t)) for t, v in zip(touched, votes, strict=True)
            if v > 0 and t < len(dead) and not dead[t]]
    want = sorted(enumerate(want), key=lambda x: (-x[1][0], x[0]))[:k]  # stable: touched order
    out_s, out_v = np.empty(k, np.int64), np.empty(k, np.float32)
    kpcore.use_numpy(numpy)
    try:
        got = kpcore.collect(votes, touched, n, dead, k, out_s, out_v)
    finally:
        kpcore.use_numpy(False)
    assert got == len(want)
    assert out_s[:got].tolist() == [t for _, (_, t) in want]
    assert out_v[:got].tolist() == [v for _, (v, _) in want]


@needs_c
def test_scan_refuses_a_posting_outside_the_scratch() -> None:
    offsets = np.array([0, 2], np.uint64)
    args = (offsets, np.zeros(2, np.uint16), np.array([0, 7], np.uint32),
            np.zeros(1, np.int64), np.zeros(1, np.uint16), np.ones(1, np.float32), 3, 1)
    with pytest.raises(ValueError, match="outside"):
        kpcore.scan(*args, np.zeros(4, kpcore.ACC_DTYPE), np.zeros(8, np.float32),
                    np.zeros(8, np.uint32), 0)
    with pytest.raises(ValueError, match="inconsistent"):
        kpcore.scan(*args, np.zeros(9, np.uint8), np.zeros(8, np.float32),
                    np.zeros(8, np.uint32), 0)
    with pytest.raises(ValueError, match="inconsistent"):  # fewer votes than touched places
        kpcore.scan(*args, np.zeros(8, kpcore.ACC_DTYPE), np.zeros(4, np.float32),
                    np.zeros(8, np.uint32), 0)


@pytest.mark.parametrize("numpy", [False, True])
def test_scan_refuses_bad_counts_and_never_writes_past_its_buffers(numpy: bool) -> None:
    """A negative touched count or a stamp range past 2^32 is refused; a caller that reuses a
    search's stamp with a shorter touched list (breaking the contract) gets no write outside
    the buffers it passed."""
    if not numpy and not kpcore.HAVE_C_EXTENSION:
        pytest.skip("the C extension is not built")
    offsets = np.array([0, 60], np.uint64)
    sigs, ids = np.zeros(60, np.uint16), np.arange(60, dtype=np.uint32)
    qw, qs, qwt = np.zeros(2, np.int64), np.zeros(2, np.uint16), np.ones(2, np.float32)
    acc = np.zeros(64, kpcore.ACC_DTYPE)
    kpcore.use_numpy(numpy)
    try:
        with pytest.raises(ValueError, match="inconsistent"):
            kpcore.scan(offsets, sigs, ids, qw, qs, qwt, 0, 5, acc, np.zeros(8, np.float32),
                        np.zeros(8, np.uint32), -3)
        with pytest.raises(ValueError, match="inconsistent"):  # stamps 2^32 - 1 and 2^32
            kpcore.scan(offsets, sigs, ids, qw, qs, qwt, 0, 2**32 - 1, acc,
                        np.zeros(8, np.float32), np.zeros(8, np.uint32), 0)
        big_votes, big_touched = np.zeros(64, np.float32), np.zeros(64, np.uint32)
        nt, _, _ = kpcore.scan(offsets, sigs, ids, qw, qs, qwt, 0, 5, acc, big_votes,
                               big_touched, 0)
        assert nt == 60
        big_votes[:], big_touched[:] = 0, 0
        # the same stamp again, with views of 4 places: the cells say places 0-59
        nt, _, _ = kpcore.scan(offsets, sigs, ids, qw, qs, qwt, 0, 5, acc, big_votes[:4],
                               big_touched[:4], 0)
    finally:
        kpcore.use_numpy(False)
    assert not big_votes[4:].any() and not big_touched[4:].any()


def _signature_reference(desc, table, rows):
    """Bit b of (descriptor i, word j)'s signature is descriptor bit table[rows[i, j], b]
    (bit 0 the MSB of byte 0); 0 for row -1."""
    out = np.zeros(rows.shape, np.uint16)
    for i in range(rows.shape[0]):
        bits = [(int(desc[i, k // 8]) >> (7 - k % 8)) & 1 for k in range(256)]
        for j in range(rows.shape[1]):
            r = int(rows[i, j])
            if r >= 0:
                out[i, j] = sum(bits[int(table[r, b])] << b for b in range(16))
    return out


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 30), m=st.integers(1, 4), n_rows=st.integers(1, 20),
       numpy=st.booleans(), seed=st.integers(0, 10_000))
def test_signatures_are_the_table_bits(n: int, m: int, n_rows: int, numpy: bool,
                                       seed: int) -> None:
    """The extension's (and the numpy twin's) signature of each (descriptor, word) is the
    descriptor's bits at its row of the table, whatever the rows (repeated, -1)."""
    rng = np.random.default_rng(seed)
    desc = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    table = rng.integers(0, 256, (n_rows, 16)).astype(np.int16)
    rows = rng.integers(-1, n_rows, (n, m)).astype(np.int64)
    out = np.full(n * m, 0xABCD, np.uint16)
    kpcore.use_numpy(numpy)
    try:
        kpcore.signatures(desc, table, rows, m, out)
        if n:
            with pytest.raises(ValueError, match="row"):
                kpcore.signatures(desc, table, np.full((n, m), n_rows, np.int64), m,
                                  np.zeros(n * m, np.uint16))
    finally:
        kpcore.use_numpy(False)
    assert np.array_equal(out.reshape(n, m), _signature_reference(desc, table, rows))


@settings(max_examples=40, deadline=None)
@given(na=st.integers(0, 50), nb=st.integers(0, 140), seed=st.integers(0, 10_000))
def test_hamming_matrix_and_row_minima_are_the_bit_count(na: int, nb: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (na, 32), dtype=np.uint8)
    b = rng.integers(0, 256, (nb, 32), dtype=np.uint8)
    want = np.unpackbits(a[:, None, :] ^ b[None, :, :], axis=-1).sum(-1)
    for on in (False, True):
        kpcore.use_numpy(on)
        try:
            d, mn = kpcore.hamming_rows(a, b)
        finally:
            kpcore.use_numpy(False)
        assert d.dtype == np.int32 and np.array_equal(d, want.reshape(na, nb))
        assert np.array_equal(mn, want.min(axis=1) if nb else np.full(na, 257))
        assert np.array_equal(kpcore.hamming_matrix(a, b), d)
