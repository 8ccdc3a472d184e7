"""One segment of the index: its codes, ids and tombstones, the chunk tables of multi-index
hashing built over them, and the search of one segment (the C kernels of :mod:`hashwatch._mih`,
or their numpy twins when the extension was not built: exact, but they scan).

See :mod:`hashwatch.index` for the layout of a segment and why the search is exact.
"""

from __future__ import annotations

import math

import numpy as np

from hashwatch.index.layout import CODE_BYTES, _plan, choose_layout

try:  # the C hot path; the pure-numpy fallback below is exact but scans
    from hashwatch import _mih
except ImportError:  # pragma: no cover - exercised only when the extension was not built
    _mih = None

HAVE_C_EXTENSION = _mih is not None

_MAX_PROBES = 1 << 24
# Spare capacity of big segments' buffers for append-merges. Untouched pages of np.empty /
# np.zeros are never resident, so the spare room costs address space, not RSS.
_SPARE = 0.5


_POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint16)


def _chunk_values(codes: np.ndarray, start: int, width: int) -> np.ndarray:
    """Numpy twin of get_chunk() in _mih.c (little-endian 64-bit words)."""
    words = codes.view("<u8").reshape(-1, 4)
    wi, off = divmod(start, 64)
    v = words[:, wi] >> np.uint64(off)
    if off + width > 64:
        v = v | (words[:, wi + 1] << np.uint64(64 - off))
    return (v & np.uint64((1 << width) - 1)).astype(np.int64)


def _np_build_chunk(codes, start, width, offsets, postings) -> None:
    v = _chunk_values(codes, start, width)
    postings[:] = np.argsort(v, kind="stable")
    offsets[0] = 0
    offsets[1:] = np.cumsum(np.bincount(v, minlength=1 << width))


def _np_scan(codes: np.ndarray, tomb: np.ndarray, queries: np.ndarray, radius: int):
    qs, ps, ds = [], [], []
    block = 1 << 16  # bounded temporaries
    for a in range(0, codes.shape[0], block):
        blk, tb = codes[a : a + block], tomb[a : a + block]
        for qi, q in enumerate(queries):
            d = _POP8[np.bitwise_xor(blk, q)].sum(axis=1, dtype=np.int32)
            pos = np.nonzero((d <= radius) & (tb == 0))[0]
            qs.append(np.full(pos.size, qi, dtype=np.uint32))
            ps.append((pos + a).astype(np.uint32))
            ds.append(d[pos].astype(np.uint16))
    if not qs:
        return _EMPTY_HITS
    return np.concatenate(qs), np.concatenate(ps), np.concatenate(ds)


_EMPTY_HITS = (np.empty(0, np.uint32), np.empty(0, np.uint32), np.empty(0, np.uint16))


class _Segment:
    """Codes + multi-index tables of positions 0..n-1; only ``tomb`` changes after the build.

    ``codes`` and ``tomb`` may be longer than ``n`` (views into buffers with spare capacity,
    filled by an append-merge); positions >= n are never reported by this segment.
    """

    __slots__ = (
        "ids",
        "codes",
        "tomb",
        "widths",
        "starts",
        "tabs",
        "n_dead",
        "bufs",
        "runs",
        "_plans",
        "_starts_b",
        "_widths_b",
    )

    def __init__(
        self,
        ids,
        codes,
        tomb,
        widths,
        offsets,
        postings,
        bufs=None,
        runs: tuple[int, ...] | None = None,
    ) -> None:
        self.ids = ids
        # ids ascend within each run [runs[k], runs[k+1]) (an append-merge adds a run)
        self.runs = tuple(runs) if runs else (0, int(ids.shape[0]))
        self.codes = codes
        self.tomb = tomb
        self.widths = tuple(int(w) for w in widths)
        self.starts = tuple(int(s) for s in np.cumsum((0,) + self.widths[:-1]))
        # per chunk: uint32[2**w + 1] offset table and uint32 posting list; one attribute
        # replaced as a whole so a reader never pairs a new table with an old list
        self.tabs: tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]] = (
            tuple(offsets),
            tuple(postings),
        )
        self.n_dead = int(np.count_nonzero(tomb[: ids.shape[0]]))
        # (ids, codes, tomb) buffers with spare capacity for an append-merge, or None
        self.bufs = bufs
        self._plans: dict[tuple[int, str], np.ndarray | None] = {}
        self._starts_b = np.asarray(self.starts, dtype=np.int32).tobytes()
        self._widths_b = np.asarray(self.widths, dtype=np.int32).tobytes()

    @property
    def n(self) -> int:
        return int(self.ids.shape[0])

    @property
    def n_live(self) -> int:
        return self.n - self.n_dead

    @property
    def offsets(self) -> tuple[np.ndarray, ...]:
        return self.tabs[0]

    @property
    def postings(self) -> tuple[np.ndarray, ...]:
        return self.tabs[1]

    @staticmethod
    def tables(codes: np.ndarray, widths: tuple[int, ...], only: int | None = None):
        """Offset table and posting list of every chunk (or of chunk ``only``)."""
        n = codes.shape[0]
        if n >= 1 << 32:
            raise ValueError("a segment holds fewer than 2**32 codes")
        offsets, postings = [], []
        for i, w in enumerate(widths):
            if only is None or i == only:
                offsets.append(np.zeros((1 << w) + 1, dtype=np.uint32))
                postings.append(np.empty(n, dtype=np.uint32))
        _Segment.fill(codes, widths, offsets, postings, only)
        return offsets, postings

    @staticmethod
    def fill(codes: np.ndarray, widths: tuple[int, ...], offsets, postings,
             only: int | None = None) -> None:
        """Build every chunk's (or chunk ``only``'s) offset table and posting list into the
        given arrays (uint32, 2**w + 1 and n long)."""
        build = _mih.build_chunk if _mih is not None else _np_build_chunk
        start, k = 0, 0
        for i, w in enumerate(widths):
            if only is None or i == only:
                build(codes, start, w, offsets[k], postings[k])
                k += 1
            start += w

    @classmethod
    def build(
        cls, ids: np.ndarray, codes: np.ndarray, chunk_bits: int | None = None, bufs=None
    ) -> _Segment:
        """ids sorted ascending and unique; codes aligned with ids."""
        widths = choose_layout(int(ids.shape[0]), chunk_bits)
        offsets, postings = cls.tables(codes, widths)
        tomb = bufs[2][: ids.shape[0]] if bufs else np.zeros(ids.shape[0], dtype=np.uint8)
        return cls(ids, codes, tomb, widths, offsets, postings, bufs)

    def plan(self, radius: int, mode: str = "auto") -> np.ndarray | None:
        """Chunk thresholds for ``radius``, or None for a linear scan."""
        key = (radius, mode)
        try:
            return self._plans[key]
        except KeyError:
            if _mih is None or mode == "scan" or (mode == "auto" and self.n < 64):
                p = None
            else:
                p = _plan(self.widths, self.n, radius, allow_scan=mode == "auto")
                if (
                    p is not None
                    and sum(
                        sum(math.comb(w, k) for k in range(t + 1))
                        for w, t in zip(self.widths, p.tolist(), strict=True)
                    )
                    > _MAX_PROBES
                ):
                    p = None  # forced probing would need gigabytes of probe buffers: scan
            self._plans[key] = p
            return p

    def query(self, queries: np.ndarray, radius: int, mode: str = "auto"):
        """(query index, position, distance) of live codes within radius, unordered."""
        n = self.n
        if n == 0 or self.n_dead == n:
            return _EMPTY_HITS
        thr = self.plan(radius, mode)
        if _mih is None:
            return _np_scan(self.codes[:n], self.tomb[:n], queries, radius)
        if thr is None:
            out = _mih.scan(self.codes[:n], self.tomb[:n] if self.n_dead else b"", queries, radius)
        else:
            # tables before codes: an append-merge lengthens codes/tomb first, then swaps in
            # tables that point past n, so this order always sees long enough codes
            offsets, postings = self.tabs
            codes, tomb = self.codes, self.tomb
            out = _mih.search(
                codes,
                self._starts_b,
                self._widths_b,
                offsets,
                postings,
                thr.tobytes(),
                tomb if self.n_dead else b"",
                queries,
                radius,
                n,
            )
        return (
            np.frombuffer(out[0], np.uint32),
            np.frombuffer(out[1], np.uint32),
            np.frombuffer(out[2], np.uint16),
        )

    def locate(self, ids: np.ndarray) -> np.ndarray:
        """Positions of the live entries among ``ids``."""
        if self.n == 0 or ids.size == 0:
            return np.empty(0, dtype=np.int64)
        found = []
        for a, b in zip(self.runs[:-1], self.runs[1:], strict=True):
            pos = np.searchsorted(self.ids[a:b], ids) + a
            ok = pos < b
            pos = pos[ok]
            found.append(pos[self.ids[pos] == ids[ok]])
        pos = found[0] if len(found) == 1 else np.concatenate(found)
        return pos[self.tomb[pos] == 0]

    def kill(self, pos: np.ndarray) -> int:
        if pos.size == 0:
            return 0
        self.tomb[pos] = 1
        self.n_dead += int(pos.size)  # locate() returns distinct live positions only
        return int(pos.size)

    def live(self, tomb: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        n = self.n
        tomb = self.tomb[:n] if tomb is None else tomb[:n]
        keep = tomb == 0
        if keep.all():
            return self.ids, self.codes[:n]
        return self.ids[keep], self.codes[:n][keep]

    def nbytes(self) -> int:
        arrays = list(self.bufs) if self.bufs else [self.ids, self.codes, self.tomb]
        return sum(int(a.nbytes) for a in arrays + list(self.offsets) + list(self.postings))

    def data_bytes(self) -> int:
        """Bytes of the arrays up to position n (a buffer's spare room is left out: never
        written, so never resident)."""
        n = self.n
        rows = [self.ids[:n], self.codes[:n], self.tomb[:n]]
        return sum(int(a.nbytes) for a in rows + list(self.offsets) + list(self.postings))


def _packed(n: int, widths: tuple[int, ...]):
    """ids (n,) int64, codes (n, 32) uint8, tomb (n,) uint8 (zeroed) and every chunk's
    offset table and posting list (uint32), all views into one buffer.

    Why one buffer: the small segments are rebuilt again and again by tiered merging. As
    2m + 3 separate arrays each (m ~ 20-32 chunks) they were mostly blocks under glibc's
    mmap threshold (128 KiB), scattered over the malloc arenas, where the holes they left
    when freed were kept (measured: BENCHMARKS.md, issue 12, soak, worker RSS). One block
    of a segment above ~500 entries is mapped on its own and unmapped when the segment is
    merged away; the few smaller ones left in the arenas are bounded by the tiers."""
    tables = sum(((1 << w) + 1 + n) * 4 for w in widths)
    head = (n * (8 + CODE_BYTES + 1) + 7) // 8 * 8  # uint32 tables start 8-aligned
    buf = np.empty(head + tables, dtype=np.uint8)
    ids = buf[: 8 * n].view(np.int64)
    codes = buf[8 * n : 40 * n].reshape(n, CODE_BYTES)
    tomb = buf[40 * n : 41 * n]
    tomb[:] = 0
    offsets, postings, at = [], [], head
    for w in widths:
        size = ((1 << w) + 1) * 4
        offsets.append(buf[at : at + size].view(np.uint32))
        postings.append(buf[at + size : at + size + 4 * n].view(np.uint32))
        at += size + 4 * n
    return ids, codes, tomb, offsets, postings


def _merge(
    parts: list[tuple[np.ndarray, np.ndarray]],
    chunk_bits: int | None,
    spare: float = 0.0,
    keep: bool = False,
) -> _Segment:
    """One segment from (ids, codes) parts with distinct ids; with ``spare`` > 0 the codes,
    ids and tombstones get that fraction of spare capacity for later append-merges, else
    the segment is one buffer (:func:`_packed`). ``keep``: a single part's arrays become
    the segment's own (no copy; they must not be modified after)."""
    parts = [p for p in parts if p[0].size]
    n = sum(p[0].size for p in parts)
    if n == 0:
        return _Segment.build(np.empty(0, np.int64), np.empty((0, CODE_BYTES), np.uint8))
    if keep and len(parts) == 1 and not spare:
        return _Segment.build(*parts[0], chunk_bits)
    parts.sort(key=lambda p: int(p[0][0]))
    bufs = None
    if spare:
        cap = n + int(n * spare)
        bufs = (np.empty(cap, dtype=np.int64), np.empty((cap, CODE_BYTES), dtype=np.uint8),
                np.zeros(cap, dtype=np.uint8))
        ids, codes = bufs[0][:n], bufs[1][:n]
    else:
        widths = choose_layout(n, chunk_bits)
        ids, codes, tomb, offsets, postings = _packed(n, widths)
    np.concatenate([p[0] for p in parts], out=ids)
    np.concatenate([p[1] for p in parts], out=codes)
    if not bool(np.all(ids[1:] > ids[:-1])):  # ids interleave: reorder
        order = np.argsort(ids, kind="stable")  # sorted runs: timsort is ~linear
        ids[:] = ids[order]
        codes[:] = codes[order]
        del order
    if bufs is not None:
        return _Segment.build(ids, codes, chunk_bits, bufs)
    _Segment.fill(codes, widths, offsets, postings)
    return _Segment(ids, codes, tomb, widths, offsets, postings)
