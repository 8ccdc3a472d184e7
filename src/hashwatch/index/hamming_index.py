"""The index: :class:`HammingIndex`, a list of segments under one lock. Adds build new
segments, removes set tombstones, small segments are merged in tiers and folded into the big
one (inline, in a background thread, or by appending into its spare room); searches run over
a snapshot of the segments. See :mod:`hashwatch.index` for the whole design.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator

import numpy as np

from hashwatch.index import persistence
from hashwatch.index.layout import CODE_BITS, CODE_BYTES, choose_layout
from hashwatch.index.segment import _SPARE, HAVE_C_EXTENSION, _merge, _Segment

DEFAULT_RADIUS = 31
_SYNC_MERGE_LIMIT = 1 << 20  # tiered merges of segments up to this size run inline
_MAX_RUNS = 64  # append-merges per segment before a full rebuild re-sorts its ids


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
        persistence.save(self, path)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, mmap: bool = False, **kwargs: object
    ) -> HammingIndex:
        """Read an index written by save(). ``mmap=True`` maps the immutable arrays read-only
        (instant load, pages come in on first use; merges then rebuild instead of appending).
        ``kwargs`` go to the constructor."""
        return persistence.load(cls, path, mmap=mmap, **kwargs)
