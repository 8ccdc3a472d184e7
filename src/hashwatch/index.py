"""Exact Hamming range search over 256-bit codes (PDQ) with multi-index hashing.

Layout of one *segment* of n codes (positions 0..n-1):

* ``codes`` (n, 32) uint8, ``ids`` (n,) int64 ascending within each run (a freshly built
  segment is one run), ``tomb`` (n,) uint8 (1 = removed);
* the 256 bits are cut into m disjoint chunks of ``widths[i]`` bits; for every chunk a
  direct-addressed offset table (2**width + 1 uint32) and a posting list of n uint32 positions
  sorted by the chunk value (counting sort in C).

Search uses the generalised pigeonhole principle: if ``d(a, b) <= r`` and ``sum(t_i + 1) >= r + 1``
then some chunk i has ``d_i(a, b) <= t_i`` (``t_i = -1`` leaves a chunk out). Every bucket within
``t_i`` of the query's chunk is probed and every candidate is verified with a full popcount,
so results are exact for every radius 0..256. A code reached through several chunks is reported
only from the first chunk within its threshold (no hash set). The thresholds are chosen per
segment and radius by a cost model (greedy over convex marginal costs); when probing would cost
more than reading every code, the segment is scanned instead (still exact).

The index is a list of segments. ``add`` builds a new segment from the batch (the big one is
never rebuilt for an add); ``remove`` sets tombstones; small segments are merged in tiers.
When the smaller segments reach ``compact_ratio`` of the largest one, a background thread
(the C build releases the GIL) or :meth:`HammingIndex.compact` folds them into it. Big
segments keep spare capacity (untouched, so not resident) after their codes: the fold
appends there as a new id run and rebuilds the chunk tables one at a time, so it needs one
chunk table of extra memory, not a second index. When that is not possible (no spare room,
too many tombstones to purge, the layout would change, index loaded with mmap) the merge
builds a new segment and briefly holds about twice the index.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import secrets
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

try:  # the C hot path; the pure-numpy fallback below is exact but scans
    from hashwatch import _mih
except ImportError:  # pragma: no cover - exercised only when the extension was not built
    _mih = None

__all__ = ["HammingIndex", "choose_layout", "HAVE_C_EXTENSION", "CODE_BYTES"]

CODE_BYTES = 32
CODE_BITS = 256
DEFAULT_RADIUS = 31
HAVE_C_EXTENSION = _mih is not None

_MAGIC = b"HWMIH001"
_FORMAT = 2
_ALIGN = 64
# Relative costs (measured on x86-64, 20M codes): one bucket probe (random read of the offset
# table), one candidate (posting read + random code read + popcount), one code of a linear scan.
_COST_PROBE = 1.0
_COST_CAND = 1.0
_COST_SCAN = 0.08
_MAX_PROBES = 1 << 24
_SYNC_MERGE_LIMIT = 1 << 20  # tiered merges of segments up to this size run inline
# Spare capacity of big segments' buffers for append-merges. Untouched pages of np.empty /
# np.zeros are never resident, so the spare room costs address space, not RSS.
_SPARE = 0.5
_MAX_RUNS = 64  # append-merges per segment before a full rebuild re-sorts its ids


def choose_layout(n: int, chunk_bits: int | None = None) -> tuple[int, ...]:
    """Chunk widths for a segment of ``n`` codes: chunks of about log2(n) bits covering 256 bits.

    One bucket then holds about one code, which balances probes against candidates.
    """
    if chunk_bits is None:
        chunk_bits = int(round(math.log2(max(n, 2))))
    b = max(8, min(24, int(chunk_bits)))
    m = math.ceil(CODE_BITS / b)
    base, extra = divmod(CODE_BITS, m)
    return tuple([base + 1] * extra + [base] * (m - extra))


def _plan(
    widths: tuple[int, ...], n: int, radius: int, allow_scan: bool = True
) -> np.ndarray | None:
    """Per-chunk thresholds with sum(t_i + 1) >= radius + 1 at least estimated cost, or None
    when a linear scan is cheaper (and allowed)."""
    scan_cost = _COST_SCAN * n if allow_scan else math.inf
    unit = [_COST_PROBE + _COST_CAND * n / float(1 << w) for w in widths]
    t = [-1] * len(widths)
    heap = [(unit[i], i) for i in range(len(widths))]
    heapq.heapify(heap)
    total = 0.0
    for _ in range(radius + 1):
        cost, i = heapq.heappop(heap)
        total += cost
        if total > scan_cost:
            return None
        t[i] += 1
        k = t[i] + 1
        if k <= widths[i]:
            heapq.heappush(heap, (math.comb(widths[i], k) * unit[i], i))
    return np.asarray(t, dtype=np.int32)


def _as_codes(codes: object) -> np.ndarray:
    """(n, 32) uint8 C-contiguous from bytes, hex string, or array-likes of those."""
    if isinstance(codes, str):
        codes = bytes.fromhex(codes)
    if isinstance(codes, bytes | bytearray | memoryview):
        arr = np.frombuffer(bytes(codes), dtype=np.uint8)
    elif isinstance(codes, list | tuple) and codes and isinstance(codes[0], str | bytes):
        arr = np.frombuffer(
            b"".join(bytes.fromhex(c) if isinstance(c, str) else bytes(c) for c in codes),
            dtype=np.uint8,
        )
    else:
        arr = np.asarray(codes)
        if arr.dtype != np.uint8:
            raise TypeError(f"codes must be uint8, got {arr.dtype}")
    if arr.ndim == 1:
        if arr.size % CODE_BYTES:
            raise ValueError(f"a code is {CODE_BYTES} bytes, got {arr.size}")
        arr = arr.reshape(-1, CODE_BYTES)
    if arr.ndim != 2 or arr.shape[1] != CODE_BYTES:
        raise ValueError(f"codes must have shape (n, {CODE_BYTES}), got {arr.shape}")
    return np.ascontiguousarray(arr)


def _as_ids(ids: object) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError("ids must be one-dimensional")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"ids must be integers, got {arr.dtype}")
    return arr.astype(np.int64, copy=False)


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


class HammingIndex:
    """Exact Hamming range search over 256-bit codes with int64 ids.

    ids are unique: adding an id that is already present replaces its code. Thread-safe:
    searches run concurrently with adds, removes and a background merge.

    ``mode``: "auto" (multi-index probing or a scan, whichever the cost model finds cheaper),
    "mih" (always probe) or "scan"; all three are exact. ``chunk_bits`` overrides the chunk
    width (default about log2 of the segment size). Merges of segments up to
    ``sync_merge_limit`` codes run inline; bigger ones in a background thread when
    ``background`` (else inline).
    """

    def __init__(
        self,
        *,
        auto_compact: bool = True,
        compact_ratio: float = 0.1,
        background: bool = True,
        chunk_bits: int | None = None,
        mode: str = "auto",
        sync_merge_limit: int = _SYNC_MERGE_LIMIT,
    ) -> None:
        if mode not in ("auto", "mih", "scan"):
            raise ValueError(f"mode must be auto, mih or scan, got {mode!r}")
        self.mode = mode
        self.sync_merge_limit = sync_merge_limit
        self.auto_compact = auto_compact
        self.compact_ratio = compact_ratio
        self.background = background
        self.chunk_bits = chunk_bits
        self._segments: list[_Segment] = []
        self._lock = threading.RLock()
        self._merge_thread: threading.Thread | None = None
        self._merge_error: BaseException | None = None
        self._frozen = 0  # leading segments owned by a running background merge
        self._killed_log: list[np.ndarray] | None = None

    # ---------------------------------------------------------------- mutation
    def add(self, ids: Iterable[int] | np.ndarray, codes: object, *, copy: bool = True) -> None:
        """Add codes under ids (replacing the code of an id already present).

        ``copy=False`` lets the index keep the caller's arrays when ids are already ascending
        and unique (saves a copy when loading a big list); they must not be modified after.
        """
        ids_a = _as_ids(ids)
        codes_a = _as_codes(codes)
        if ids_a.shape[0] != codes_a.shape[0]:
            raise ValueError(f"{ids_a.shape[0]} ids for {codes_a.shape[0]} codes")
        if ids_a.size == 0:
            return
        if ids_a.size > 1 and not bool(np.all(ids_a[1:] > ids_a[:-1])):
            # last occurrence of a repeated id wins, as if added one by one
            rev_ids = ids_a[::-1]
            uniq, first = np.unique(rev_ids, return_index=True)
            ids_a = uniq
            codes_a = codes_a[::-1][first]
            copy = True  # arrays are ours now
        big = ids_a.size > self.sync_merge_limit
        # built outside the lock so searches are not held up by a big batch; copied (the
        # caller keeps ownership of its arrays) into one buffer, or, a big one, into buffers
        # with spare room for later append-merges
        seg = _merge(
            [(np.ascontiguousarray(ids_a), codes_a)],
            self.chunk_bits,
            spare=_SPARE if big and copy else 0.0,
            keep=not copy,
        )
        with self._lock:
            self._kill(ids_a)  # in the same critical section as the append: ids stay unique
            # fold small newest segments of similar size into the new one (tiered merging:
            # O(log n) segments, each code rebuilt O(log n) times, the big base never)
            parts = [(seg.ids, seg.codes)]
            segs = self._segments
            while (
                len(segs) > self._frozen
                and segs[-1].n <= self.sync_merge_limit
                and 2 * seg.n + 2 * sum(p[0].size for p in parts[1:]) >= segs[-1].n_live
            ):
                parts.append(segs.pop().live())
            segs.append(seg if len(parts) == 1 else _merge(parts, self.chunk_bits))
            self._maybe_background_merge()

    def remove(self, ids: Iterable[int] | np.ndarray) -> int:
        """Remove ids; unknown ids are ignored. Returns how many entries were removed."""
        ids_a = np.unique(_as_ids(ids))
        with self._lock:
            n = self._kill(ids_a)
            self._maybe_background_merge()
            return n

    def _kill(self, ids: np.ndarray) -> int:
        removed = 0
        for seg in self._segments:
            removed += seg.kill(seg.locate(ids))
        if removed and self._killed_log is not None:
            self._killed_log.append(ids.copy())
        return removed

    def _merge_small(self) -> None:
        """Tiered merging of the newest segments (geometric sizes: O(log n) segments)."""
        segs = self._segments
        while (
            len(segs) - self._frozen >= 2
            and segs[-2].n <= self.sync_merge_limit
            and 2 * segs[-1].n_live >= segs[-2].n_live
        ):
            merged = _merge([segs[-2].live(), segs[-1].live()], self.chunk_bits)
            segs[-2:] = [merged]
        # drop fully dead segments that no merge owns
        self._segments = segs[: self._frozen] + [s for s in segs[self._frozen :] if s.n_live]

    def _maybe_background_merge(self) -> None:
        segs = self._segments
        if not self.auto_compact or self._merge_thread is not None or not segs:
            return
        total = sum(s.n for s in segs)
        big = max(s.n for s in segs)
        dead = sum(s.n_dead for s in segs)
        if (len(segs) == 1 and dead == 0) or (total - big) + dead < self.compact_ratio * big:
            return
        if self.background and total > self.sync_merge_limit:
            self._start_merge()
        else:
            self._compact_locked()

    def _start_merge(self) -> None:
        """Merge the current segments in a thread; adds and removes go on meanwhile."""
        snap = list(self._segments)
        tombs = [s.tomb[: s.n].copy() for s in snap]
        self._frozen = len(snap)
        self._killed_log = []
        self._merge_error = None

        def run() -> None:
            try:
                merged = self._merge_job(snap, tombs)
            except BaseException as exc:  # keep serving the old segments
                with self._lock:
                    self._merge_error = exc
                    self._frozen = 0
                    self._killed_log = None
                    self._merge_thread = None
                return
            with self._lock:
                self._finish_merge(snap, merged)
                self._merge_thread = None
                self._merge_small()

        t = threading.Thread(target=run, name="hashwatch-index-merge", daemon=True)
        self._merge_thread = t
        t.start()

    def _merge_job(self, snap: list[_Segment], tombs: list[np.ndarray]) -> _Segment:
        merged = self._append_merge(snap, tombs)
        if merged is None:
            live = [s.live(t) for s, t in zip(snap, tombs, strict=True)]
            n = sum(p[0].size for p in live)
            merged = _merge(
                live, self.chunk_bits, spare=_SPARE if n > self.sync_merge_limit else 0.0
            )
        return merged

    def _finish_merge(self, snap: list[_Segment], merged: _Segment) -> None:
        """Swap ``merged`` in for ``snap`` (lock held), replaying removals made meanwhile."""
        log = self._killed_log or []
        if log:
            merged.kill(merged.locate(np.unique(np.concatenate(log))))
        # tombstones shared with the old base may have been set after ``merged`` was made
        merged.n_dead = int(np.count_nonzero(merged.tomb[: merged.n]))
        self._segments = [merged] + self._segments[len(snap) :]
        self._frozen = 0
        self._killed_log = None

    def _append_merge(self, snap: list[_Segment], tombs: list[np.ndarray]) -> _Segment | None:
        """Fold the small segments into the first one without a second copy of the index:
        their codes go into the spare capacity of its buffers, then its chunk tables are
        rebuilt and swapped one at a time (peak extra memory: one chunk table). The appended
        ids form a new sorted run. None when that does not apply (no spare room, layout
        would change, many tombstones to purge, too many runs): the caller then rebuilds."""
        base = snap[0]
        if base.bufs is None or len(snap) < 2 or base.n == 0:
            return None
        rest = [
            p for p in (s.live(t) for s, t in zip(snap[1:], tombs[1:], strict=True)) if p[0].size
        ]
        if not rest:
            return None
        ids_buf, codes_buf, tomb_buf = base.bufs
        n0 = base.n
        n1 = n0 + sum(p[0].size for p in rest)
        if (
            n1 > ids_buf.shape[0]
            or base.n_dead > self.compact_ratio * n0
            or choose_layout(n1, self.chunk_bits) != base.widths
            or len(base.runs) > _MAX_RUNS
        ):
            return None
        rest.sort(key=lambda p: int(p[0][0]))
        new_ids = np.concatenate([p[0] for p in rest])
        new_codes = np.concatenate([p[1] for p in rest])
        if not bool(np.all(new_ids[1:] > new_ids[:-1])):
            order = np.argsort(new_ids, kind="stable")
            new_ids, new_codes = new_ids[order], new_codes[order]
        ids_buf[n0:n1] = new_ids
        codes_buf[n0:n1] = new_codes
        tomb_buf[n0:n1] = 0
        with self._lock:  # longer views first: the base's tables may now point past n0
            base.codes, base.tomb = codes_buf[:n1], tomb_buf[:n1]
        for i in range(len(base.widths)):
            off, post = _Segment.tables(base.codes, base.widths, only=i)
            offs, posts = list(base.offsets), list(base.postings)
            offs[i], posts[i] = off[0], post[0]
            with self._lock:
                base.tabs = (tuple(offs), tuple(posts))
            del off, post, offs, posts
        return _Segment(
            ids_buf[:n1],
            codes_buf[:n1],
            tomb_buf[:n1],
            base.widths,
            base.offsets,
            base.postings,
            base.bufs,
            base.runs + (n1,),
        )

    def wait(self) -> None:
        """Block until a running background merge has finished."""
        while True:
            with self._lock:
                t = self._merge_thread
            if t is None:
                break
            t.join()
        if self._merge_error is not None:
            err, self._merge_error = self._merge_error, None
            raise RuntimeError("background merge failed") from err

    def compact(self) -> None:
        """Merge every segment into one (dropping removed entries unless the merge could
        append in place); searches go on meanwhile. Returns when done."""
        while True:
            self.wait()
            with self._lock:
                if self._merge_thread is not None:  # another add started one meanwhile
                    continue
                segs = self._segments
                if not segs or (len(segs) == 1 and segs[0].n_dead == 0):
                    return
                self._start_merge()
            self.wait()
            return

    def _compact_locked(self) -> None:
        segs = self._segments
        if not segs or (len(segs) == 1 and segs[0].n_dead == 0):
            return
        self._frozen = len(segs)
        self._killed_log = []
        merged = self._merge_job(list(segs), [s.tomb[: s.n].copy() for s in segs])
        self._finish_merge(list(segs), merged)

    # ---------------------------------------------------------------- queries
    def _snapshot(self) -> list[_Segment]:
        with self._lock:
            return list(self._segments)

    def _hits(self, queries: np.ndarray, radius: int):
        if not 0 <= radius <= CODE_BITS:
            raise ValueError(f"radius must be in 0..{CODE_BITS}, got {radius}")
        qs, ids, ds = [], [], []
        for seg in self._snapshot():
            q, pos, d = seg.query(queries, int(radius), self.mode)
            if pos.size:
                qs.append(q)
                ids.append(seg.ids[pos])
                ds.append(d)
        if not qs:
            return np.empty(0, np.uint32), np.empty(0, np.int64), np.empty(0, np.uint16)
        if len(qs) == 1:
            return qs[0], ids[0], ds[0]
        return np.concatenate(qs), np.concatenate(ids), np.concatenate(ds)

    def search(
        self, code: bytes | str | np.ndarray, radius: int = DEFAULT_RADIUS
    ) -> list[tuple[int, int]]:
        """Every (id, distance) within ``radius`` of ``code``, by distance then id. Exact."""
        q = _as_codes(code)
        if q.shape[0] != 1:
            raise ValueError("search() takes one code; use search_many()")
        _, ids, d = self._hits(q, radius)
        if ids.size > 1:
            order = np.lexsort((ids, d))
            ids, d = ids[order], d[order]
        return list(zip(ids.tolist(), d.tolist(), strict=True))

    def search_many(
        self, codes: object, radius: int = DEFAULT_RADIUS
    ) -> list[list[tuple[int, int]]]:
        """search() for each row of ``codes`` ((q, 32) uint8), in one pass without the GIL."""
        q = _as_codes(codes)
        qi, ids, d = self._hits(q, radius)
        out: list[list[tuple[int, int]]] = [[] for _ in range(q.shape[0])]
        if ids.size == 0:
            return out
        order = np.lexsort((ids, d, qi))
        qi, ids, d = qi[order], ids[order].tolist(), d[order].tolist()
        bounds = np.searchsorted(qi, np.arange(q.shape[0] + 1)).tolist()
        for k in range(q.shape[0]):
            a, b = bounds[k], bounds[k + 1]
            if b > a:
                out[k] = list(zip(ids[a:b], d[a:b], strict=True))
        return out

    def __len__(self) -> int:
        return sum(s.n_live for s in self._snapshot())

    def __contains__(self, id_: object) -> bool:
        try:
            ids = _as_ids(id_)
        except (TypeError, ValueError):
            return False
        return ids.size == 1 and any(s.locate(ids).size for s in self._snapshot())

    def ids(self) -> np.ndarray:
        """All live ids, ascending."""
        parts = [s.live()[0] for s in self._snapshot()]
        return np.sort(np.concatenate(parts)) if parts else np.empty(0, np.int64)

    def lookup(self, ids: Iterable[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each id: whether the index holds it (bool (n,)) and its code ((n, 32) uint8,
        zeros where absent). One consistent view of the segments; vectorised."""
        q = _as_ids(ids)
        found = np.zeros(q.size, dtype=bool)
        codes = np.zeros((q.size, CODE_BYTES), dtype=np.uint8)
        if q.size == 0:
            return found, codes
        for seg in self._snapshot():
            for a, b in zip(seg.runs[:-1], seg.runs[1:], strict=True):
                if b <= a:
                    continue
                pos = np.searchsorted(seg.ids[a:b], q) + a
                ok = np.nonzero(pos < b)[0]
                hit = ok[seg.ids[pos[ok]] == q[ok]]
                p = pos[hit]
                live = seg.tomb[p] == 0
                hit, p = hit[live], p[live]
                found[hit] = True
                codes[hit] = seg.codes[p]
        return found, codes

    def iter_ids(self, block: int = 1 << 20) -> Iterator[np.ndarray]:
        """Live ids in blocks (no order across blocks): bounded memory at any size."""
        for seg in self._snapshot():
            for a in range(0, seg.n, block):
                b = min(seg.n, a + block)
                part = seg.ids[a:b]
                yield part[seg.tomb[a:b] == 0]

    def range(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, codes) of the live entries with ``lo <= id < hi``."""
        ids_parts, code_parts = [], []
        for seg in self._snapshot():
            for a, b in zip(seg.runs[:-1], seg.runs[1:], strict=True):
                run = seg.ids[a:b]
                i, j = (int(x) + a for x in np.searchsorted(run, [lo, hi]))
                if j > i:
                    keep = np.nonzero(seg.tomb[i:j] == 0)[0] + i
                    ids_parts.append(seg.ids[keep])
                    code_parts.append(seg.codes[keep])
        if not ids_parts:
            return np.empty(0, np.int64), np.empty((0, CODE_BYTES), np.uint8)
        return np.concatenate(ids_parts), np.concatenate(code_parts)

    def get(self, id_: int) -> bytes | None:
        """The code stored under ``id_``, or None."""
        ids = _as_ids(id_)
        for s in self._snapshot():
            pos = s.locate(ids)
            if pos.size:
                return s.codes[int(pos[0])].tobytes()
        return None

    def stats(self) -> dict[str, object]:
        """The index's make-up: ``segments`` (n, dead, chunk widths of each), ``live``
        entries, ``bytes`` (its arrays, with big segments' spare room), ``data_bytes``
        (without the spare room, which is never written: what the entries cost in memory),
        ``merging`` and ``c_extension``."""
        segs = self._snapshot()
        return {
            "segments": [{"n": s.n, "dead": s.n_dead, "widths": list(s.widths)} for s in segs],
            "live": sum(s.n_live for s in segs),
            "bytes": sum(s.nbytes() for s in segs),
            "data_bytes": sum(s.data_bytes() for s in segs),
            "merging": self._merge_thread is not None,
            "c_extension": HAVE_C_EXTENSION,
        }

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index atomically (temp file + rename), owner-only (0600)."""
        path = Path(path)
        with self._lock:  # consistent tables/codes pairs even while an append-merge runs
            snap = [(s, s.tabs, s.codes, s.tomb.copy()) for s in self._segments]
        header: dict[str, object] = {"version": _FORMAT, "code_bytes": CODE_BYTES}
        arrays: list[np.ndarray] = []
        offset = 0
        seg_meta = []
        for s, (offsets, postings), codes, tomb in snap:
            named = [("ids", s.ids), ("codes", codes), ("tomb", tomb)]
            named += [(f"offsets{i}", a) for i, a in enumerate(offsets)]
            named += [(f"postings{i}", a) for i, a in enumerate(postings)]
            meta: dict[str, object] = {
                "widths": list(s.widths),
                "n": s.n,
                "runs": list(s.runs),
                "arrays": {},
            }
            for name, arr in named:
                arr = np.ascontiguousarray(arr)
                meta["arrays"][name] = [offset, arr.dtype.str, list(arr.shape)]  # type: ignore[index]
                arrays.append(arr)
                offset += -(-arr.nbytes // _ALIGN) * _ALIGN
            seg_meta.append(meta)
        header["segments"] = seg_meta
        header["data_bytes"] = offset
        hbytes = json.dumps(header).encode()
        data_start = -(-(len(_MAGIC) + 8 + len(hbytes)) // _ALIGN) * _ALIGN
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_MAGIC + len(hbytes).to_bytes(8, "little") + hbytes)
                f.write(b"\0" * (data_start - f.tell()))
                for arr in arrays:
                    f.write(memoryview(arr).cast("B"))
                    pad = -arr.nbytes % _ALIGN
                    if pad:
                        f.write(b"\0" * pad)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        try:  # make the rename durable
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, mmap: bool = False, **kwargs: object
    ) -> HammingIndex:
        """Read an index written by save(). ``mmap=True`` maps the immutable arrays read-only
        (instant load, pages come in on first use; merges then rebuild instead of appending).
        ``kwargs`` go to the constructor."""
        path = Path(path)
        index = cls(**kwargs)  # type: ignore[arg-type]
        size = path.stat().st_size
        with open(path, "rb") as f:
            if f.read(len(_MAGIC)) != _MAGIC:
                raise ValueError(f"{path} is not a hashwatch index file")
            hlen = int.from_bytes(f.read(8), "little")
            try:
                header = json.loads(f.read(hlen))
            except ValueError as exc:
                raise ValueError(f"{path}: damaged header") from exc
            data_start = -(-(len(_MAGIC) + 8 + hlen) // _ALIGN) * _ALIGN
            if header.get("version") != _FORMAT or data_start + header["data_bytes"] > size:
                raise ValueError(f"{path}: unsupported version or truncated file")

            def read(name: str, meta: dict, out: np.ndarray | None = None) -> np.ndarray:
                off, dtype, shape = meta["arrays"][name]
                shape = tuple(shape)
                if out is None and mmap and int(np.prod(shape)) and name != "tomb":
                    return np.memmap(
                        path, dtype=np.dtype(dtype), mode="r", offset=data_start + off, shape=shape
                    )
                arr = np.empty(shape, dtype=np.dtype(dtype)) if out is None else out
                if arr.shape != shape or arr.dtype != np.dtype(dtype):
                    raise ValueError(f"{path}: inconsistent segment")
                f.seek(data_start + off)
                view = memoryview(arr).cast("B")
                got = 0
                while got < arr.nbytes:
                    k = f.readinto(view[got:])
                    if not k:
                        raise ValueError(f"{path}: truncated")
                    got += k
                return arr

            segs = []
            for meta in header["segments"]:
                n = int(meta["n"])
                widths = tuple(int(w) for w in meta["widths"])
                m_codes = int(meta["arrays"]["codes"][2][0])
                bufs = None
                if not mmap and n > index.sync_merge_limit:  # spare room for append-merges
                    cap = max(m_codes, n + int(n * _SPARE))
                    bufs = (
                        np.empty(cap, np.int64),
                        np.empty((cap, CODE_BYTES), np.uint8),
                        np.zeros(cap, np.uint8),
                    )
                    ids = read("ids", meta, bufs[0][:n])
                    codes = read("codes", meta, bufs[1][:m_codes])
                    tomb = read("tomb", meta, bufs[2][:m_codes])
                else:
                    ids, codes, tomb = read("ids", meta), read("codes", meta), read("tomb", meta)
                offsets = [read(f"offsets{i}", meta) for i in range(len(widths))]
                postings = [read(f"postings{i}", meta) for i in range(len(widths))]
                if (
                    ids.shape != (n,)
                    or codes.shape[0] < n
                    or codes.shape[1:] != (CODE_BYTES,)
                    or tomb.shape != (codes.shape[0],)
                    or sum(widths) != CODE_BITS
                    or any(
                        o.shape != ((1 << w) + 1,)
                        or p.shape != (int(o[-1]),)
                        or int(o[-1]) > codes.shape[0]
                        for o, p, w in zip(offsets, postings, widths, strict=True)
                    )
                ):
                    raise ValueError(f"{path}: inconsistent segment")
                runs = tuple(int(r) for r in meta.get("runs", (0, n)))
                if runs[0] != 0 or runs[-1] != n or list(runs) != sorted(runs):
                    raise ValueError(f"{path}: inconsistent segment")
                segs.append(_Segment(ids, codes, tomb, widths, offsets, postings, bufs, runs))
        index._segments = segs
        return index
