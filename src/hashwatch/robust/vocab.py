"""A frozen binary visual vocabulary for ORB descriptors: words, and a Hamming-embedding
signature per descriptor.

Words: a two-level hierarchical k-majority tree (``k1`` coarse centres, each with ``k2`` fine
centres; ``k1 * k2`` words). k-majority is k-means for binary strings under the Hamming
distance, each centre being the bitwise majority of its members (Grana, Borghesani, Manfredi,
Cucchiara, "A fast approach for integrating ORB descriptors in the bag of words model", SPIE
2013); the tree is the vocabulary tree of Nistér and Stewénius ("Scalable recognition with a
vocabulary tree", CVPR 2006) as DBoW2 uses it for binary descriptors (Gálvez-López and Tardós,
"Bags of binary words for fast place recognition in image sequences", IEEE T-RO 2012).
A descriptor goes to the word whose fine centre is nearest within its nearest coarse cell;
queries may take several words (multiple assignment, Jégou, Douze, Schmid, "Hamming embedding
and weak geometric consistency for large scale image search", ECCV 2008, section 4 and
"On the burstiness of visual elements", CVPR 2009).

Signature: :data:`SIG_BITS` bits of the descriptor itself at fixed positions, chosen at
training time as the bits that stay most uncertain inside a word (the Hamming embedding of
Jégou et al., for a descriptor that is already binary: the bits the word leaves undecided are
what still tells two descriptors of one word apart).

Nearest-centre search uses faiss ``IndexBinaryFlat`` (exact Hamming k-NN).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SIG_BITS = 16


def _flat(centres: np.ndarray):  # -> faiss.IndexBinaryFlat
    import faiss

    ix = faiss.IndexBinaryFlat(256)
    ix.add(np.ascontiguousarray(centres, np.uint8))
    return ix


def _majority(desc: np.ndarray, assign: np.ndarray, k: int, old: np.ndarray,
              rng: np.random.Generator) -> np.ndarray:
    """Bitwise majority of each cluster's members; an empty cluster takes a random member of
    the largest one (keeps k centres alive)."""
    order = np.argsort(assign, kind="stable")
    a = assign[order]
    counts = np.bincount(a, minlength=k)
    sums = np.zeros((k, 256), np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    step = 1 << 18
    for s in range(0, len(order), step):
        bits = np.unpackbits(desc[order[s:s + step]], axis=1)
        seg = a[s:s + step]
        # reduceat over the (sorted) cluster runs inside this block
        u, first = np.unique(seg, return_index=True)
        sums[u] += np.add.reduceat(bits, first, axis=0, dtype=np.int32)
    new = np.packbits(2 * sums > counts[:, None], axis=1)
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        big = int(np.argmax(counts))
        members = order[starts[big]:starts[big] + counts[big]]
        new[empty] = desc[rng.choice(members, len(empty))]
    del old
    return new


def _seed_centres(desc: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur and Vassilvitskii, SODA 2007) under the Hamming distance, on
    a sample of at most 50,000 descriptors: each next seed is drawn with probability
    proportional to its squared distance from the nearest seed so far."""
    sample = desc[rng.choice(len(desc), min(len(desc), 50_000), replace=False)]
    s64 = np.ascontiguousarray(sample).view(np.uint64)
    first = int(rng.integers(0, len(sample)))
    chosen = [first]
    d = np.bitwise_count(s64 ^ s64[first]).sum(axis=1).astype(np.float64)
    for _ in range(1, k):
        w = d * d
        total = w.sum()
        nxt = int(rng.choice(len(sample), p=w / total)) if total > 0 else int(
            rng.integers(0, len(sample)))
        chosen.append(nxt)
        d = np.minimum(d, np.bitwise_count(s64 ^ s64[nxt]).sum(axis=1))
    return sample[chosen].copy()


def k_majority(desc: np.ndarray, k: int, *, iters: int = 8, seed: int = 0) -> np.ndarray:
    """(k, 32) uint8 centres of ``desc`` (n, 32) uint8 by k-majority (see module docstring),
    seeded by :func:`_seed_centres`. Raises ValueError when n < k."""
    n = len(desc)
    if n < k:
        raise ValueError(f"{n} descriptors cannot make {k} centres")
    rng = np.random.default_rng(seed)
    cent = _seed_centres(np.ascontiguousarray(desc, np.uint8), k, rng)
    for _ in range(iters):
        _, a = _flat(cent).search(desc, 1)
        cent = _majority(desc, a[:, 0].astype(np.int64), k, cent, rng)
    return cent


@dataclass
class Vocabulary:
    """``coarse`` (k1, 32) uint8, ``fine`` (k1, k2, 32) uint8 centres; ``sig_bits`` the
    SIG_BITS descriptor bit positions of the signature (0 = the first bit of byte 0, MSB
    first, as ``np.unpackbits`` numbers them). Word ids are ``coarse * k2 + fine``."""

    coarse: np.ndarray
    fine: np.ndarray
    sig_bits: np.ndarray

    def __post_init__(self) -> None:
        self.coarse = np.ascontiguousarray(self.coarse, np.uint8)
        self.fine = np.ascontiguousarray(self.fine, np.uint8)

    @property
    def k1(self) -> int:
        return int(self.coarse.shape[0])

    @property
    def k2(self) -> int:
        return int(self.fine.shape[1])

    @property
    def n_words(self) -> int:
        return self.k1 * self.k2

    def digest(self) -> str:
        """SHA-256 of the centres and signature bits: an index built with one vocabulary is
        only searched with the same one."""
        h = hashlib.sha256()
        for a in (self.coarse, self.fine, self.sig_bits.astype(np.int16)):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    # -- assignment ------------------------------------------------------------------------
    def assign(self, desc: np.ndarray, m: int = 1, *, coarse_probe: int = 1
               ) -> tuple[np.ndarray, np.ndarray]:
        """(words, distances), each (n, m) int64 / int32: the ``m`` nearest words of each
        descriptor among the fine centres of its ``coarse_probe`` nearest coarse cells,
        nearest first (word -1, distance 257 where fewer exist). C hot path
        (``hashwatch._kpidx.assign``, or its numpy twin when the extension was not built:
        :mod:`hashwatch.robust.kpcore`), exact within the probed cells."""
        from hashwatch.robust import kpcore

        desc = np.ascontiguousarray(desc, np.uint8)
        n = len(desc)
        words = np.empty((n, m), np.int64)
        dists = np.empty((n, m), np.int32)
        if n:
            kpcore.require()
            kpcore.assign(self.coarse, self.fine, self.k2, desc, coarse_probe, m, words,
                          dists)
        return words, dists

    def signatures(self, desc: np.ndarray) -> np.ndarray:
        """(n,) uint16: the signature bits of each descriptor (bit i = ``sig_bits[i]``)."""
        bits = np.unpackbits(np.ascontiguousarray(desc, np.uint8), axis=1)[:, self.sig_bits]
        return (bits.astype(np.uint32) << np.arange(SIG_BITS, dtype=np.uint32)).sum(
            axis=1).astype(np.uint16)

    # -- persistence -----------------------------------------------------------------------
    def save(self, path: Path) -> None:
        with open(path, "wb") as fh:
            np.savez(fh, coarse=self.coarse, fine=self.fine, sig_bits=self.sig_bits)

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        with np.load(path) as z:
            return cls(z["coarse"], z["fine"], z["sig_bits"])


def choose_signature_bits(desc: np.ndarray, words: np.ndarray, n_bits: int = SIG_BITS
                          ) -> np.ndarray:
    """The ``n_bits`` descriptor bits most uncertain inside a word: for each bit, the mean over
    words (weighted by size) of p(1-p) of that bit among the word's members; the top bits,
    skipping any whose correlation with one already taken exceeds 0.3 in absolute value."""
    bits = np.unpackbits(desc, axis=1).astype(np.float64)
    order = np.argsort(words, kind="stable")
    w = words[order]
    u, first, cnt = np.unique(w, return_index=True, return_counts=True)
    sums = np.add.reduceat(bits[order], first, axis=0)
    p = sums / cnt[:, None]
    within = (cnt[:, None] * p * (1 - p)).sum(axis=0) / cnt.sum()
    corr = np.corrcoef(bits.T)
    taken: list[int] = []
    for b in np.argsort(-within, kind="stable"):
        if all(abs(corr[b, t]) <= 0.3 for t in taken):
            taken.append(int(b))
        if len(taken) == n_bits:
            break
    for b in np.argsort(-within, kind="stable"):  # fewer uncorrelated bits than asked
        if len(taken) == n_bits:
            break
        if int(b) not in taken:
            taken.append(int(b))
    return np.array(sorted(taken), np.int16)


def train(desc: np.ndarray, k1: int, k2: int, *, iters: int = 8, seed: int = 0,
          progress=None) -> Vocabulary:
    """Train a vocabulary on ``desc`` (n, 32) uint8 (k-majority per level, see the module
    docstring; the coarse level on a sample of at most 1,000 descriptors per centre). Cells
    with fewer than ``k2`` members get centres sampled (with repetition dropped) from their
    members; an empty cell repeats its coarse centre."""
    rng = np.random.default_rng(seed)
    # the coarse level needs far fewer points than the fine one (k1 centres, not k1 * k2)
    sample = desc[rng.choice(len(desc), min(len(desc), 1000 * k1), replace=False)]
    coarse = k_majority(sample, k1, iters=iters, seed=seed)
    _, a = _flat(coarse).search(desc, 1)
    a = a[:, 0]
    fine = np.zeros((k1, k2, 32), np.uint8)
    order = np.argsort(a, kind="stable")
    cs, first, cnt = np.unique(a[order], return_index=True, return_counts=True)
    members_of = {int(c): order[f:f + n] for c, f, n in zip(cs, first, cnt, strict=True)}
    for c in range(k1):
        mem = members_of.get(c)
        if mem is None or len(mem) == 0:
            fine[c] = coarse[c]
        elif len(mem) <= k2:
            fine[c, :len(mem)] = desc[mem]
            fine[c, len(mem):] = desc[rng.choice(mem, k2 - len(mem))]
        else:
            fine[c] = k_majority(desc[mem], k2, iters=iters, seed=seed + 1 + c)
        if progress:
            progress(c + 1, k1)
    voc = Vocabulary(coarse, fine, np.zeros(SIG_BITS, np.int16))
    sample = desc[rng.choice(len(desc), min(len(desc), 1_000_000), replace=False)]
    w, _ = voc.assign(sample, 1)
    voc.sig_bits = choose_signature_bits(sample, w[:, 0])
    return voc


DEFAULT_VOCAB = Path(__file__).with_name("data") / "orb-vocab-v1.npz"
_DEFAULT: Vocabulary | None = None


def default_vocabulary() -> Vocabulary:
    """The vocabulary shipped with hashwatch (``robust/data/orb-vocab-v1.npz``, trained on ORB
    descriptors of generated benign images by ``benchmarks/scale_study.py vocab``; see
    BENCHMARKS.md). Loaded once per process."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Vocabulary.load(DEFAULT_VOCAB)
    return _DEFAULT
