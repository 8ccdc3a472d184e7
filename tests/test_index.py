"""hashwatch.index: exactness against brute force, incremental updates, persistence."""

from __future__ import annotations

import os
import stat
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hashwatch.index.segment as hwseg
from hashwatch.index import HammingIndex, choose_layout

POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.int32)


def brute(ids: np.ndarray, codes: np.ndarray, q: np.ndarray, radius: int) -> list[tuple[int, int]]:
    """Reference answer: every (id, distance) within radius, by distance then id."""
    if ids.size == 0:
        return []
    d = POP8[np.bitwise_xor(codes, q)].sum(axis=1)
    keep = np.nonzero(d <= radius)[0]
    pairs = zip(ids[keep].tolist(), d[keep].tolist(), strict=True)
    return sorted(pairs, key=lambda t: (t[1], t[0]))


def flip(code: np.ndarray, nbits: int, rng: np.random.Generator) -> np.ndarray:
    out = code.copy()
    for b in rng.choice(256, size=nbits, replace=False):
        out[b // 8] ^= np.uint8(1 << (b % 8))
    return out


def make_data(seed: int, n: int, families: int, dup: int):
    """Uniform codes plus near-duplicate families (skewed buckets) and exact duplicates."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, size=(n, 32), dtype=np.uint8)
    for f in range(min(families, n)):
        base = codes[f]
        size = int(rng.integers(1, 40))
        for k in range(size):
            j = int(rng.integers(0, n))
            codes[j] = flip(base, int(rng.integers(0, 8)), rng) if k else base
    for _ in range(dup if n else 0):
        a, b = rng.integers(0, n, size=2)
        codes[a] = codes[b]
    ids = rng.permutation(np.arange(n, dtype=np.int64) * 7 - 1000)
    return rng, ids, codes


def queries_for(rng: np.random.Generator, codes: np.ndarray, k: int) -> np.ndarray:
    qs = [rng.integers(0, 256, size=32, dtype=np.uint8) for _ in range(k // 3)]
    for _ in range(k - len(qs)):
        src = codes[int(rng.integers(0, len(codes)))] if len(codes) else np.zeros(32, np.uint8)
        qs.append(flip(src, int(rng.integers(0, 40)), rng))
    return np.stack(qs) if qs else np.empty((0, 32), np.uint8)


RADII = st.one_of(st.sampled_from([0, 1, 2, 30, 31, 32, 33, 48, 64, 256]), st.integers(0, 256))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 400),
    families=st.integers(0, 5),
    dup=st.integers(0, 20),
    radius=RADII,
    mode=st.sampled_from(["auto", "mih", "scan"]),
    chunk_bits=st.sampled_from([None, 8, 11, 16]),
)
def test_search_equals_brute_force(seed, n, families, dup, radius, mode, chunk_bits):
    rng, ids, codes = make_data(seed, n, families, dup)
    idx = HammingIndex(mode=mode, chunk_bits=chunk_bits)
    idx.add(ids, codes)
    qs = queries_for(rng, codes, 9)
    many = idx.search_many(qs, radius)
    for q, got in zip(qs, many, strict=True):
        want = brute(ids, codes, q, radius)
        assert got == want
        assert idx.search(q, radius) == want


def test_mih_path_is_exact_and_used_at_scale():
    # 60k uniform codes: the cost model picks multi-index probing at radius 31, not a scan
    rng = np.random.default_rng(7)
    codes = rng.integers(0, 256, size=(60_000, 32), dtype=np.uint8)
    ids = np.arange(60_000, dtype=np.int64)
    idx = HammingIndex()
    idx.add(ids, codes)
    seg = idx._segments[0]
    thr = seg.plan(31)
    assert thr is not None and int((thr + 1).sum()) >= 32
    assert seg.widths == choose_layout(60_000) and sum(seg.widths) == 256
    qs = np.stack(
        [
            flip(codes[i], int(r), rng)
            for i, r in zip(
                rng.integers(0, 60_000, 40), [0, 1, 15, 30, 31, 32, 33, 40] * 5, strict=True
            )
        ]
    )
    dists = [POP8[np.bitwise_xor(codes, q)].sum(axis=1) for q in qs]
    for radius in (0, 31, 32, 64):
        for d, got in zip(dists, idx.search_many(qs, radius), strict=True):
            keep = np.nonzero(d <= radius)[0]
            assert got == sorted(
                zip(ids[keep].tolist(), d[keep].tolist(), strict=True), key=lambda t: (t[1], t[0])
            )


def test_layout_covers_256_bits():
    for n in (0, 1, 100, 10_000, 1_000_000, 20_000_000, 2**31):
        widths = choose_layout(n)
        assert sum(widths) == 256 and max(widths) <= 24 and min(widths) >= 8
    assert choose_layout(20_000_000) == (24, 24, 24) + (23,) * 8


def test_duplicates_and_radius_edges():
    base = np.zeros(32, np.uint8)
    near = base.copy()
    near[:4] = 0xFF  # distance 32
    near31 = near.copy()
    near31[3] = 0x7F  # distance 31
    codes = np.stack([base, base, near31, near, base])
    ids = np.array([5, 3, 9, 1, 4], dtype=np.int64)
    for mode in ("auto", "mih", "scan"):
        idx = HammingIndex(mode=mode)
        idx.add(ids, codes)
        assert idx.search(base, 0) == [(3, 0), (4, 0), (5, 0)]
        assert idx.search(base, 31) == [(3, 0), (4, 0), (5, 0), (9, 31)]
        assert idx.search(base, 32) == [(3, 0), (4, 0), (5, 0), (9, 31), (1, 32)]
        assert idx.search(bytes(32).hex(), 256)[-1] == (1, 32)
    with pytest.raises(ValueError):
        idx.search(base, 257)
    with pytest.raises(ValueError):
        idx.search(base, -1)


class Model:
    """Dict reference for the incremental API."""

    def __init__(self) -> None:
        self.d: dict[int, bytes] = {}

    def arrays(self):
        ids = np.array(sorted(self.d), dtype=np.int64)
        codes = (
            np.frombuffer(b"".join(self.d[i] for i in ids.tolist()), np.uint8).reshape(-1, 32)
            if ids.size
            else np.empty((0, 32), np.uint8)
        )
        return ids, codes


OPS = st.lists(
    st.tuples(
        st.sampled_from(["add", "add", "remove", "compact", "check"]),
        st.integers(1, 300),
        st.integers(0, 2**31),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, mode=st.sampled_from(["auto", "mih"]), limit=st.sampled_from([0, 64, 1 << 20]))
def test_incremental_matches_model(ops, mode, limit):
    # ids drawn from a small range so adds overwrite, removes hit, removed ids come back
    idx = HammingIndex(mode=mode, sync_merge_limit=limit, background=True)
    model = Model()
    for op, k, seed in ops:
        rng = np.random.default_rng(seed)
        if op == "add":
            ids = rng.integers(0, 500, size=k).astype(np.int64)
            codes = rng.integers(0, 256, size=(k, 32), dtype=np.uint8)
            if model.d and k > 2:  # near duplicates of stored codes
                src = list(model.d.values())
                codes[0] = np.frombuffer(src[seed % len(src)], np.uint8)
                codes[1] = flip(codes[0], 3, rng)
            idx.add(ids, codes)
            for i, c in zip(ids.tolist(), codes, strict=True):
                model.d[i] = c.tobytes()
        elif op == "remove":
            ids = rng.integers(0, 500, size=k)
            removed = idx.remove(ids)
            assert removed == len(set(ids.tolist()) & set(model.d))
            for i in set(ids.tolist()):
                model.d.pop(i, None)
        elif op == "compact":
            idx.compact()
            assert len(idx._segments) <= 1
        idx.wait()
        assert len(idx) == len(model.d)
        assert idx.ids().tolist() == sorted(model.d)
        m_ids, m_codes = model.arrays()
        qs = queries_for(rng, m_codes, 4)
        for radius in (0, 31, 40):
            many = idx.search_many(qs, radius)
            for q, got in zip(qs, many, strict=True):
                assert got == idx.search(q, radius) == brute(m_ids, m_codes, q, radius)
        if model.d:
            some = next(iter(model.d))
            assert some in idx and idx.get(some) == model.d[some]
        assert 10**12 not in idx and idx.get(10**12) is None


def test_readd_removed_and_replace():
    idx = HammingIndex()
    a = np.full(32, 0xAA, np.uint8)
    b = np.full(32, 0x55, np.uint8)
    idx.add([1, 2], np.stack([a, b]))
    assert idx.remove([1, 99]) == 1
    assert 1 not in idx and len(idx) == 1
    assert idx.search(a, 0) == []
    idx.add([1], a[None])
    assert idx.search(a, 0) == [(1, 0)]
    idx.add([1], b[None])  # same id, new code: replaces
    assert idx.search(a, 0) == [] and idx.search(b, 0) == [(1, 0), (2, 0)]
    idx.add([7, 7], np.stack([a, b]))  # repeated id in one batch: the last one wins
    assert idx.get(7) == b.tobytes() and len(idx) == 3


def test_add_does_not_rebuild_base_and_background_merge():
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 256, size=(20_000, 32), dtype=np.uint8)
    ids = np.arange(20_000, dtype=np.int64)
    idx = HammingIndex(sync_merge_limit=1000, compact_ratio=0.2)
    idx.add(ids, codes)
    base = idx._segments[0]
    idx.add(ids[:100] + 50_000, codes[:100])
    assert idx._segments[0] is base and len(idx._segments) == 2  # base untouched
    idx.remove(ids[:10])
    # push the small side over 20 % of the base: a merge thread runs while we search
    extra = rng.integers(0, 256, size=(5000, 32), dtype=np.uint8)
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                assert idx.search(codes[500], 0) == [(500, 0)]
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    with idx._lock:  # the merge cannot swap in before we let go: the removal happens mid-merge
        idx.add(np.arange(100_000, 105_000), extra)
        assert idx._merge_thread is not None
        idx.remove([100_000, 11])  # must stay removed after the merged segment replaces these
    idx.wait()
    stop.set()
    t.join()
    assert not errors
    assert len(idx._segments) == 1 and idx._segments[0] is not base
    assert len(idx) == 20_000 - 11 + 100 + 4999
    assert 100_000 not in idx and 11 not in idx and 100_001 in idx and 12 in idx
    assert idx.search(extra[1], 0) == [(100_001, 0)]
    assert idx.search(codes[11], 0) == [(50_011, 0)]


def test_save_load_roundtrip(tmp_path):
    rng, ids, codes = make_data(11, 3000, 3, 10)
    idx = HammingIndex()
    idx.add(ids, codes)
    idx.add([10**9], codes[:1])
    idx.remove(ids[:50])
    path = tmp_path / "pdq.hwidx"
    idx.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["pdq.hwidx"]  # no temp file left behind
    keep = ~np.isin(ids, ids[:50])
    all_ids = np.concatenate([ids[keep], [10**9]])
    all_codes = np.concatenate([codes[keep], codes[:1]])
    qs = queries_for(rng, codes, 12)
    for mmap in (False, True):
        back = HammingIndex.load(path, mmap=mmap)
        assert len(back) == len(idx) and back.ids().tolist() == idx.ids().tolist()
        for q in qs:
            assert back.search(q) == brute(all_ids, all_codes, q, 31)
        back.remove(all_ids[:5])  # tombstones stay writable with mmap
        back.add([5], codes[:1])
        assert all_ids[0] not in back and 5 in back
    idx.save(path)  # overwrite in place
    assert HammingIndex.load(path).ids().tolist() == idx.ids().tolist()


def test_load_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"not an index at all")
    with pytest.raises(ValueError):
        HammingIndex.load(bad)
    idx = HammingIndex()
    idx.add(np.arange(100), np.zeros((100, 32), np.uint8))
    good = tmp_path / "good"
    idx.save(good)
    data = good.read_bytes()
    (tmp_path / "cut").write_bytes(data[: len(data) - 200])
    with pytest.raises(ValueError):
        HammingIndex.load(tmp_path / "cut")


def test_input_validation():
    idx = HammingIndex()
    with pytest.raises(ValueError):
        idx.add([1, 2], np.zeros((3, 32), np.uint8))
    with pytest.raises(ValueError):
        idx.add([1], np.zeros((1, 31), np.uint8))
    with pytest.raises(TypeError):
        idx.add([1], np.zeros((1, 32), np.int32))
    with pytest.raises(ValueError):
        idx.search(np.zeros((2, 32), np.uint8))
    with pytest.raises(ValueError):
        HammingIndex(mode="fast")
    assert idx.search(b"\0" * 32) == [] and len(idx) == 0
    assert idx.search_many(np.zeros((3, 32), np.uint8)) == [[], [], []]
    idx.add([], np.empty((0, 32), np.uint8))
    assert len(idx) == 0


def test_numpy_fallback_is_exact(monkeypatch):
    # the index must work (scanning) when the C extension could not be built
    monkeypatch.setattr(hwseg, "_mih", None)  # the segments are what call the extension
    rng, ids, codes = make_data(5, 700, 3, 5)
    idx = HammingIndex()
    idx.add(ids, codes)
    idx.remove(ids[:7])
    keep = ~np.isin(ids, ids[:7])
    for q in queries_for(rng, codes, 6):
        assert idx.search(q, 31) == brute(ids[keep], codes[keep], q, 31)


def test_append_merge_reuses_base_buffers(tmp_path):
    # compaction appends the deltas into the base's spare room (a second sorted run of ids)
    # and rebuilds the chunk tables one at a time instead of a second full copy of the index
    rng = np.random.default_rng(9)
    n = 30_000
    codes = rng.integers(0, 256, size=(n + 3000, 32), dtype=np.uint8)
    codes[n + 5] = flip(codes[17], 4, rng)  # a near duplicate of a base code, in a delta
    ids = np.arange(n + 3000, dtype=np.int64) * 2
    ids[n:] = rng.permutation(n + 3000)[:3000] * 2 + 1  # delta ids interleave with the base's
    idx = HammingIndex(sync_merge_limit=1000, auto_compact=False)
    idx.add(ids[:n], codes[:n])
    base = idx._segments[0]
    assert base.bufs is not None and base.bufs[0].shape[0] > n  # spare capacity
    idx.add(ids[n : n + 1500], codes[n : n + 1500])
    idx.add(ids[n + 1500 :], codes[n + 1500 :])
    assert len(idx._segments) == 3  # deltas above sync_merge_limit are not folded inline
    idx.remove([ids[3], ids[n + 7]])
    errors: list[BaseException] = []
    with idx._lock:  # removals while the merge runs: one in the base, one in a delta
        idx._start_merge()
        idx.remove([ids[4], ids[n + 8]])
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                got = idx.search(codes[17], 8)
                assert got == [(int(ids[17]), 0), (int(ids[n + 5]), 4)], got
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    idx.wait()
    stop.set()
    t.join()
    assert not errors
    (seg,) = idx._segments
    # dead base entries stay as tombstones, the delta one removed before the merge is gone
    assert np.shares_memory(seg.codes, base.bufs[1]) and seg.n == n + 3000 - 1
    assert seg.runs == (0, n, n + 3000 - 1)
    keep = ~np.isin(ids, ids[[3, 4, n + 7, n + 8]])
    assert len(idx) == int(keep.sum()) and idx.ids().tolist() == sorted(ids[keep].tolist())
    assert all(int(i) in idx for i in ids[keep][::97]) and int(ids[n + 8]) not in idx
    idx.add([ids[3]], codes[3:4])  # a removed base id comes back (in a new delta)
    assert idx.search(codes[3], 0) == [(int(ids[3]), 0)]
    idx.remove([ids[3]])
    for q in queries_for(rng, codes, 10):
        assert idx.search(q, 31) == brute(ids[keep], codes[keep], q, 31)
    path = tmp_path / "idx"
    idx.save(path)
    back = HammingIndex.load(path, sync_merge_limit=1000)
    assert back._segments[0].bufs is not None and len(back) == len(idx)
    back.add([10**9], codes[:1])
    back.compact()
    assert len(back._segments) == 1 and back.search(codes[0], 0) == [(0, 0), (10**9, 0)]


def _root(a: np.ndarray) -> object:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a.base if a.base is not None else a


def test_merged_small_segments_are_one_buffer_and_stay_exact():
    """A segment made by a (tiered) merge keeps its ids, codes, tombstones and chunk tables
    in one buffer (one allocation, released whole when merged away), and searches through
    it stay exact; ``data_bytes`` counts those arrays without a big segment's spare room."""
    rng = np.random.default_rng(11)
    codes = rng.integers(0, 256, size=(3000, 32), dtype=np.uint8)
    idx = HammingIndex(auto_compact=False)
    for a in range(0, 3000, 7):  # small batches: tiered merges of growing segments
        idx.add(np.arange(a, min(a + 7, 3000)), codes[a : a + 7])
    idx.remove([5, 2000])
    merged = [s for s in idx._segments if s.n > 7]
    assert merged
    for s in merged:
        arrays = [s.ids, s.codes, s.tomb, *s.offsets, *s.postings]
        assert len({id(_root(a)) for a in arrays}) == 1
        assert sum(a.nbytes for a in arrays) == s.data_bytes() <= _root(s.ids).nbytes
    assert idx.search(codes[1234], 0) == [(1234, 0)]
    assert idx.search(codes[5], 0) == [] and len(idx) == 2998
    big = HammingIndex(sync_merge_limit=100)
    big.add(np.arange(1000), codes[:1000])  # > sync limit: buffers with spare room
    s = big._segments[0]
    assert s.bufs is not None and big.stats()["data_bytes"] < big.stats()["bytes"]
    assert big.stats()["data_bytes"] == s.data_bytes() == (
        1000 * (8 + 32 + 1) + sum(a.nbytes for a in (*s.offsets, *s.postings)))
