"""The keypoint tier follows the store's commit-ordered change feed, as the PDQ index does.

A :class:`KeypointFeed` owns one :class:`~hashwatch.robust.keypoint_index.KeypointIndex`
and the feed position it is current at. The index holds exactly the *keypoint-live* sets
of the store (``hashwatch.store.feed``: a ``local_features`` row whose list is not deleted
and whose group has a live entry of any signal type); every change that can alter that
state writes a change row in the same transaction (a new row: op "features"; an entry of the
group added, removed or restored; the list deleted), so a catch-up reads exactly the rows
to re-check from the feed window after its position, in one snapshot, and sets each to its
state there. No read follows ``local_features`` by row id: on PostgreSQL ids are handed out
at insert time and become visible at commit time, so two overlapping ``lists add`` runs made
a reader of ``id > last`` skip a known image's keypoints for good (issue 12).

Level-triggered and idempotent: a row is added only when not held and removed only when
held (a bitmap over row ids answers "held" in O(1)), so a window replayed twice changes
nothing. Reconciliation (:func:`hashwatch.reconcile.reconcile_keypoints`) checks the result.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from hashwatch.robust.keypoint_index import FORMAT, KeypointIndex
from hashwatch.store import Store
from hashwatch.store.feed import FeedError, Snapshot

log = logging.getLogger(__name__)

_ADD_BATCH = 5000


class KeypointFeed:
    """A keypoint index kept equal to the store's keypoint-live sets.

    ``kp``: the index; ``position``: the feed position it is current at ("" before it is
    built); ``dirty``: changed since loaded or saved. ``lock``: one catch-up at a time
    (searches need no lock: the index allows one writer beside any number of readers).
    """

    def __init__(self, store: Store, kp: KeypointIndex, position: str = "") -> None:
        self.store = store
        self.kp = kp
        self.position = position
        self.dirty = False
        self.replace = False  # the saved folder is unusable: the next save writes over it
        self.lock = threading.Lock()
        self._held = np.zeros(0, bool)  # row id -> holds a live set
        ids = kp.live_image_ids()
        if len(ids):
            self._grow(int(ids.max()))
            self._held[ids] = True

    # -- opening ------------------------------------------------------------------------
    @classmethod
    def open(cls, store: Store, folder: Path | None, *, mmap: bool,
             vocab: Callable[[], Any]) -> KeypointFeed:
        """Load the index saved in ``folder`` and catch it up, or build it (vocabulary from
        ``vocab()``) from one
        snapshot when there is none, or it belongs to another database or cannot be read.
        An index saved before the feed followed keypoints (meta ``last_row``) is caught up
        from that row once; reconciliation finds any set the old reader had skipped. An index
        whose records are of an earlier format, or whose postings carry signatures of another
        scheme than ``vocab()``'s (the global bits of vocabulary v1), is rebuilt once from the
        store's keypoints, with a warning."""
        if folder is not None and folder.joinpath("manifest.json").exists():
            try:
                kp = KeypointIndex.load(folder, mmap=mmap)
                if kp.record_format != FORMAT:  # records of an earlier format: rebuild
                    raise ValueError(f"verification records of format {kp.record_format}; "
                                     f"this version writes format {FORMAT}")
                want = vocab().sig_scheme
                if kp.vocab.sig_scheme != want:  # postings of the global signatures: rebuild
                    raise ValueError(f"postings of signature scheme {kp.vocab.sig_scheme!r}; "
                                     f"this version writes {want!r}")
                meta = kp.meta
                with store.snapshot() as snap:
                    if meta.get("feed_id") == store.feed_id() and store.position_usable(
                            str(meta.get("position", ""))):
                        f = cls(store, kp, str(meta["position"]))
                        f.catch_up(snap)
                        return f
                    if "last_row" in meta and "feed_id" not in meta:
                        f = cls(store, kp)
                        f._legacy_catch_up(snap, int(meta["last_row"]))
                        return f
                log.info("keypoint index at %s is from another database; rebuilding", folder)
            except (OSError, ValueError, KeyError, FeedError) as exc:
                log.warning("keypoint index at %s unusable (%s); rebuilding", folder, exc)
            f = cls(store, KeypointIndex(vocab()))
            f.replace = True
        else:
            f = cls(store, KeypointIndex(vocab()))
        with store.snapshot() as snap:
            f.build(snap)
        return f

    def build(self, snap: Snapshot) -> int:
        """Add every keypoint-live set of ``snap`` (to an empty index); returns how many."""
        from hashwatch import robust

        n = 0
        for part in snap.keypoint_live(batch=_ADD_BATCH):
            n += self._add([(i, robust.decode_local(d)) for i, _lst, d in part if d])
        self.position = snap.position
        self.dirty = True
        return n

    def _legacy_catch_up(self, snap: Snapshot, last_row: int) -> None:
        live = [i for part in snap.keypoint_live(data=False) for i, _l, _d in part
                if i > last_row]
        self._set_states(snap, [(i, True) for i in live])
        self.position = snap.position
        self.dirty = True

    # -- following the feed -------------------------------------------------------------
    def catch_up(self, snap: Snapshot) -> int:
        """Bring the index from its position to ``snap``'s (a snapshot taken after it);
        returns the sets looked at. The caller holds ``lock`` or owns the feed alone."""
        looked = 0
        for part in snap.keypoint_changes(self.position):
            self._set_states(snap, [(i, live) for i, _lst, live in part])
            looked += len(part)
        if snap.position != self.position:
            self.position = snap.position
            self.dirty = self.dirty or looked > 0
        return looked

    def set_states(self, snap: Snapshot, states: Iterable[tuple[int, bool]]) -> tuple[int, int]:
        """Set rows to the given keypoint-live states (data read from ``snap``); returns
        (added, removed). For reconciliation's repairs."""
        return self._set_states(snap, list(states))

    def _set_states(self, snap: Snapshot, states: list[tuple[int, bool]]) -> tuple[int, int]:
        from hashwatch import robust

        want: dict[int, bool] = dict(states)  # the last state of a row wins (all equal)
        add = [i for i, live in want.items() if live and not self.holds(i)]
        drop = [i for i, live in want.items() if not live and self.holds(i)]
        added = 0
        for start in range(0, len(add), _ADD_BATCH):
            data = snap.keypoint_data(add[start : start + _ADD_BATCH])
            added += self._add([(i, robust.decode_local(d)) for i, d in data.items()])
        if drop:
            self.kp.remove(drop)
            self._held[np.asarray(drop, np.int64)] = False
            self.dirty = True
        return added, len(drop)

    def _add(self, items: list[tuple[int, Any]]) -> int:
        if not items:
            return 0
        self.kp.add_many(items)
        ids = np.fromiter((i for i, _f in items), np.int64, len(items))
        self._grow(int(ids.max()))
        self._held[ids] = True
        self.dirty = True
        return len(items)

    def _grow(self, top: int) -> None:
        if top >= len(self._held):
            grown = np.zeros(max(top + 1, 2 * len(self._held), 1024), bool)
            grown[: len(self._held)] = self._held
            self._held = grown

    # -- reading ------------------------------------------------------------------------
    def holds(self, row_id: int) -> bool:
        """Whether the index holds a live set of this local-feature row."""
        return 0 <= row_id < len(self._held) and bool(self._held[row_id])

    def held_ids(self) -> np.ndarray:
        """Row ids of the sets held, ascending (int64)."""
        return np.flatnonzero(self._held).astype(np.int64)

    def save(self, folder: Path, feed_id: str) -> bool:
        """Save the index with its feed position; False when another process saved the
        folder first (this one keeps its changes in memory). Raises OSError."""
        if not self.dirty:
            return True
        if self.kp.save(folder, meta={"feed_id": feed_id, "position": self.position},
                        replace=self.replace):
            self.dirty = self.replace = False
            return True
        return False
