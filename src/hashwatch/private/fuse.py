"""Table layout: a binary fuse filter over ristretto255 points (one cell per key, ~1.13 cells).

A published chunk holds ``array_length`` cells of 32 bytes. Every key ``k`` names 3 cells (in
3 consecutive segments, from a keyed BLAKE2b of ``k``); the server chooses the cells so that,
for every key it put in the chunk,

    cell[h0(k)] + cell[h1(k)] + cell[h2(k)] = alpha * H(k)        (ristretto255 addition)

and every cell no key is solved for holds a pseudorandom point. The client adds the 3 cells of
its key and uses the sum exactly like a cuckoo slot of Apple's design (one scalar
multiplication per key instead of one per candidate slot). A chunk of uniformly random blinded
values is itself uniformly random, so it tells a device nothing beyond its size.

The geometry (segment length, segment count, ``size_factor`` >= 1.125) and the peeling follow
Graf and Lemire, "Binary Fuse Filters: Fast and Smaller Than Xor Filters", ACM JEA 27 (2022),
reference implementation ``FastFilter/xor_singleheader``; there the cells are XORed fingerprints,
here they are points of a prime-order group (Bienstock et al., "Near-Optimal Oblivious Key-Value
Stores for Efficient PSI, PSU and Volume-Hiding Multi-Maps", USENIX Security 2023, call such a
structure an oblivious key-value store).

Pure NumPy: :func:`positions` (vectorised, for the build and the client), :func:`peel` (the
order in which the driver solves the cells). The point arithmetic lives in ``build``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

ARITY = 3
MAX_SEGMENT_LENGTH = 1 << 18
CELL_BYTES = 32
_PERSON = b"hw-psi-fuse-v1"


class PeelingFailed(Exception):
    """The keys do not peel with this seed (rare: pick another seed and retry)."""


@dataclass(frozen=True)
class FuseGeometry:
    """Sizes of one chunk: ``array_length = (segment_count + 2) * segment_length`` cells."""

    n_keys: int
    segment_length: int
    segment_count: int

    @classmethod
    def sized(cls, n_keys: int) -> FuseGeometry:
        """The reference sizing for arity 3 (size factor 1.125 from ~1M keys up)."""
        if n_keys < 0:
            raise ValueError("negative key count")
        n = max(n_keys, 2)
        seg = min(1 << int(math.floor(math.log(n) / math.log(3.33) + 2.25)), MAX_SEGMENT_LENGTH)
        factor = max(1.125, 0.875 + 0.25 * math.log(1_000_000) / math.log(n))
        capacity = round(n * factor)
        init_count = (capacity + seg - 1) // seg - (ARITY - 1)
        length = (init_count + ARITY - 1) * seg
        count = max(1, (length + seg - 1) // seg - (ARITY - 1))
        return cls(n_keys, seg, count)

    @property
    def array_length(self) -> int:
        return (self.segment_count + ARITY - 1) * self.segment_length

    def to_dict(self) -> dict[str, int]:
        return {"n_keys": self.n_keys, "segment_length": self.segment_length,
                "segment_count": self.segment_count, "arity": ARITY}

    @classmethod
    def from_dict(cls, d: dict) -> FuseGeometry:
        if int(d.get("arity", ARITY)) != ARITY:
            raise ValueError("unsupported fuse arity")
        g = cls(int(d["n_keys"]), int(d["segment_length"]), int(d["segment_count"]))
        if (g.segment_length & (g.segment_length - 1) or not 0 < g.segment_length
                <= MAX_SEGMENT_LENGTH or g.segment_count < 1 or g.n_keys < 0):
            raise ValueError("bad fuse geometry")
        return g


def key_words(seed: bytes, keys: np.ndarray) -> np.ndarray:
    """(n, 16) uint8 keys -> (n, 2) uint64: keyed BLAKE2b of each key (the seed is public)."""
    out = np.empty((len(keys), 2), dtype="<u8")
    view = out.view(np.uint8).reshape(-1, 16)
    for i, row in enumerate(map(bytes, keys)):
        view[i] = np.frombuffer(hashlib.blake2b(row, digest_size=16, key=seed,
                                                person=_PERSON).digest(), np.uint8)
    return out


def positions(geom: FuseGeometry, words: np.ndarray) -> np.ndarray:
    """(n, 2) uint64 words -> (n, 3) int64 cell indices, one in each of 3 consecutive segments
    (h1, h2 are h0's next segments with their low bits scrambled, as in the reference)."""
    w = np.asarray(words, dtype=np.uint64)
    seg = np.uint64(geom.segment_length)
    mask = np.uint64(geom.segment_length - 1)
    h0 = w[:, 0] % np.uint64(geom.segment_count * geom.segment_length)
    h1 = (h0 + seg) ^ (w[:, 1] & mask)
    h2 = (h0 + seg + seg) ^ ((w[:, 1] >> np.uint64(32)) & mask)
    return np.stack([h0, h1, h2], axis=1).astype(np.int64)


def key_cells(seed: bytes, geom: FuseGeometry, key: bytes) -> tuple[int, int, int]:
    """The 3 cells of one key (client side): :func:`positions` for one key, in plain integers
    (the NumPy round trip cost the device ~50 us per key and chunk)."""
    d = hashlib.blake2b(key, digest_size=16, key=seed, person=_PERSON).digest()
    w0, w1 = int.from_bytes(d[:8], "little"), int.from_bytes(d[8:], "little")
    seg, mask = geom.segment_length, geom.segment_length - 1
    h0 = w0 % (geom.segment_count * seg)
    return h0, (h0 + seg) ^ (w1 & mask), (h0 + 2 * seg) ^ ((w1 >> 32) & mask)


def peel(pos: np.ndarray, array_length: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Peeling order: a list of rounds ``(keys, cells)``; in round r each key is the only
    unpeeled key left in its cell. Solving the rounds last to first, every key's two other cells
    are final before its own cell is set, and keys of one round never touch each other's cell,
    so a round can be solved in parallel. Raises :class:`PeelingFailed` if keys remain."""
    n = len(pos)
    flat = pos.ravel()
    count = np.bincount(flat, minlength=array_length).astype(np.int32)
    xor = np.zeros(array_length, dtype=np.int64)
    np.bitwise_xor.at(xor, flat, np.repeat(np.arange(n, dtype=np.int64), ARITY))
    rounds: list[tuple[np.ndarray, np.ndarray]] = []
    peeled = 0
    cand = np.flatnonzero(count == 1)
    while cand.size:
        cand = cand[count[cand] == 1]
        if cand.size == 0:
            break
        keys, first = np.unique(xor[cand], return_index=True)
        rounds.append((keys, cand[first]))
        peeled += keys.size
        touched = pos[keys].ravel()
        cells, times = np.unique(touched, return_counts=True)
        count[cells] -= times.astype(np.int32)
        np.bitwise_xor.at(xor, touched, np.repeat(keys, ARITY))
        cand = cells
    if peeled != n:
        raise PeelingFailed(f"{n - peeled} of {n} keys did not peel")
    return rounds
