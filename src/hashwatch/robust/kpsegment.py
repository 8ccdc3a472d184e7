"""The keypoint index's postings: a segment (a range of slots' postings in CSR layout by
visual word, built, merged and written as raw arrays) and the growable arrays behind them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# -- segments -------------------------------------------------------------------------------


@dataclass(eq=False)
class _Segment:
    """Postings of a range of slots in CSR layout: list of word w is rows offsets[w]:offsets[w+1]
    of ``sigs`` and ``ids``."""

    offsets: np.ndarray  # uint64 (n_words + 1,)
    sigs: np.ndarray  # uint16 (n,)
    ids: np.ndarray  # uint32 (n,)
    slot_lo: int
    slot_hi: int
    name: str | None = None  # file stem once saved

    @property
    def n(self) -> int:
        return int(self.sigs.shape[0])

    def df(self) -> np.ndarray:
        return np.diff(self.offsets).astype(np.int64)

    @classmethod
    def build(cls, n_words: int, words: np.ndarray, sigs: np.ndarray, ids: np.ndarray,
              slot_lo: int, slot_hi: int) -> _Segment:
        order = np.argsort(words, kind="stable")
        counts = np.bincount(words, minlength=n_words)
        off = np.zeros(n_words + 1, np.uint64)
        np.cumsum(counts, out=off[1:])
        return cls(off, np.ascontiguousarray(sigs[order], np.uint16),
                   np.ascontiguousarray(ids[order], np.uint32), slot_lo, slot_hi)

    @classmethod
    def merge(cls, segs: Sequence[_Segment]) -> _Segment:
        """One segment holding the postings of ``segs`` (in slot order within each list)."""
        n_words = len(segs[0].offsets) - 1
        words = np.concatenate([np.repeat(np.arange(n_words), s.df()) for s in segs])
        sigs = np.concatenate([s.sigs for s in segs])
        ids = np.concatenate([s.ids for s in segs])
        return cls.build(n_words, words, sigs, ids, min(s.slot_lo for s in segs),
                         max(s.slot_hi for s in segs))


class _Grow:
    """An append-only numpy array with spare capacity (amortised O(1) appends)."""

    def __init__(self, dtype: type, data: np.ndarray | None = None) -> None:
        self._a = np.zeros(1024, dtype) if data is None else np.array(data, dtype)
        self.n = 0 if data is None else len(data)

    def append(self, values: np.ndarray) -> None:
        need = self.n + len(values)
        if need > len(self._a):
            a = np.zeros(max(need, 2 * len(self._a)), self._a.dtype)
            a[: self.n] = self._a[: self.n]
            self._a = a
        self._a[self.n:need] = values
        self.n = need

    @property
    def view(self) -> np.ndarray:
        return self._a[: self.n]


def _write_array(path: Path, a: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, a, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:  # a full disk: leave no partial file behind
        tmp.unlink(missing_ok=True)
        raise
