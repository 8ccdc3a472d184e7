"""vPDQ list entries → an index that answers "which known videos does this video match?".

The same design as the reference's ``VPDQIndex`` (facebook/ThreatExchange,
``python-threatexchange/threatexchange/extensions/vpdq/vpdq_index.py``), over hashwatch's exact
Hamming index instead of FAISS: every stored frame of quality >= 50 is one code in a
:class:`hashwatch.index.HammingIndex` (its id is the frame's entry id); a query video's unique
usable frames are searched within distance 31 at once; per known video (list, ``group_ref``)
the matched query frames and matched known frames are counted, giving the query and compared
match percentages (:func:`hashwatch.signals.vpdq.match_percentages` computes the same numbers
by brute force, and the tests hold the two to each other).

Memory: about 150 bytes per stored frame in Python structures beside the index's 40 bytes
(1M frames, i.e. ~280 hours of known video at 1 frame/s: ~0.2 GB).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hashwatch.index import HammingIndex
from hashwatch.signals.vpdq import (
    VPDQ_COMPARED_MATCH_PERCENT,
    VPDQ_DISTANCE,
    VPDQ_QUALITY,
    VPDQ_QUERY_MATCH_PERCENT,
    VpdqFeature,
    prepare,
)
from hashwatch.store import Store
from hashwatch.store.feed import Snapshot

__all__ = ["VpdqHit", "VpdqIndex"]

GroupKey = tuple[int, str]  # (list id, group_ref)


@dataclass(frozen=True)
class VpdqHit:
    """One known video a query matched: its first stored frame's entry id, the percentages and
    the best frame distance (+ the query frame's hash that gave it)."""

    entry_id: int
    query_match_percent: float
    compared_match_percent: float
    distance: int
    query_pdq: str
    via_views: bool = False  # some query frames matched only through a turned/trimmed view


class VpdqIndex:
    """Known videos' vPDQ frames, kept current from the store's change feed."""

    def __init__(self, store: Store, *, quality: int = VPDQ_QUALITY) -> None:
        self.store = store
        self.quality = quality
        self.position = ""  # change-feed position (hashwatch.store.feed)
        self.index = HammingIndex()
        self._frame: dict[int, tuple[GroupKey, str]] = {}  # entry id -> (group, hex)
        # group -> {hex: number of live entries with it}; first entry id per group
        self._groups: dict[GroupKey, dict[str, int]] = {}
        self._first: dict[GroupKey, int] = {}
        self.rebuild()

    def __len__(self) -> int:
        return len(self._frame)

    @property
    def videos(self) -> int:
        return len(self._groups)

    def rebuild(self) -> None:
        self.index = HammingIndex()
        self._frame.clear()
        self._groups.clear()
        self._first.clear()
        # the feed position first: whatever commits during the pass is replayed from it
        # (the feed gives entry states, so applying one twice is harmless)
        with self.store.snapshot() as snap:
            self.position = snap.position
        # one streaming pass over every live vPDQ frame (list state is applied at match time,
        # so a list switched off and on again needs no rebuild)
        batch: list[Any] = []
        for e in self.store.iter_entries(signal_type="vpdq", active_only=False):
            if e.removed_at is None:
                batch.append(e)
            if len(batch) >= 100_000:
                self._add_rows(batch)
                batch = []
        self._add_rows(batch)

    def _add_ids(self, ids: Sequence[int]) -> None:
        if ids:
            rows = self.store.get_entries(sorted(set(ids)), active_only=False)
            self._add_rows([rows[i] for i in ids if i in rows])

    def _add_rows(self, rows: Sequence[Any]) -> None:
        new_ids: list[int] = []
        new_hex: list[str] = []
        for e in rows:
            eid = e.id
            if e.removed_at is not None or eid in self._frame:
                continue
            try:
                f = VpdqFeature.parse(e.value)
            except ValueError:
                continue
            key = (e.list_id, e.group_ref or f"entry:{e.id}")
            self._first[key] = min(self._first.get(key, eid), eid)
            if f.quality < self.quality:
                self._groups.setdefault(key, {})
                continue
            counts = self._groups.setdefault(key, {})
            counts[f.pdq] = counts.get(f.pdq, 0) + 1
            self._frame[eid] = (key, f.pdq)
            new_ids.append(eid)
            new_hex.append(f.pdq)
        if new_ids:
            codes = np.frombuffer(bytes.fromhex("".join(new_hex)), np.uint8).reshape(-1, 32)
            self.index.add(np.asarray(new_ids, dtype=np.int64), codes)

    def _remove_id(self, eid: int) -> None:
        found = self._frame.pop(eid, None)
        if found is None:
            return
        key, hexv = found
        self.index.remove(np.array([eid], dtype=np.int64))
        counts = self._groups.get(key, {})
        counts[hexv] -= 1
        if counts[hexv] <= 0:
            del counts[hexv]
        if not counts:
            self._groups.pop(key, None)
            self._first.pop(key, None)

    def refresh(self, snap: Snapshot | None = None) -> int:
        """Apply vPDQ entries added, removed or restored since the last refresh (the
        commit-ordered feed, ``hashwatch.store.feed``: nothing committed is skipped), read
        in ``snap`` (a snapshot the caller opened) or a new one; returns how many change rows
        were read. One caller at a time."""
        if snap is None:
            with self.store.snapshot() as own:
                return self.refresh(own)
        applied = 0
        for batch in snap.changed(self.position, "vpdq"):
            adds: list[int] = []
            for eid, value in batch:
                if value is None:
                    self._remove_id(eid)
                else:
                    adds.append(eid)
            self._add_ids(adds)  # skips frames already held
            applied += len(batch)
        self.position = snap.position
        return applied

    def query(self, features: Iterable[VpdqFeature], *, distance: int = VPDQ_DISTANCE,
              query_percent: float = VPDQ_QUERY_MATCH_PERCENT,
              compared_percent: float = VPDQ_COMPARED_MATCH_PERCENT,
              views: Mapping[str, Sequence[str]] | None = None) -> list[VpdqHit]:
        """Known videos with query match % >= ``query_percent`` and compared match % >=
        ``compared_percent`` (the reference's defaults: 80 and 0), best first.

        ``views``: optional extra hashes per query frame (frame hex → view hexes: the frame
        turned, flipped, or with letterbox / pillarbox bars trimmed). A query frame counts as
        matched when it or one of its views is within ``distance`` of a known frame; without
        views the numbers are exactly the reference's."""
        q = prepare(features, self.quality)
        if not q or not self._frame:
            return []
        rows = list(q)
        owner = list(range(len(q)))
        for qi, hexv in enumerate(q):
            for v in (views or {}).get(hexv, ()):
                rows.append(v)
                owner.append(qi)
        codes = np.frombuffer(bytes.fromhex("".join(rows)), np.uint8).reshape(-1, 32)
        found = self.index.search_many(codes, distance)
        q_matched: dict[GroupKey, set[int]] = {}
        plain: dict[GroupKey, set[int]] = {}
        c_matched: dict[GroupKey, set[str]] = {}
        best: dict[GroupKey, tuple[int, str]] = {}
        for row, hits in enumerate(found):
            qi = owner[row]
            for eid, d in hits:
                fr = self._frame.get(int(eid))
                if fr is None:
                    continue
                key, hexv = fr
                q_matched.setdefault(key, set()).add(qi)
                if row < len(q):
                    plain.setdefault(key, set()).add(qi)
                c_matched.setdefault(key, set()).add(hexv)
                if key not in best or d < best[key][0]:
                    best[key] = (int(d), q[qi])
        out = []
        for key, qs in q_matched.items():
            n_known = len(self._groups.get(key, ()))
            if not n_known:
                continue
            qp = 100.0 * len(qs) / len(q)
            cp = 100.0 * len(c_matched[key]) / n_known
            if qp >= query_percent and cp >= compared_percent:
                d, qhex = best[key]
                out.append(VpdqHit(self._first[key], round(qp, 2), round(cp, 2), d, qhex,
                                   bool(qs - plain.get(key, set()))))
        return sorted(out, key=lambda h: (-h.query_match_percent, -h.compared_match_percent,
                                          h.distance, h.entry_id))
