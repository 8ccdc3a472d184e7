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

Signature: :data:`SIG_BITS` bits of the descriptor itself, chosen at training time as the
bits that stay most uncertain inside a word (the Hamming embedding of Jégou et al., for a
descriptor that is already binary: the bits the word leaves undecided are what still tells two
descriptors of one word apart). Two schemes (:attr:`Vocabulary.sig_scheme`):

- ``"global"`` (vocabulary v1): one choice of bits for every word. Within one word most of
  those bits follow the word's centre, so about a third of a word's postings pass a 3-bit
  test where 16 balanced, independent bits would pass ~1% (BENCHMARKS.md, "Nomination cost
  at 10^6").
- ``"word"`` (vocabulary v2, the default): one choice per fine word, the bits most balanced
  among the word's members and least correlated with each other there
  (:func:`choose_word_signature_bits`; Jégou et al. train their embedding per word too). A
  descriptor's signature then depends on the word it is compared in.

Nearest-centre search uses faiss ``IndexBinaryFlat`` (exact Hamming k-NN).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
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
    """(k, 32) uint8: k-means++ seeding (Arthur and Vassilvitskii, "k-means++: the advantages
    of careful seeding", SODA 2007) under the Hamming distance, on a sample of at most 50,000
    of ``desc`` (n, 32) uint8, n >= k: the first seed uniformly, each next one drawn with
    probability proportional to the squared distance of a point from its nearest seed so far
    (uniformly when every distance is 0). Sequential by nature (k passes over the sample), so
    each pass is a handful of whole-array operations: the sample as four columns of 64 bits,
    the draw by inverse CDF on the running integer sum of squared distances."""
    sample = desc[rng.choice(len(desc), min(len(desc), 50_000), replace=False)]
    n = len(sample)
    # column j holds bits 64j..64j+63 of every sample: four contiguous XOR/popcount passes
    cols = np.ascontiguousarray(np.ascontiguousarray(sample).view(np.uint64).T)
    u = rng.random(k)
    chosen = np.empty(k, np.int64)
    chosen[0] = min(int(u[0] * n), n - 1)
    buf = np.empty(n, np.uint64)
    pc = np.empty(n, np.uint8)
    d = np.empty(n, np.uint16)  # distance to the nearest seed, 0..256
    new = np.empty(n, np.uint16)
    d2 = np.empty(n, np.int64)
    cum = np.empty(n, np.int64)

    def dist_to(x: int, out: np.ndarray) -> None:
        out.fill(0)
        for j in range(4):
            np.bitwise_xor(cols[j], cols[j, x], out=buf)
            out += np.bitwise_count(buf, out=pc)

    dist_to(int(chosen[0]), d)
    for i in range(1, k):
        np.multiply(d, d, out=d2, dtype=np.int64)
        np.cumsum(d2, out=cum)
        total = int(cum[-1])
        # the first point whose running sum exceeds a uniform integer draw on [0, total):
        # P(x) = d2[x] / total (a point at distance 0, e.g. a seed, is never drawn)
        nxt = (int(np.searchsorted(cum, min(int(u[i] * total), total - 1), side="right"))
               if total > 0 else min(int(u[i] * n), n - 1))
        chosen[i] = nxt
        dist_to(nxt, new)
        np.minimum(d, new, out=d)
    return sample[chosen].copy()


def k_majority(desc: np.ndarray, k: int, *, iters: int = 8, seed: int = 0,
               seeding: str = "kmeans++") -> np.ndarray:
    """(k, 32) uint8 centres of ``desc`` (n, 32) uint8 by k-majority (see module docstring),
    seeded by :func:`_seed_centres` (``seeding="kmeans++"``: k sequential passes over up to
    50,000 members, ~65 ms for k = 1024 over 12,000) or by k distinct random members
    (``"random"``); ``iters=0`` gives the seeds themselves. Raises ValueError when n < k or
    on another ``seeding``."""
    n = len(desc)
    if n < k:
        raise ValueError(f"{n} descriptors cannot make {k} centres")
    if seeding not in ("kmeans++", "random"):
        raise ValueError(f"seeding {seeding!r}: want 'kmeans++' or 'random'")
    rng = np.random.default_rng(seed)
    desc = np.ascontiguousarray(desc, np.uint8)
    cent = (_seed_centres(desc, k, rng) if seeding == "kmeans++"
            else desc[rng.choice(n, k, replace=False)].copy())
    for _ in range(iters):
        _, a = _flat(cent).search(desc, 1)
        cent = _majority(desc, a[:, 0].astype(np.int64), k, cent, rng)
    return cent


@dataclass
class Vocabulary:
    """``coarse`` (k1, 32) uint8, ``fine`` (k1, k2, 32) uint8 centres; ``sig_bits`` the
    SIG_BITS descriptor bit positions of the signature (0 = the first bit of byte 0, MSB
    first, as ``np.unpackbits`` numbers them): (SIG_BITS,) for the ``"global"`` scheme,
    (k1 * k2, SIG_BITS) for the ``"word"`` scheme (row w: the bits of word w). Word ids are
    ``coarse * k2 + fine``. ``shipped``: the file name in ``robust/data`` when this is a
    vocabulary shipped with hashwatch (:func:`shipped_vocabulary`), else None. Raises
    ValueError on another shape of ``sig_bits``."""

    coarse: np.ndarray
    fine: np.ndarray
    sig_bits: np.ndarray
    shipped: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        self.coarse = np.ascontiguousarray(self.coarse, np.uint8)
        self.fine = np.ascontiguousarray(self.fine, np.uint8)
        self.sig_bits = np.ascontiguousarray(self.sig_bits, np.int16)
        if self.sig_bits.shape not in ((SIG_BITS,), (self.n_words, SIG_BITS)):
            raise ValueError(f"sig_bits of shape {self.sig_bits.shape}: want ({SIG_BITS},) "
                             f"or ({self.n_words}, {SIG_BITS})")
        if self.sig_bits.min(initial=0) < 0 or self.sig_bits.max(initial=0) > 255:
            raise ValueError("sig_bits outside the descriptor's 256 bits")

    @property
    def sig_scheme(self) -> str:
        """``"global"`` (one choice of signature bits) or ``"word"`` (one per word)."""
        return "global" if self.sig_bits.ndim == 1 else "word"

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
        only searched with the same one. A shipped vocabulary's is the recorded one
        (:data:`SHIPPED`; shipped vocabularies are never changed in place)."""
        if self.shipped is not None:
            return SHIPPED[self.shipped]
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

    def signatures(self, desc: np.ndarray, words: np.ndarray | None = None) -> np.ndarray:
        """uint16 signatures of descriptors ``desc`` (n, 32) in the words ``words`` they are
        assigned to ((n,) or (n, m) int64, -1: none): the shape of ``words`` (bit i = the
        descriptor bit at position ``sig_bits[i]``, or ``sig_bits[word, i]`` under the
        ``"word"`` scheme; 0 where the word is -1). Without ``words``: (n,), only for the
        ``"global"`` scheme (ValueError otherwise). C hot path ``hashwatch._kpidx.signatures``
        or its numpy twin (:mod:`hashwatch.robust.kpcore`)."""
        from hashwatch.robust import kpcore

        desc = np.ascontiguousarray(desc, np.uint8).reshape(-1, 32)
        n = len(desc)
        if words is None:
            if self.sig_scheme != "global":
                raise ValueError("a per-word signature needs the descriptors' words")
            rows = np.zeros((n, 1), np.int64)
        else:
            w = np.asarray(words, np.int64)
            rows = w.reshape(n, -1)
            if self.sig_scheme == "global":
                rows = np.where(rows < 0, -1, 0)
        rows = np.ascontiguousarray(rows, np.int64)
        m = rows.shape[1]
        out = np.empty(n * m, np.uint16)
        if n:
            kpcore.signatures(desc, self.sig_bits.reshape(-1, SIG_BITS), rows, m, out)
        return out.reshape(n) if words is None else out.reshape(np.shape(words))

    # -- persistence -----------------------------------------------------------------------
    def save(self, path: Path) -> None:
        with open(path, "wb") as fh:
            # bit positions are 0-255: one byte each on disk (load widens them again)
            np.savez(fh, coarse=self.coarse, fine=self.fine,
                     sig_bits=self.sig_bits.astype(np.uint8))

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


def choose_word_signature_bits(desc: np.ndarray, words: np.ndarray, k1: int, k2: int,
                               fallback: np.ndarray, n_bits: int = SIG_BITS, *,
                               shrink: float = 20.0, max_corr: float = 0.3,
                               progress=None) -> np.ndarray:
    """(k1 * k2, n_bits) int16, sorted per row: for each fine word, the ``n_bits`` descriptor
    bits most balanced among the word's members, skipping bits correlated with one already
    taken. A bit's balance in word w is p(1-p), p the share of w's members with the bit set,
    shrunk toward the mean over w's coarse cell: (n_w v_w + ``shrink`` v_cell) / (n_w +
    ``shrink``) (a word has ~40 training descriptors, too few to trust alone). Correlation is
    measured within the cell's words (bits centred on their word's mean); a bit whose absolute
    correlation with a taken one exceeds ``max_corr`` is taken only after every uncorrelated
    one. ``desc`` (n, 32) uint8, ``words`` (n,) int64 their words; a cell with fewer than 50
    members gives its words ``fallback`` (the global choice). Hamming embedding (Jégou, Douze,
    Schmid, ECCV 2008, who train a projection's thresholds per word; for a binary descriptor
    the analogue is the choice of bits per word)."""
    n_words = k1 * k2
    order = np.argsort(words, kind="stable")
    w = np.asarray(words, np.int64)[order]
    cell_rows = np.searchsorted(w // k2, np.arange(k1 + 1))
    table = np.empty((n_words, n_bits), np.int16)
    fb = np.sort(np.asarray(fallback, np.int16))
    for c in range(k1):
        a, b = int(cell_rows[c]), int(cell_rows[c + 1])
        if b - a < 50:
            table[c * k2:(c + 1) * k2] = fb
            continue
        bits = np.unpackbits(desc[order[a:b]], axis=1).astype(np.float32)
        ww = w[a:b] - c * k2
        cnt = np.bincount(ww, minlength=k2).astype(np.float32)
        sums = np.zeros((k2, 256), np.float32)
        np.add.at(sums, ww, bits)
        p = sums / np.maximum(cnt, 1)[:, None]
        vw = p * (1 - p)
        vc = (cnt[:, None] * vw).sum(axis=0) / cnt.sum()
        score = (cnt[:, None] * vw + shrink * vc[None]) / (cnt[:, None] + shrink)
        x = bits - p[ww]
        cov = x.T @ x
        sd = np.sqrt(np.maximum(np.diag(cov), 1e-9))
        corr = np.abs(cov / sd[:, None] / sd[None, :])
        # greedy, all the cell's words at once: take each word's best bit, then push the
        # bits correlated with it below every uncorrelated one (scores are <= 0.25)
        sel = np.empty((k2, n_bits), np.int64)
        for i in range(n_bits):
            best = score.argmax(axis=1)
            sel[:, i] = best
            score[corr[best] > max_corr] -= 10.0
            score[np.arange(k2), best] = -100.0
        table[c * k2:(c + 1) * k2] = np.sort(sel, axis=1)
        if progress:
            progress(c + 1, k1)
    return table


def train(desc: np.ndarray, k1: int, k2: int, *, iters: int = 8, seed: int = 0,
          fine_seeding: str = "kmeans++", progress=None) -> Vocabulary:
    """Train a vocabulary on ``desc`` (n, 32) uint8 (k-majority per level, see the module
    docstring; the coarse level on a sample of at most 1,000 descriptors per centre, seeded
    by k-means++; the fine level's cells seeded as ``fine_seeding`` says, see
    :func:`k_majority`). Cells with fewer than ``k2`` members get centres sampled (with
    repetition dropped) from their members; an empty cell repeats its coarse centre."""
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
            fine[c] = k_majority(desc[mem], k2, iters=iters, seed=seed + 1 + c,
                                 seeding=fine_seeding)
        if progress:
            progress(c + 1, k1)
    voc = Vocabulary(coarse, fine, np.zeros(SIG_BITS, np.int16))
    sample = desc[rng.choice(len(desc), min(len(desc), 1_000_000), replace=False)]
    w, _ = voc.assign(sample, 1)
    glob = choose_signature_bits(sample, w[:, 0])
    voc.sig_bits = choose_word_signature_bits(desc, voc.assign(desc, 1)[0][:, 0], k1, k2, glob)
    return voc


#: The vocabularies shipped with hashwatch (``robust/data``). An index built with one names it
#: in its manifest instead of keeping a copy (50 MB for v20), and is searched with it.
#: v1 (global signature bits) lives on in the indexes built with it, which keep their copy
#: (``vocab.npz``).
DATA = Path(__file__).with_name("data")
#: file name -> :meth:`Vocabulary.digest` (a test checks them against the files: a loaded
#: shipped vocabulary is not hashed again, 0.15 s a process for 2^20 words)
SHIPPED = {
    "orb-vocab-v2.npz": "b4f7c10581ce1aac2b062569ff1f977a6d8bb8e82ed0f438e90007c994f9a1af",
    "orb-vocab-20.npz": "ea288e8e8995a323f43b6e20fe10ae01f1370b215e8914cf140cc63854efea00",
}
#: Short names of the shipped vocabularies (``HASHWATCH_KEYPOINT_VOCAB``).
SHORT = {"v2": "orb-vocab-v2.npz", "v20": "orb-vocab-20.npz"}

#: v20: 1024 x 1024 words (v2: 512 x 512 of v1's centres with per-word signature bits),
#: trained by ``scale_study.py vocab`` on the ORB descriptors of 60,000 generated benign
#: images, per-word signature bits chosen by ``vocab.train``: every list ~4x shorter than v2's
#: at the same number of known images (BENCHMARKS.md, "A 2^20-word vocabulary, measured at
#: 10^6 and 2*10^7" and "A 4th word for the few-descriptor searches").
DEFAULT_VOCAB = DATA / "orb-vocab-20.npz"
_LOADED: dict[str, Vocabulary] = {}


def shipped_vocabulary(name: str, digest: str | None = None) -> Vocabulary:
    """The shipped vocabulary ``name`` (one of :data:`SHIPPED`), loaded once per process.
    Raises ValueError when hashwatch ships no such vocabulary, or when ``digest`` is given
    and is not its :meth:`Vocabulary.digest` (an index built with another file of that name)."""
    if name not in SHIPPED:
        raise ValueError(f"vocabulary {name!r} is not shipped with this version of hashwatch "
                         f"(it ships {', '.join(SHIPPED)}; short names {', '.join(SHORT)})")
    if name not in _LOADED:
        v = Vocabulary.load(DATA / name)
        v.shipped = name
        _LOADED[name] = v
    v = _LOADED[name]
    if digest is not None and v.digest() != digest:
        raise ValueError(f"the shipped vocabulary {name} is not the one the index was built "
                         "with (digests differ)")
    return v


def default_vocabulary() -> Vocabulary:
    """The vocabulary new indexes are built with: ``robust/data/orb-vocab-20.npz`` (v20, 2^20
    words, centres and per-word signature bits trained on the ORB descriptors of generated
    benign images by ``benchmarks/scale_study.py vocab``; see BENCHMARKS.md), or the shipped
    one the environment variable ``HASHWATCH_KEYPOINT_VOCAB`` names (``v2`` / ``v20`` or a
    file name of :data:`SHIPPED`): v2 (2^18 words) finds ~0.2 / 0.8 point more of the single /
    combined edits at 10^6 known images, for ~2x the query time at 2*10^7. A saved index is
    always searched with its own vocabulary. Loaded once per process. Raises ValueError when
    the variable names no shipped vocabulary."""
    return shipped_vocabulary(chosen_vocabulary())


def chosen_vocabulary() -> str:
    """The file name (in :data:`SHIPPED`) of the vocabulary new indexes are built with:
    ``HASHWATCH_KEYPOINT_VOCAB`` when set (a short name or a file name), else
    :data:`DEFAULT_VOCAB`'s. Nothing is loaded. Raises ValueError when the variable names no
    shipped vocabulary."""
    name = os.environ.get("HASHWATCH_KEYPOINT_VOCAB", "").strip() or DEFAULT_VOCAB.name
    name = SHORT.get(name, name)
    if name not in SHIPPED:
        raise ValueError(f"HASHWATCH_KEYPOINT_VOCAB={name!r}: not a vocabulary shipped with "
                         f"this version of hashwatch (short names {', '.join(SHORT)}; files "
                         f"{', '.join(SHIPPED)})")
    return name
