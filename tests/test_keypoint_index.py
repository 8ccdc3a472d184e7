"""The keypoint index (inverted file + on-disk verification store) and its vocabulary."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hashwatch.robust.keypoint_index import (
    KeypointIndex,
    KeypointParams,
    decode_verify,
    encode_verify,
    spread_order,
    subset,
)
from hashwatch.robust.kprecord import verify_record_bytes
from hashwatch.robust.local import LocalFeatures
from hashwatch.robust.vocab import (
    SIG_BITS,
    Vocabulary,
    choose_word_signature_bits,
    k_majority,
    train,
)


def _popcount(a: np.ndarray) -> np.ndarray:
    return np.unpackbits(a, axis=-1).sum(-1)


def random_vocab(k1: int = 16, k2: int = 16, seed: int = 0, per_word: bool = False
                 ) -> Vocabulary:
    """Random centres; signature bits every 16th bit ("global") or, ``per_word``, 16 random
    distinct bits per word ("word")."""
    rng = np.random.default_rng(seed)
    if per_word:
        sig = np.sort(np.array([rng.choice(256, SIG_BITS, replace=False)
                                for _ in range(k1 * k2)]), axis=1).astype(np.int16)
    else:
        sig = np.arange(0, 256, 256 // SIG_BITS, dtype=np.int16)[:SIG_BITS]
    return Vocabulary(rng.integers(0, 256, (k1, 32), dtype=np.uint8),
                      rng.integers(0, 256, (k1, k2, 32), dtype=np.uint8), sig)


def random_set(rng: np.random.Generator, n: int = 120, size: tuple[int, int] = (400, 300)
               ) -> LocalFeatures:
    xy = rng.uniform(0, 1, (n, 2)).astype(np.float32) * np.array(size, np.float32)
    return LocalFeatures(xy, rng.integers(0, 256, (n, 32), dtype=np.uint8), size,
                         angle=rng.integers(0, 256, n).astype(np.uint8),
                         octave=rng.integers(0, 8, n).astype(np.uint8))


def noisy(f: LocalFeatures, rng: np.random.Generator, bits: int = 6, keep: float = 0.6
          ) -> LocalFeatures:
    """A query made from a known set: a share of its keypoints, each descriptor with a few
    bits flipped (what re-encoding does to ORB)."""
    idx = np.flatnonzero(rng.random(len(f.desc)) < keep)
    d = np.unpackbits(f.desc[idx], axis=1)
    for r in range(len(idx)):
        d[r, rng.choice(256, bits, replace=False)] ^= 1
    return LocalFeatures(f.xy[idx], np.packbits(d, axis=1), f.size)


# -- vocabulary -----------------------------------------------------------------------------


def test_assign_is_nearest_within_probed_cells() -> None:
    voc = random_vocab(8, 12, seed=1)
    rng = np.random.default_rng(2)
    d = rng.integers(0, 256, (50, 32), dtype=np.uint8)
    words, dists = voc.assign(d, m=3, coarse_probe=2)
    cd = _popcount(d[:, None, :] ^ voc.coarse[None])
    for i in range(len(d)):
        cells = np.argsort(cd[i], kind="stable")[:2]
        cand = [(int(_popcount(d[i] ^ voc.fine[c, j])), int(c * voc.k2 + j))
                for c in cells for j in range(voc.k2)]
        best = sorted(cand)[:3]
        assert [x[0] for x in best] == dists[i].tolist()
        # ties may pick a different word at the same distance; each word is at its distance
        for w, dd in zip(words[i], dists[i], strict=True):
            assert _popcount(d[i] ^ voc.fine[w // voc.k2, w % voc.k2]) == dd


def test_signatures_are_the_chosen_bits() -> None:
    voc = random_vocab()
    rng = np.random.default_rng(3)
    d = rng.integers(0, 256, (20, 32), dtype=np.uint8)
    sig = voc.signatures(d)
    bits = np.unpackbits(d, axis=1)[:, voc.sig_bits]
    for i in range(len(d)):
        assert [(int(sig[i]) >> b) & 1 for b in range(SIG_BITS)] == bits[i].tolist()


def test_per_word_signatures_take_each_words_bits() -> None:
    voc = random_vocab(per_word=True)
    assert voc.sig_scheme == "word"
    rng = np.random.default_rng(3)
    d = rng.integers(0, 256, (20, 32), dtype=np.uint8)
    words, _ = voc.assign(d, 3, coarse_probe=2)
    words[0, 2] = -1
    sig = voc.signatures(d, words)
    assert sig.shape == words.shape and sig[0, 2] == 0
    bits = np.unpackbits(d, axis=1)
    for i in range(len(d)):
        for j, w in enumerate(words[i].tolist()):
            if w >= 0:
                want = bits[i, voc.sig_bits[w]]
                assert [(int(sig[i, j]) >> b) & 1 for b in range(SIG_BITS)] == want.tolist()
    with pytest.raises(ValueError, match="words"):
        voc.signatures(d)
    with pytest.raises(ValueError, match="sig_bits"):
        Vocabulary(voc.coarse, voc.fine, voc.sig_bits[:5])


def test_word_signature_bits_are_the_bits_that_vary_inside_the_word() -> None:
    """Members of each word share every bit but a word-specific set of 16 (each set at random
    in each member): those 16 are the word's choice, whatever another word varies."""
    rng = np.random.default_rng(8)
    k1, k2 = 2, 4
    desc, words, want = [], [], []
    for w in range(k1 * k2):
        free = np.sort(rng.choice(256, SIG_BITS, replace=False))
        want.append(free)
        base = rng.integers(0, 2, 256).astype(np.uint8)
        for _ in range(500):  # enough that chance correlations stay below 0.3
            b = base.copy()
            b[free] = rng.integers(0, 2, SIG_BITS)
            desc.append(np.packbits(b))
            words.append(w)
    got = choose_word_signature_bits(np.array(desc), np.array(words, np.int64), k1, k2,
                                     np.arange(SIG_BITS), shrink=1.0)
    assert got.shape == (k1 * k2, SIG_BITS)
    assert [g.tolist() for g in got] == [w.tolist() for w in want]


def test_k_majority_centres_are_majorities() -> None:
    rng = np.random.default_rng(4)
    base = rng.integers(0, 256, (4, 32), dtype=np.uint8)
    # four tight clusters: members are their centre with 3 bits flipped
    members = []
    for c in base:
        for _ in range(40):
            b = np.unpackbits(c)
            b[rng.choice(256, 3, replace=False)] ^= 1
            members.append(np.packbits(b))
    cent = k_majority(np.array(members), 4, iters=5, seed=0)
    got = {bytes(c) for c in cent}
    assert got == {bytes(c) for c in base}
    with pytest.raises(ValueError):
        k_majority(np.array(members[:3]), 4)


@settings(max_examples=40, deadline=None)
@given(k=st.integers(1, 24), extra=st.integers(0, 40), seed=st.integers(0, 2**32 - 1))
def test_kmeanspp_seeds_each_distinct_point_once(k: int, extra: int, seed: int) -> None:
    """k-means++ never draws a point at distance 0 from a seed: on data of exactly k distinct
    rows (repeated), the k seeds are those k rows, each once."""
    rng = np.random.default_rng(seed)
    rows = np.unique(rng.integers(0, 256, (k, 32), dtype=np.uint8), axis=0)
    if len(rows) < k:
        return
    desc = rows[rng.integers(0, k, k + extra)]
    desc[:k] = rows  # every row present at least once
    cent = k_majority(desc, k, iters=0, seed=seed % 1000)
    assert sorted(bytes(c) for c in cent) == sorted(bytes(r) for r in rows)


def test_kmeanspp_draws_by_squared_distance() -> None:
    """The seeding's law (Arthur and Vassilvitskii 2007): the first seed uniform, the next in
    proportion to the squared Hamming distance from it. Three points, 0 / 8 / 16 bits set
    (pairwise 8, 16, 24 bits apart); the frequencies of the 6 ordered pairs of 2 seeds over
    3,000 fixed seeds against the exact probabilities."""
    x = np.zeros((3, 32), np.uint8)
    x[1, :1] = 0xFF  # 8 bits
    x[2, 1:3] = 0xFF  # 16 other bits
    dist = np.array([[0, 8, 16], [8, 0, 24], [16, 24, 0]], float)
    want = {(a, b): (1 / 3) * dist[a, b] ** 2 / (dist[a] ** 2).sum()
            for a in range(3) for b in range(3) if a != b}
    runs = 3000
    seen: dict[tuple[int, int], int] = {}
    for s in range(runs):
        c = k_majority(x, 2, iters=0, seed=s)
        pair = tuple(int(np.flatnonzero((x == row).all(axis=1))[0]) for row in c)
        seen[pair] = seen.get(pair, 0) + 1
    assert set(seen) <= set(want)
    for pair, p in want.items():
        assert abs(seen.get(pair, 0) / runs - p) < 0.03, (pair, seen, want)


def test_train_gives_a_usable_vocabulary(tmp_path) -> None:
    rng = np.random.default_rng(5)
    d = rng.integers(0, 256, (3000, 32), dtype=np.uint8)
    voc = train(d, 4, 8, iters=2)
    assert voc.coarse.shape == (4, 32) and voc.fine.shape == (4, 8, 32)
    assert voc.sig_scheme == "word" and voc.sig_bits.shape == (voc.n_words, SIG_BITS)
    assert all(len(set(row.tolist())) == SIG_BITS for row in voc.sig_bits)
    voc.save(tmp_path / "v.npz")
    again = Vocabulary.load(tmp_path / "v.npz")
    assert again.digest() == voc.digest()
    w, _ = again.assign(d[:10])
    assert ((w >= 0) & (w < voc.n_words)).all()


# -- verification records -------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(n=st.integers(0, 300), w=st.integers(1, 65535), h=st.integers(1, 65535),
       nb=st.integers(1, 32), seed=st.integers(0, 2**32 - 1))
def test_verify_record_round_trip(n: int, w: int, h: int, nb: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    f = LocalFeatures((rng.uniform(0, 1, (n, 2)) * [w, h]).astype(np.float32),
                      rng.integers(0, 256, (n, 32), dtype=np.uint8), (w, h))
    rec = encode_verify(f, nb)
    assert len(rec) == 12 + n * (3 + nb) == verify_record_bytes(n, nb)
    g = decode_verify(rec)
    assert g.size == (w, h) and len(g.desc) == n
    # the first nb bytes (ORB's first 8 nb tests) come back, the rest are zero and flagged
    assert np.array_equal(g.desc[:, :nb], f.desc[:, :nb])
    assert not g.desc[:, nb:].any()
    assert g.extra.get("desc_bytes", 32) == nb
    # positions to half a storage step: 1/16 px up to 511 px, coarser only for larger pictures
    step = 1 / 8 if max(w, h) <= 511 else 2.0 ** np.ceil(np.log2(max(w, h) / 4095))
    assert np.abs(g.xy - f.xy).max(initial=0) <= step / 2 + 1e-3 * step


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 50), nb=st.integers(1, 32), cut=st.integers(1, 11))
def test_decode_verify_rejects_truncated_records(n: int, nb: int, cut: int) -> None:
    rng = np.random.default_rng(n)
    rec = encode_verify(random_set(rng, n), nb)
    with pytest.raises(ValueError):
        decode_verify(rec[:-cut])
    with pytest.raises(ValueError):
        decode_verify(rec[:cut])


def test_format_1_records_are_still_read() -> None:
    """A saved index of format 1 (HWKV: uint16 positions in 1/8 px, 32-byte descriptors)
    stays readable (the product rebuilds it; study indexes are read as they are)."""
    rng = np.random.default_rng(3)
    f = random_set(rng, 40)
    q = np.round(f.xy * 8).astype("<u2")
    old = b"HWKV" + np.array([40, *f.size], "<u2").tobytes() + q.tobytes() + f.desc.tobytes()
    g = decode_verify(old)
    assert g.size == f.size and np.array_equal(g.desc, f.desc) and "desc_bytes" not in g.extra
    assert np.abs(g.xy - f.xy).max() <= 1 / 16 + 1e-6
    with pytest.raises(ValueError):
        decode_verify(old[:-1])


def test_decode_verify_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        decode_verify(b"not a record at all")
    with pytest.raises(ValueError):
        encode_verify(random_set(np.random.default_rng(0), 5), 0)


# -- spread selection -----------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 200), k=st.integers(1, 200), seed=st.integers(0, 1000))
def test_subset_keeps_a_spread_prefix(n: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    f = random_set(rng, n)
    s = subset(f, k)
    assert len(s.desc) == min(n, k)
    order = spread_order(f.xy, f.size)
    assert sorted(order.tolist()) == list(range(n))
    if n > k:
        kept = np.sort(order[:k])
        assert np.array_equal(s.desc, f.desc[kept])
        # every 4x4 cell holding keypoints keeps at least one when k >= 16
        if k >= 16:
            cell = lambda xy: set(  # noqa: E731
                (np.minimum(3, (xy[:, 0] * 4 / f.size[0]).astype(int)) * 4
                 + np.minimum(3, (xy[:, 1] * 4 / f.size[1]).astype(int))).tolist())
            assert cell(f.xy) == cell(s.xy)


# -- the index ------------------------------------------------------------------------------


def _index(n: int = 60, seed: int = 0, **kw) -> tuple[KeypointIndex, list[LocalFeatures]]:
    rng = np.random.default_rng(seed)
    params = KeypointParams(**{"n_index": 48, "n_verify": 96, "ht": 4, "seal_slots": 16,
                               "max_df_share": 1.0, **kw})
    ix = KeypointIndex(random_vocab(16, 32, seed), params)
    sets = [random_set(rng) for _ in range(n)]
    for i, f in enumerate(sets):
        ix.add(1000 + i, f)
    return ix, sets


def test_search_nominates_the_source_image() -> None:
    ix, sets = _index()
    rng = np.random.default_rng(9)
    for i in (0, 17, 59):
        top = ix.search(noisy(sets[i], rng), top=3)
        assert top and top[0].image_id == 1000 + i
        assert top[0].slot == i
    # an unrelated query nominates nothing strongly: its best vote is far below a true one
    other = ix.search(random_set(rng), top=1)
    true = ix.search(noisy(sets[5], rng), top=1)
    assert not other or other[0].score < true[0].score / 2


def test_features_come_back_from_memory_and_from_disk(tmp_path) -> None:
    ix, sets = _index(20)
    f = ix.features(3)
    nb = ix.params.desc_bytes
    want = subset(sets[3], 96)
    assert len(f.desc) == 96 and np.array_equal(f.desc[:, :nb], want.desc[:, :nb])
    assert not f.desc[:, nb:].any() and np.abs(f.xy - want.xy).max() <= 1 / 16
    ix.save(tmp_path / "kp")
    for mmap in (True, False):
        j = KeypointIndex.load(tmp_path / "kp", mmap=mmap)
        g = j.features(3)
        assert np.array_equal(g.desc, f.desc) and np.allclose(g.xy, f.xy)
        assert j.image_of(3) == 1003


def test_remove_add_save_load(tmp_path) -> None:
    ix, sets = _index(40)
    rng = np.random.default_rng(11)
    q = noisy(sets[7], rng)
    assert ix.search(q, 1)[0].image_id == 1007
    assert ix.remove([1007, 999_999]) == 1
    assert not ix.holds(1007) and ix.holds(1008) and len(ix) == 39
    assert all(c.image_id != 1007 for c in ix.search(q, 5))
    ix.save(tmp_path / "kp", meta={"last_row": 40})
    j = KeypointIndex.load(tmp_path / "kp")
    assert len(j) == 39 and j.meta == {"last_row": 40}
    assert all(c.image_id != 1007 for c in j.search(q, 5))
    # grows after loading (a fresh segment in this process), then saves again
    extra = random_set(rng)
    j.add(5000, [extra, subset(extra, 50)])  # two keypoint sets of one image
    assert len(j) == 40 and j.n_slots == 42
    j.save(tmp_path / "kp")
    k = KeypointIndex.load(tmp_path / "kp", mmap=False)
    assert len(k) == 40 and k.search(noisy(extra, rng), 1)[0].image_id == 5000
    assert k.search(noisy(sets[8], rng), 1)[0].image_id == 1008
    # owner-only files
    for p in (tmp_path / "kp").iterdir():
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600


def test_segments_are_merged() -> None:
    ix, _ = _index(200)  # seal every 16 slots: 12 sealed segments before merging
    assert ix.stats()["segments"] <= 8
    assert ix.stats()["postings"] == 200 * 48


def test_load_refuses_a_missing_or_foreign_index(tmp_path) -> None:
    with pytest.raises(ValueError):
        KeypointIndex.load(tmp_path / "nothing")
    ix, _ = _index(5)
    ix.save(tmp_path / "kp")
    random_vocab(16, 32, seed=99).save(tmp_path / "kp" / "vocab.npz")
    with pytest.raises(ValueError):
        KeypointIndex.load(tmp_path / "kp")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(st.tuples(st.sampled_from(["add", "remove", "reload"]),
                              st.integers(0, 30)), min_size=1, max_size=25))
def test_index_state_follows_a_model(tmp_path_factory, ops) -> None:
    """Adds, removals and save/load in any order: the index holds exactly the live images."""
    folder = tmp_path_factory.mktemp("kp") / "ix"
    rng = np.random.default_rng(0)
    ix = KeypointIndex(random_vocab(8, 8), KeypointParams(n_index=16, n_verify=32,
                                                          seal_slots=4))
    live: set[int] = set()
    for op, k in ops:
        if op == "add":
            ix.add(k, random_set(rng, 40))
            live.add(k)
        elif op == "remove":
            ix.remove([k])
            live.discard(k)
        else:
            ix.save(folder)
            ix = KeypointIndex.load(folder, mmap=bool(k % 2))
        assert len(ix) == len(live)
        assert all(ix.holds(i) for i in live)
        assert not any(ix.holds(i) for i in set(range(31)) - live)


def test_nominee_ties_do_not_depend_on_the_touched_list_size() -> None:
    """Two known sets tie on votes; the one voted for first (by the query's first descriptor)
    comes first, also when more slots get a vote than the scratch's touched list holds (the
    list grows and the scan runs again, instead of falling back to slot order)."""
    from hashwatch.robust import keypoint_index as KI

    voc = random_vocab(16, 32, 4)
    rng = np.random.default_rng(11)
    d = rng.integers(0, 256, (64, 32), dtype=np.uint8)
    words, _ = voc.assign(d, 1)
    a, b = 0, int(np.flatnonzero(words[:, 0] != words[0, 0])[0])  # two different words

    def one(desc: np.ndarray) -> LocalFeatures:
        return LocalFeatures(np.array([[10.0, 10.0]], np.float32), desc[None], (100, 100))

    ix = KeypointIndex(voc, KeypointParams(m=1, coarse_probe=1, max_df_share=1.0))
    ix.add(1, one(d[a]))
    ix.add(2, one(d[b]))
    q = LocalFeatures(np.array([[5.0, 5.0], [50.0, 50.0]], np.float32), d[[b, a]], (100, 100))
    big = ix.search(q, top=2)
    assert [c.image_id for c in big] == [2, 1] and big[0].score == big[1].score
    KI._SCRATCH.grow_touched(1)  # this thread's list: smaller than 2 slots
    small = ix.search(q, top=2)
    assert small == big
    assert len(KI._SCRATCH.touched) >= 2
    assert ix.search(q, top=2) == big  # the scratch is clean after the rescan


def test_a_saved_index_is_searched_with_todays_query_side_parameters(tmp_path) -> None:
    """The query-side parameters (words per descriptor, cells probed, signature radius, stop
    words) do not shape the saved postings: an index saved under other values is searched with
    the current defaults, its build-side parameters (keypoints indexed and kept) stay as saved,
    and a caller's explicit parameters win."""
    from dataclasses import replace as dc_replace

    from hashwatch.robust.keypoint_index import QUERY_SIDE

    old = KeypointParams(n_index=40, n_verify=80, m=1, m_few=2, few=10, coarse_probe=1, ht=1,
                         ht_fill=2, max_df_share=0.5)
    now = KeypointParams()
    assert all(getattr(old, k) != getattr(now, k) for k in QUERY_SIDE)
    rng = np.random.default_rng(2)
    ix = KeypointIndex(random_vocab(16, 32, 2), old)
    sets = [random_set(rng) for _ in range(12)]
    for i, f in enumerate(sets):
        ix.add(i, f)
    ix.save(tmp_path / "kp")
    j = KeypointIndex.load(tmp_path / "kp")
    assert j.params == dc_replace(now, n_index=40, n_verify=80, seal_slots=old.seal_slots)
    assert len(j.features(0).desc) == 80
    assert j.search(noisy(sets[5], rng), 1)[0].image_id == 5
    assert KeypointIndex.load(tmp_path / "kp", params=old).params == old


def _sig_flipped(f: LocalFeatures, bits: tuple[int, ...]) -> LocalFeatures:
    """A copy of ``f`` with the same few descriptor bits flipped in every keypoint."""
    d = np.unpackbits(f.desc, axis=1)
    d[:, list(bits)] ^= 1
    return LocalFeatures(f.xy.copy(), np.packbits(d, axis=1), f.size)


def test_free_places_are_filled_from_the_looser_radius() -> None:
    """A copy whose signature bits all moved by 3 gets no vote within ht 1 (the per-word
    bits' loss on stretched copies, in miniature). When the vote within ht leaves free places
    among the top, they are filled from the images voted for within ht_fill, the own image
    (the one with descriptor pairs) first; the first vote's nominees stay in front, in order,
    and a search never returns more than ``top`` images."""
    from dataclasses import replace as dc_replace

    from hashwatch.robust.keypoint_index import last_search_stats

    rng = np.random.default_rng(21)
    voc = random_vocab(16, 32, 21)  # global bits: every 16th of the 256
    sets = [random_set(rng) for _ in range(20)]
    strict = KeypointParams(n_index=48, n_verify=96, ht=1, ht_fill=0, max_df_share=1.0)
    ix = KeypointIndex(voc, strict)
    for i, f in enumerate(sets):
        ix.add(i, f)
    q = _sig_flipped(subset(sets[7], 80), (0, 16, 32))
    top = 3
    alone = ix.search(q, top)
    assert 7 not in [c.image_id for c in alone] and len(alone) < top
    assert last_search_stats()["filled"] == 0
    ix.params = dc_replace(strict, ht_fill=4)
    filled = ix.search(q, top)
    assert filled[: len(alone)] == alone
    assert filled[len(alone)].image_id == 7
    assert len(filled) <= top and len({c.image_id for c in filled}) == len(filled)
    assert last_search_stats()["filled"] >= 1
    # the loose vote alone would give as many images as the fill may take
    ix.params = dc_replace(strict, ht=4)
    assert len(filled) == min(top, len({c.image_id for c in alone}
                                         | {c.image_id for c in ix.search(q, 50)}))


def test_a_list_of_a_few_images_is_wholly_in_the_fill() -> None:
    """Among at most FILL_POOL x top known sets, an image the query votes for at no radius
    (every signature bit it uses moved) is still nominated, by its descriptor pairs; among
    more sets it is not (the vote decides there)."""
    from dataclasses import replace as dc_replace

    from hashwatch.robust.keypoint_index import FILL_POOL

    rng = np.random.default_rng(5)
    voc = random_vocab(16, 32, 5)  # global bits: every 16th of the 256
    params = KeypointParams(n_index=48, n_verify=96, ht=0, ht_fill=1, max_df_share=1.0)
    top = 2
    sets = [random_set(rng) for _ in range(FILL_POOL * top + 1)]
    q = _sig_flipped(subset(sets[1], 80), (0, 16, 32, 48))  # 4 bits: beyond ht_fill
    small = KeypointIndex(voc, params)
    for i, f in enumerate(sets[: FILL_POOL * top]):
        small.add(i, f)
    got = [c.image_id for c in small.search(q, top)]
    assert got[0] == 1 and len(got) == top
    # the same sets and one more: the pool is the voted images only, and none is voted
    big = KeypointIndex(voc, params)
    for i, f in enumerate(sets):
        big.add(i, f)
    assert 1 not in [c.image_id for c in big.search(q, top)]
    big.params = dc_replace(params, ht=4)  # the bits' move within the radius: voted again
    assert big.search(q, top)[0].image_id == 1


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), top=st.integers(1, 10), ht=st.integers(0, 5),
       ht_fill=st.integers(0, 16), n=st.integers(1, 15))
def test_a_search_returns_at_most_top_images_first_vote_first(seed: int, top: int, ht: int,
                                                                ht_fill: int, n: int) -> None:
    """Whatever the radii: at most ``top`` distinct images, and the images of the vote within
    ``ht`` alone come first, in their order (the fill only takes free places)."""
    from dataclasses import replace as dc_replace

    rng = np.random.default_rng(seed)
    ix = KeypointIndex(random_vocab(8, 16, seed % 7, per_word=True),
                       KeypointParams(n_index=32, n_verify=64, ht=ht, ht_fill=ht_fill,
                                      max_df_share=1.0))
    sets = [random_set(rng, 60) for _ in range(n)]
    for i, f in enumerate(sets):
        ix.add(i, f)
    q = noisy(sets[int(rng.integers(n))], rng, bits=int(rng.integers(0, 30)))
    got = ix.search(q, top)
    assert len(got) <= top and len({c.image_id for c in got}) == len(got)
    ix.params = dc_replace(ix.params, ht_fill=0)
    alone = ix.search(q, top)
    assert got[: len(alone)] == alone


def test_an_index_keeps_its_signature_scheme(tmp_path) -> None:
    """An index is searched and grown with the vocabulary saved in it: one of the global
    signature bits (vocabulary v1) stays global after loading, one of the per-word bits stays
    per word; both nominate; a manifest whose scheme disagrees with its vocabulary is
    refused, so schemes never mix."""
    import json

    rng = np.random.default_rng(11)
    sets = [random_set(rng) for _ in range(10)]
    for per_word in (False, True):
        ix = KeypointIndex(random_vocab(16, 32, 3, per_word=per_word))
        for i, f in enumerate(sets[:8]):
            ix.add(i, f)
        folder = tmp_path / f"kp{per_word}"
        ix.save(folder)
        man = json.loads((folder / "manifest.json").read_text())
        scheme = "word" if per_word else "global"
        assert man["signature_scheme"] == scheme
        j = KeypointIndex.load(folder)
        assert j.vocab.sig_scheme == scheme
        for i in (2, 6):
            assert j.search(noisy(sets[i], rng), 1)[0].image_id == i
        j.add(8, sets[8])  # an addition is signed with the index's own bits
        assert j.search(noisy(sets[8], rng), 1)[0].image_id == 8
        # an index saved before the scheme was recorded is a global one
        del man["signature_scheme"]
        (folder / "manifest.json").write_text(json.dumps(man))
        if per_word:
            with pytest.raises(ValueError, match="signature scheme"):
                KeypointIndex.load(folder)
        else:
            assert KeypointIndex.load(folder).vocab.sig_scheme == "global"


def test_per_word_signatures_pass_fewer_chance_postings() -> None:
    """On descriptors whose words leave different bits undecided, the per-word bits let far
    fewer of a word's other members within the radius than one global choice does."""
    rng = np.random.default_rng(12)
    k1, k2 = 1, 8
    desc, words = [], []
    for w in range(k1 * k2):
        free = rng.choice(256, 40, replace=False)
        base = rng.integers(0, 2, 256).astype(np.uint8)
        for _ in range(200):
            b = base.copy()
            b[free] = rng.integers(0, 2, 40)
            desc.append(np.packbits(b))
            words.append(w)
    d, w = np.array(desc), np.array(words, np.int64)
    glob = np.arange(0, 256, 16)
    per = choose_word_signature_bits(d, w, k1, k2, glob)
    cent = np.zeros((k1, 32), np.uint8)
    fine = np.zeros((k1, k2, 32), np.uint8)
    passed = {}
    for name, bits in (("global", glob.astype(np.int16)), ("word", per)):
        voc = Vocabulary(cent, fine, bits)
        sig = voc.signatures(d, w)
        same = w[:, None] == w[None, :]
        dist = np.bitwise_count(sig[:, None] ^ sig[None, :])
        passed[name] = float((dist[same] <= 3).mean())
    assert passed["word"] < 0.2 * passed["global"]
