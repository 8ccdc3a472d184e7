"""Match keys: exact keys derived from PDQ so that edited copies still share one with the list.

The PSI protocol tests exact membership; PDQ matches within a Hamming distance. Design:
bit-sampling LSH (Indyk and Motwani, STOC 1998) with query-directed multi-probe (Lv, Josephson,
Wang, Charikar, Li, "Multi-Probe LSH", VLDB 2007), one key per list entry per table:

* **List side** (server): key_t = BLAKE2b(t, the entry's PDQ bits at the public positions S_t).
  ``tables`` keys per entry, each one table cell (``fuse``): the table costs ~36 bytes per key.
* **Device side**: for every view of the picture (``views``: the 8 flips/turns and the
  border-trimmed picture) and every table, the key of the view's own bits, then the keys with
  the most likely flipped subsets of sampled bits, most likely first. A bit is likely to flip
  when its coefficient lies close to the median; ``reliability / sigma`` measures that, with
  ``sigma`` the public per-bit spread of coefficient changes under common edits (measured on
  the corpus, ``benchmarks/private_design.py``). The score of a flip set is the sum over its
  bits, plus a public per-view-class offset (a mirrored copy is rarer than an unmirrored one);
  all (view, table, flip set) candidates are merged by score and the first ``keys_per_image``
  distinct keys are sent, so every voucher has the same shape whatever the picture.

The positions are not random: they are the PDQ bits that common edits flip least (measured on
images disjoint from those recall is reported on), drawn at random, with a public seed, from
that robust pool. What this costs in false matches is measured and modelled in
``benchmarks/private_design.py`` (false-flag probability per heavy account-year).
"""

from __future__ import annotations

import hashlib
import heapq
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .views import View

PDQ_BITS = 256
KEY_BYTES = 16
_PERSON = b"hw-mkey-v2"
VIEW_CLASSES = ("full", "dihedral", "trim", "trim-dihedral")


def hex_to_bits(hex64: str) -> np.ndarray:
    """PDQ hex -> uint8[256] in ``pdqhash.compute`` vector order.

    Same convention as ``hashwatch.signals.pdq``: hex is ``np.packbits`` of that vector.
    Raises ValueError for anything but 64 hex digits."""
    if len(hex64) != 64:
        raise ValueError("not a 64-hex-digit PDQ hash")
    try:
        raw = bytes.fromhex(hex64)
    except ValueError as e:
        raise ValueError("not a 64-hex-digit PDQ hash") from e
    return np.unpackbits(np.frombuffer(raw, dtype=np.uint8))


def bits_to_hex(bits: np.ndarray) -> str:
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex()


def hamming_hex(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def view_class(name: str) -> str:
    """``full`` -> "full", ``full:rot90`` -> "dihedral", ``trim`` -> "trim", ``trim:...`` ->
    "trim-dihedral"."""
    base, _, variant = name.partition(":")
    if base not in ("full", "trim"):
        raise ValueError(f"unknown view {name!r}")
    if base == "full":
        return "dihedral" if variant else "full"
    return "trim-dihedral" if variant else "trim"


def _key(table: int, packed: bytes) -> bytes:
    return hashlib.blake2b(bytes([table]) + packed, digest_size=KEY_BYTES,
                           person=_PERSON).digest()


@dataclass(frozen=True)
class KeyDesign:
    """Public parameters of the match keys (all inside the signed table parameters).

    ``positions``: per table, the sampled PDQ bit positions (``bits`` each);
    ``sigma``: per PDQ bit, the spread of its normalised coefficient under edits (256 floats);
    ``keys_per_image``: keys (voucher key blocks) per image; ``view_offset``: score offset per
    view class (:data:`VIEW_CLASSES`), higher = probed later; ``view_reserve``: keys every
    view of that class gets before the rest is shared out by score."""

    positions: tuple[tuple[int, ...], ...]
    sigma: tuple[float, ...]
    keys_per_image: int = 64
    view_offset: tuple[float, float, float, float] = (0.0, 4.0, 0.5, 5.0)
    view_reserve: tuple[int, int, int, int] = (1, 2, 3, 0)
    label: str = ""
    _frozen: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.positions or len(self.positions) > 16:
            raise ValueError("key design needs 1-16 tables")
        k = len(self.positions[0])
        for pos in self.positions:
            if len(pos) != k or not 8 <= k <= 128 or len(set(pos)) != k or not all(
                    0 <= p < PDQ_BITS for p in pos):
                raise ValueError("each table samples the same number (8-128) of distinct bits")
        if len(self.sigma) != PDQ_BITS or not all(s > 0 for s in self.sigma):
            raise ValueError("sigma needs 256 positive values")
        if (not 1 <= self.keys_per_image <= 4096 or len(self.view_offset) != len(VIEW_CLASSES)
                or len(self.view_reserve) != len(VIEW_CLASSES)
                or any(r < 0 for r in self.view_reserve)):
            raise ValueError("bad keys_per_image, view_offset or view_reserve")

    @property
    def tables(self) -> int:
        return len(self.positions)

    @property
    def bits(self) -> int:
        return len(self.positions[0])

    def to_dict(self) -> dict:
        return {"positions": [list(p) for p in self.positions],
                "sigma": [round(float(s), 6) for s in self.sigma],
                "keys_per_image": self.keys_per_image, "view_offset": list(self.view_offset),
                "view_reserve": list(self.view_reserve), "label": self.label}

    @classmethod
    def from_dict(cls, d: dict) -> KeyDesign:
        return cls(positions=tuple(tuple(int(x) for x in p) for p in d["positions"]),
                   sigma=tuple(float(s) for s in d["sigma"]),
                   keys_per_image=int(d["keys_per_image"]),
                   view_offset=tuple(float(x) for x in d["view_offset"]),  # type: ignore[arg-type]
                   view_reserve=tuple(int(x) for x in d["view_reserve"]),  # type: ignore[arg-type]
                   label=str(d.get("label", "")))

    @cached_property
    def _pos(self) -> np.ndarray:
        return np.array(self.positions, dtype=np.int64)

    @cached_property
    def _inv_sigma(self) -> np.ndarray:
        return 1.0 / np.array(self.sigma, dtype=np.float64)

    # -- list side -------------------------------------------------------------------------
    def entry_keys(self, hashes: np.ndarray) -> np.ndarray:
        """(n, 32) uint8 PDQ hashes -> (n, tables, 16) uint8 keys."""
        bits = np.unpackbits(np.asarray(hashes, dtype=np.uint8).reshape(-1, 32), axis=1)
        out = np.empty((len(bits), self.tables, KEY_BYTES), dtype=np.uint8)
        for t in range(self.tables):
            packed = np.packbits(bits[:, self._pos[t]], axis=1)
            for i, row in enumerate(map(bytes, packed)):
                out[i, t] = np.frombuffer(_key(t, row), np.uint8)
        return out

    def server_keys(self, hex64: str) -> list[bytes]:
        """The keys one list entry contributes (one per table)."""
        row = np.frombuffer(bytes.fromhex(hex64), np.uint8).reshape(1, 32)
        return [bytes(k) for k in self.entry_keys(row)[0]]

    # -- device side -----------------------------------------------------------------------
    def candidates(self, views: Sequence[View]) -> list[tuple[float, str, int, bytes, int]]:
        """(score, view, table, key, flipped bits) of the first ``keys_per_image`` distinct
        keys: first the ``view_reserve`` best of every (view, table) (so a flipped or bordered
        copy always gets its own key and closest probes), then the best of all by score plus
        the view class offset. Per (view, table), flip sets of the sampled bits come in
        increasing score from the shift/expand heap of Lv et al."""
        offsets = dict(zip(VIEW_CLASSES, self.view_offset, strict=True))
        reserve = dict(zip(VIEW_CLASSES, self.view_reserve, strict=True))
        streams = []
        for v in views:
            cls = view_class(v.name)
            w_all = v.reliability * self._inv_sigma
            for t in range(self.tables):
                pos = self._pos[t]
                streams.append(_ProbeStream(v.name, t, v.bits[pos], w_all[pos], offsets[cls],
                                            reserve[cls]))
        out: list[tuple[float, str, int, bytes, int]] = []
        seen: set[bytes] = set()

        def take(st: _ProbeStream) -> None:
            score, flips, probe = st.pop()
            key = _key(st.table, np.packbits(probe).tobytes())
            if key not in seen:
                seen.add(key)
                out.append((score, st.view, st.table, key, flips))

        for st in streams:
            while st.reserve > 0 and st.alive and len(out) < self.keys_per_image:
                st.reserve -= 1
                take(st)
        heap = [(st.peek() + st.offset, i) for i, st in enumerate(streams) if st.alive]
        heapq.heapify(heap)
        while heap and len(out) < self.keys_per_image:
            _, i = heapq.heappop(heap)
            st = streams[i]
            take(st)
            if st.alive:
                heapq.heappush(heap, (st.peek() + st.offset, i))
        return out

    def client_keys(self, views: Sequence[View]) -> list[bytes]:
        """Exactly ``keys_per_image`` distinct keys for a picture's views (random keys fill up
        when there are too few views, e.g. a flat picture: same voucher shape either way)."""
        keys = [c[3] for c in self.candidates(views)]
        while len(keys) < self.keys_per_image:
            keys.append(os.urandom(KEY_BYTES))
        return keys


class _ProbeStream:
    """Flip sets of one (view, table) in increasing score: the empty set, then the
    shift/expand successors of Lv et al. over the sampled bits sorted by weight."""

    def __init__(self, view: str, table: int, sampled: np.ndarray, weights: np.ndarray,
                 offset: float, reserve: int) -> None:
        self.view, self.table, self.offset, self.reserve = view, table, offset, reserve
        self.sampled = np.asarray(sampled, dtype=np.uint8)
        self.order = np.argsort(weights, kind="stable")
        self.ws = np.asarray(weights, dtype=np.float64)[self.order].tolist()
        self.heap: list[tuple[float, tuple[int, ...]]] = [(0.0, ())]

    @property
    def alive(self) -> bool:
        return bool(self.heap)

    def peek(self) -> float:
        return self.heap[0][0]

    def pop(self) -> tuple[float, int, np.ndarray]:
        score, flips = heapq.heappop(self.heap)
        a = flips[-1] if flips else -1
        if a + 1 < len(self.ws):
            heapq.heappush(self.heap, (score + self.ws[a + 1], flips + (a + 1,)))
            if flips:
                heapq.heappush(self.heap, (score - self.ws[a] + self.ws[a + 1],
                                           flips[:-1] + (a + 1,)))
        probe = self.sampled.copy()
        if flips:
            probe[self.order[list(flips)]] ^= 1
        return score, len(flips), probe


def default_design() -> KeyDesign:
    """The published default (``benchmarks/private_design.py`` measures it against the
    alternatives): one key per list entry from the calibrated positions, the calibrated
    sigma, :data:`DEFAULT_KEYS_PER_IMAGE` keys per image."""
    from ._design_data import POSITIONS, SIGMA

    return KeyDesign(positions=(tuple(POSITIONS),), sigma=tuple(SIGMA),
                     keys_per_image=DEFAULT_KEYS_PER_IMAGE, label="hw-keys-2026a")


DEFAULT_KEYS_PER_IMAGE = 128
DEFAULT_DESIGN = default_design()
