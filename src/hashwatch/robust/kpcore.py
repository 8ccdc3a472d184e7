"""Hot path of the keypoint index: the compiled extension ``hashwatch._kpidx`` when it was
built, else exact numpy twins of its functions (same results, several times slower), so a
checkout without a C compiler still matches instead of failing on every file.

``assign`` (nearest visual words, :meth:`hashwatch.robust.vocab.Vocabulary.assign`),
``signatures`` (Hamming-embedding signatures, ``Vocabulary.signatures``),
``scan`` (votes over posting lists, :meth:`hashwatch.robust.keypoint_index.KeypointIndex.search`)
and ``collect`` (the best voted slots) take the arguments documented in ``src/hashwatch/_kpidx.c``;
:func:`hamming_matrix` is the pairwise Hamming distance both this module and the verification
use (``hamming`` in the extension, with each row's minimum: :func:`hamming_rows`).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

try:  # the C hot path (built by `pip install .` / `make install`; needs a C compiler)
    from hashwatch import _kpidx
except ImportError:  # pragma: no cover - exercised by the fallback tests through `use_numpy`
    _kpidx = None

HAVE_C_EXTENSION = _kpidx is not None
_warned = False

#: One slot's scratch cell as ``scan`` takes it (the extension's ``acc_t``): the stamp of the
#: last query descriptor that voted and the slot's place in the search's touched list (and in
#: the votes parallel to it), side by side, so a passing posting touches one 8-byte cell. A
#: cell stamped before the search's first stamp is not voted for yet: nothing is reset.
ACC_DTYPE = np.dtype([("stamp", "<u4"), ("tidx", "<u4")])

_NO_PLACE = np.uint32(0xFFFFFFFF)  # a slot first voted for after the touched list was full


def _np_hamming(a: np.ndarray, b: np.ndarray, out: np.ndarray, row_min: np.ndarray) -> None:
    # one popcount pass per 64-bit word over a (len(a), len(b)) array (summing the four words
    # of a (na, nb, 4) array along its short last axis was ~5x slower)
    a64 = np.ascontiguousarray(a, np.uint8).reshape(-1, 32).view(np.uint64)
    bt = np.ascontiguousarray(np.ascontiguousarray(b, np.uint8).reshape(-1, 32)
                              .view(np.uint64).T)
    d = out.reshape(len(a64), bt.shape[1])
    d[...] = np.bitwise_count(a64[:, 0, None] ^ bt[0][None, :])
    for w in range(1, a64.shape[1]):
        d += np.bitwise_count(a64[:, w, None] ^ bt[w][None, :])
    row_min[...] = d.min(axis=1) if d.shape[1] else 257


def hamming_rows(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(len(a), len(b)) int32 Hamming distances of two (n, 32) uint8 descriptor arrays, and
    (len(a),) int32 the minimum of each row (257 when ``b`` is empty): the extension's
    ``hamming`` or its numpy twin (same integers)."""
    a = np.ascontiguousarray(a, np.uint8).reshape(-1, 32)
    b = np.ascontiguousarray(b, np.uint8).reshape(-1, 32)
    d = np.empty((len(a), len(b)), np.int32)
    mn = np.empty(len(a), np.int32)
    hamming(a, b, d, mn)
    return d, mn


def hamming_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) int32 Hamming distances of two (n, 32) uint8 descriptor arrays
    (:func:`hamming_rows` without the row minima)."""
    return hamming_rows(a, b)[0]


def _np_greedy(dist: np.ndarray, qi: np.ndarray, ki: np.ndarray) -> np.ndarray:
    # numpy twin of the extension's greedy step (hashwatch.robust.verify.greedy_pairs)
    order = np.argsort(dist, kind="stable")
    qi, ki = qi[order], ki[order]
    _, f1 = np.unique(ki, return_index=True)
    keep = np.zeros(len(ki), bool)
    keep[f1] = True
    _, f2 = np.unique(qi, return_index=True)
    keep2 = np.zeros(len(ki), bool)
    keep2[f2] = True
    sel = keep & keep2
    return np.stack([qi[sel], ki[sel]], axis=1).astype(np.int64)


def _np_knn_pairs(d: np.ndarray, j: np.ndarray, rows: np.ndarray, kk: int, radius: int,
                  nq: int, nk: int, out: np.ndarray) -> int:
    d = np.asarray(d).reshape(len(rows), nk)
    j = np.asarray(j).reshape(len(rows), kk)
    dist = np.take_along_axis(d, j, axis=1).ravel()
    qi = np.repeat(rows, kk)
    ki = j.ravel()
    good = dist <= radius
    got = _np_greedy(dist[good], qi[good], ki[good])
    out[: 2 * len(got)] = got.ravel()
    return len(got)


def knn_pairs(d: np.ndarray, j: np.ndarray, rows: np.ndarray, radius: int, nq: int
              ) -> np.ndarray:
    """(n, 2) int64 tentative pairs (query row, stored row) from the picks ``j`` (r, kk) of
    the query rows ``rows`` (r,) ascending, with distances ``d`` (r, nk) to the nk stored
    descriptors: the picks within ``radius``, in row and pick order, stably sorted by
    distance, each kept when it is the first pair of its stored row and of its query row
    (:func:`hashwatch.robust.verify.greedy_pairs`); closest first. The extension's
    ``knn_pairs`` or its numpy twin (the same pairs in the same order). Raises ValueError
    on a pick or row out of range (extension)."""
    d = np.ascontiguousarray(d, np.int32)
    j = np.ascontiguousarray(j, np.int64)
    rows = np.ascontiguousarray(rows, np.int64)
    r, nk = d.shape
    kk = j.shape[1] if j.ndim == 2 else 0
    out = np.empty(2 * r * kk, np.int64)
    n = knn_pairs_into(d, j, rows, kk, int(radius), int(nq), nk, out)
    return out[: 2 * n].reshape(n, 2)


def prefix_desc(desc: np.ndarray, nbytes: int) -> np.ndarray:
    """(n, 32) uint8 descriptors with every byte from ``nbytes`` on set to 0: the ORB tests a
    verification record keeps (:func:`hashwatch.robust.kprecord.encode_verify`), so a
    full query descriptor and a shortened stored one are compared on the same tests.
    ``desc`` itself when ``nbytes`` >= 32."""
    if nbytes >= 32:
        return desc
    out = np.array(desc, np.uint8, copy=True)
    out[:, nbytes:] = 0
    return out


def scaled_radius(radius: int, nbytes: int) -> int:
    """A Hamming threshold set for 256-bit ORB descriptors, scaled to descriptors cut to their
    first ``nbytes`` bytes (8 ``nbytes`` tests): ``radius`` x nbytes / 32, rounded half up.
    Chance and true distances both scale with the number of tests compared. Measured for the
    match radius (48 of 256; ``benchmarks/verify_record.py rates``, BENCHMARKS.md, issue 11,
    "No drop after the 128x24 records"): on ORB's first 192 tests, 36 keeps 71.8% of true
    correspondences within it (72.0% at 48 of 256) at 1.10x the chance rate; 35 would keep
    the chance rate at 1.3 points fewer true pairs, 37 or 38 add 1.0-2.0 points at 1.3-1.5x.
    A threshold on fewer tests cannot keep both rates: the scaled one keeps the true rate."""
    return radius if nbytes >= 32 else int(radius * nbytes / 32 + 0.5)


def kept_tests(desc: np.ndarray, radius: int, stored: Any) -> tuple[np.ndarray, int]:
    """How descriptors ``desc`` (n, 32) and a Hamming threshold ``radius`` set for 256 bits
    are compared with a stored keypoint set ``stored`` (a LocalFeatures whose
    ``extra["desc_bytes"]`` says how many bytes of ORB's tests its record kept, 32 when
    absent): ``desc`` cut to those tests (:func:`prefix_desc`) and ``radius`` scaled to them
    (:func:`scaled_radius`). The one rule for verification, the RANSAC pairs and the scene
    check."""
    nb = int(stored.extra.get("desc_bytes", 32))
    return prefix_desc(desc, nb), scaled_radius(radius, nb)


def _smallest(d: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k smallest (distance, id) of each row, ascending (ties: smaller id first)."""
    key = d.astype(np.int64) * (int(ids.max(initial=0)) + 1) + ids
    order = np.argsort(key, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, order, 1), np.take_along_axis(ids, order, 1)


def _np_assign(coarse: np.ndarray, fine: np.ndarray, k2: int, desc: np.ndarray, probe: int,
               m: int, words_out: np.ndarray, dists_out: np.ndarray) -> None:
    k1 = len(coarse) // 32 if coarse.ndim == 1 else len(coarse)
    co = np.asarray(coarse, np.uint8).reshape(k1, 32)
    fi = np.asarray(fine, np.uint8).reshape(k1, k2, 32)
    de = np.asarray(desc, np.uint8).reshape(-1, 32)
    n = len(de)
    probe = min(probe, k1)
    cids = np.broadcast_to(np.arange(k1, dtype=np.int64), (n, k1))
    _, cells = _smallest(hamming_matrix(de, co), cids, probe)
    dist = np.empty((n, probe * k2), np.int32)
    word = np.empty((n, probe * k2), np.int64)
    for j in range(probe):
        cen = fi[cells[:, j]]  # (n, k2, 32)
        x = np.bitwise_count(cen.view(np.uint64) ^ de.view(np.uint64)[:, None, :])
        dist[:, j * k2:(j + 1) * k2] = x.sum(axis=2, dtype=np.int32)
        word[:, j * k2:(j + 1) * k2] = cells[:, j, None] * k2 + np.arange(k2)
    d, w = _smallest(dist, word, m)
    words_out[...] = -1
    dists_out[...] = 257
    words_out[:, : w.shape[1]] = w
    dists_out[:, : d.shape[1]] = d


def _np_signatures(desc: np.ndarray, table: np.ndarray, rows: np.ndarray, m: int,
                   out: np.ndarray) -> None:
    de = np.asarray(desc, np.uint8).reshape(-1, 32)
    tb = np.asarray(table, np.int16).reshape(-1, 16) & 255  # as the extension reads them
    rw = np.asarray(rows, np.int64).reshape(len(de), m)
    if (rw >= len(tb)).any():
        raise ValueError("signatures: row outside the table")
    bits = np.unpackbits(de, axis=1)  # (n, 256), bit 0 = MSB of byte 0
    pos = tb[np.maximum(rw, 0)].astype(np.int64)  # (n, m, 16)
    b = np.take_along_axis(bits[:, None, :], pos, axis=2).astype(np.uint32)
    sig = (b << np.arange(16, dtype=np.uint32)).sum(axis=2).astype(np.uint16)
    sig[rw < 0] = 0
    out.reshape(len(de), m)[...] = sig


def _np_scan(offsets: np.ndarray, sigs: np.ndarray, ids: np.ndarray, qw: np.ndarray,
             qs: np.ndarray, qwt: np.ndarray, ht: int, stamp: int, acc: np.ndarray,
             votes: np.ndarray, touched: np.ndarray, n_touched: int,
             m: int = 0) -> tuple[int, int, int]:
    lastq, tidx = acc["stamp"], acc["tidx"]  # views: writes land in acc
    nq = len(qw) // m if m > 0 else len(qs)
    m = len(qw) // nq
    if len(qs) not in (nq, nq * m) or len(votes) < len(touched) or n_touched < 0 or \
            not 0 < stamp <= 2**32 - nq:
        raise ValueError("scan: inconsistent buffer sizes")
    cap = min(len(touched), 2**32 - 2)
    qsw = np.asarray(qs) if len(qs) == nq * m and m > 1 else np.repeat(np.asarray(qs), m)
    n_words = len(offsets) - 1
    qi = np.repeat(np.arange(nq), m)
    ok = (qw >= 0) & (qw < n_words) & (qwt > 0)
    w, qi, wt, qsw = qw[ok], qi[ok], qwt[ok], qsw[ok]
    a = np.asarray(offsets[w], np.int64)
    ln = np.asarray(offsets[w + 1], np.int64) - a
    scanned = int(ln.sum())
    if not scanned:
        return n_touched, 0, 0
    run = np.repeat(np.arange(len(w)), ln)  # which (descriptor, word) each posting serves
    pos = np.arange(scanned) - np.repeat(np.cumsum(ln) - ln, ln) + np.repeat(a, ln)
    near = np.bitwise_count(np.asarray(sigs[pos]) ^ qsw[run]) <= ht
    run, pos = run[near], pos[near]
    slot = np.asarray(ids[pos], np.int64)
    who = qi[run]
    # one vote per (descriptor, slot): the first posting in scan order, and none when the
    # descriptor voted for the slot in an earlier segment
    _, first = np.unique(who * len(acc) + slot, return_index=True)
    first.sort()
    slot, who, weight = slot[first], who[first], wt[run[first]]
    qid = (stamp + who).astype(np.uint32)
    fresh = lastq[slot] != qid
    slot, qid, weight = slot[fresh], qid[fresh], weight[fresh]
    seen = lastq[slot].astype(np.int64)  # voted in this search: a stamp in its range
    unvoted = slot[(seen < stamp) | (seen >= stamp + nq)]
    _, first_at = np.unique(unvoted, return_index=True)
    new = unvoted[np.sort(first_at)]  # in scan order, as the extension lists them
    places = n_touched + np.arange(len(new), dtype=np.int64)
    tidx[new] = np.where(places < cap, places, _NO_PLACE).astype(np.uint32)
    lastq[slot] = qid
    room = max(0, min(len(new), cap - n_touched))
    touched[n_touched:n_touched + room] = new[:room]
    votes[n_touched:n_touched + room] = 0.0
    placed = tidx[slot] < cap
    np.add.at(votes, tidx[slot[placed]].astype(np.int64), weight[placed].astype(np.float32))
    return n_touched + len(new), scanned, int(near.sum())


def _np_collect(votes: np.ndarray, touched: np.ndarray, n_touched: int, dead: np.ndarray,
                k: int, out_slots: np.ndarray, out_votes: np.ndarray) -> int:
    cand = touched[:n_touched].astype(np.int64)
    v = np.array(votes[:n_touched], np.float32)
    keep = cand < len(dead)
    cand, v = cand[keep], v[keep]
    alive = ~np.asarray(dead, bool)[cand] & (v > 0)
    cand, v = cand[alive], v[alive]
    order = np.argsort(-v, kind="stable")[:k]  # ties: the slot voted for first comes first
    out_slots[: len(order)] = cand[order]
    out_votes[: len(order)] = v[order]
    return int(len(order))


def _fallback_warning() -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn("hashwatch's compiled keypoint-index extension (_kpidx) is missing: "
                      "using the numpy fallback (same results, slower). Reinstall with a C "
                      "compiler present (`make install` or `pip install .`) to build it.",
                      RuntimeWarning, stacklevel=3)


def use_numpy(on: bool = True) -> None:
    """Force the numpy twins (``on``) or go back to the extension when it was built: for
    tests that compare the two."""
    global assign, scan, collect, signatures, hamming, knn_pairs_into
    if on or _kpidx is None:
        assign, scan, collect, signatures = _np_assign, _np_scan, _np_collect, _np_signatures
        hamming, knn_pairs_into = _np_hamming, _np_knn_pairs
    else:
        assign, scan, collect = _kpidx.assign, _kpidx.scan, _kpidx.collect
        signatures = _kpidx.signatures
        # an extension built before `hamming` was added still serves the rest
        hamming = getattr(_kpidx, "hamming", _np_hamming)
        knn_pairs_into = getattr(_kpidx, "knn_pairs", _np_knn_pairs)


def require() -> None:
    """Warn once when the numpy fallback is in use (called where the index is searched)."""
    if assign is _np_assign and _kpidx is None:
        _fallback_warning()


assign = scan = collect = signatures = hamming = knn_pairs_into = None  # use_numpy sets them
use_numpy(False)
