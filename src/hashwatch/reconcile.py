"""Reconciliation: does a matcher's PDQ index hold exactly the store's live PDQ entries, and
its keypoint tier exactly the store's keypoint-live sets?

The change feed keeps an index current (``hashwatch.store.feed``); this module checks the
result independently, per list, and repairs any difference without a restart:

1. **Survey** (no lock; one store snapshot): stream the live PDQ entries ``(id, list,
   value)``; for each, probe the index for that id and compare codes. Per list, the store's
   count and digest, and the index's (entries it holds identically). Entries are also
   counted per id range (*bucket*, 2**16 ids): a bucket whose store entries are not all held
   identically, or where the index holds more entries than matched, is *suspect*.
2. **Confirm and repair** (only suspect buckets, under the matcher's lock, in one new
   snapshot to which the index is first brought by the feed): compare the bucket's store
   entries with the index's entries in that id range exactly. Only these confirmed
   differences are reported and repaired; a suspect bucket that merely raced a concurrent
   write (the index moves on while the survey reads) confirms nothing.

The keypoint tier (when loaded) is checked the same way: per list, the count and digest of
the keypoint-live sets (``hashwatch.store.feed``) against the sets the index holds, then
each difference confirmed in a new snapshot to which the tier is first brought, and
repaired. A set is named by its row id (rows never change), so its digest mixes the row id
and the list id.

Digest: the sum modulo 2**64 of a 64-bit mix of each entry's (id, code), so it does not
depend on order. The mix is SplitMix64's finaliser (Steele, Lea & Flood, "Fast splittable
pseudorandom number generators", OOPSLA 2014), applied to the id and then folded with each
of the code's four 64-bit words. Digests tell whether two sides agree; they are not secrets.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from hashwatch.matcher import Matcher

log = logging.getLogger(__name__)

BUCKET_BITS = 16
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = z + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def entry_digests(ids: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Per-entry 64-bit digests of ``ids`` (n,) int64 and ``codes`` (n, 32) uint8."""
    words = np.ascontiguousarray(codes).view("<u8").reshape(-1, 4)
    h = _mix(ids.astype(np.uint64))
    for k in range(4):
        h = _mix(h ^ words[:, k])
    return h


def _sum64(h: np.ndarray) -> int:
    return int(h.sum(dtype=np.uint64)) if h.size else 0


@dataclass
class ListCheck:
    list: str
    store_count: int = 0
    store_digest: int = 0
    index_count: int = 0
    index_digest: int = 0

    def add_store(self, h: np.ndarray) -> None:
        self.store_count += int(h.size)
        self.store_digest = (self.store_digest + _sum64(h)) % 2**64

    def add_index(self, h: np.ndarray) -> None:
        self.index_count += int(h.size)
        self.index_digest = (self.index_digest + _sum64(h)) % 2**64

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["store_digest"] = f"{self.store_digest:016x}"
        d["index_digest"] = f"{self.index_digest:016x}"
        d["in_sync"] = (self.store_count, self.store_digest) == (self.index_count,
                                                                 self.index_digest)
        return d


@dataclass
class Report:
    """One reconciliation. ``missing``/``extra``/``wrong``: confirmed differences (store
    entries the index lacked, index entries the store does not hold live, entries held
    with another code); ``repaired``: whether they were fixed in the index."""

    at: float
    position: str = ""
    seconds: float = 0.0
    lists: list[ListCheck] = field(default_factory=list)
    suspect_buckets: int = 0
    missing: int = 0
    extra: int = 0
    wrong: int = 0
    repaired: bool = False
    # the keypoint tier (None: not loaded in this matcher, nothing to check)
    keypoints: list[ListCheck] | None = None
    kp_missing: int = 0
    kp_extra: int = 0

    @property
    def differences(self) -> int:
        return self.missing + self.extra + self.wrong + self.kp_missing + self.kp_extra

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "position": self.position, "seconds": round(self.seconds, 3),
                "differences": self.differences, "missing": self.missing,
                "extra": self.extra, "wrong": self.wrong, "repaired": self.repaired,
                "suspect_buckets": self.suspect_buckets,
                "lists": [c.as_dict() for c in self.lists],
                "keypoints": None if self.keypoints is None else {
                    "missing": self.kp_missing, "extra": self.kp_extra,
                    "lists": [c.as_dict() for c in self.keypoints]}}


def _grow_add(acc: np.ndarray, counts: np.ndarray) -> np.ndarray:
    if counts.size > acc.size:
        acc = np.concatenate([acc, np.zeros(counts.size - acc.size, np.int64)])
    acc[: counts.size] += counts
    return acc


# Rows per batch of the survey. Small on purpose: each row is a few Python objects (~400
# bytes with the driver's row), and a batch of 100,000 (~40 MB of them at once) left a
# worker ~2 MB bigger after every reconciliation (most likely CPython's object arenas pinned
# by objects other threads allocated meanwhile: BENCHMARKS.md, soak, worker RSS); 5,000
# left it flat.
BATCH = 5_000


def reconcile(matcher: Matcher, *, repair: bool = True, batch: int = BATCH) -> Report:
    """Check ``matcher.index`` and its keypoint tier (when loaded) against the store (see the
    module docstring); repair the confirmed differences when ``repair``. Logs a warning when
    any is found. Cost: one pass over the live PDQ entries (streamed, ``batch`` rows at a
    time) plus one over the index's ids, and one over the keypoint-live set ids; the matcher
    keeps serving and refreshing meanwhile."""
    from hashwatch.matcher import hex_to_codes

    t0 = time.perf_counter()
    store, index = matcher.store, matcher.index
    rep = Report(at=time.time())
    checks: dict[int, ListCheck] = {}
    matched = np.zeros(0, np.int64)
    suspect: set[int] = set()
    with store.snapshot() as snap:
        names = snap.list_names()
        for rows in snap.live("pdq", batch=batch, variants=matcher.hash_views):
            ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
            lists = np.fromiter((r[1] for r in rows), np.int64, len(rows))
            codes = hex_to_codes([r[2] for r in rows])
            found, held = index.lookup(ids)
            same = found & (held == codes).all(axis=1)
            h = entry_digests(ids, codes)
            for lst in np.unique(lists).tolist():
                sel = lists == lst
                c = checks.setdefault(lst, ListCheck(names.get(lst, f"#{lst}")))
                c.add_store(h[sel])
                c.add_index(h[sel & same])
            buckets = ids >> BUCKET_BITS
            matched = _grow_add(matched, np.bincount(buckets[same]))
            suspect.update(np.unique(buckets[~same]).tolist())
    held_per_bucket = np.zeros(0, np.int64)
    for part in index.iter_ids():
        held_per_bucket = _grow_add(held_per_bucket, np.bincount(part >> BUCKET_BITS))
    n = max(matched.size, held_per_bucket.size)
    matched = np.pad(matched, (0, n - matched.size))
    held_per_bucket = np.pad(held_per_bucket, (0, n - held_per_bucket.size))
    suspect.update(np.nonzero(held_per_bucket != matched)[0].tolist())
    rep.suspect_buckets = len(suspect)
    if suspect:
        _confirm(matcher, sorted(suspect), checks, rep, repair)
    rep.lists = sorted(checks.values(), key=lambda c: c.list)
    rep.position = rep.position or matcher.position
    if matcher.keypoint_feed is not None:
        _reconcile_keypoints(matcher, rep, repair, batch)
    rep.seconds = time.perf_counter() - t0
    if rep.missing + rep.extra + rep.wrong:
        log.warning("index differed from the store: %d missing, %d extra, %d wrong code%s",
                    rep.missing, rep.extra, rep.wrong, " (repaired)" if rep.repaired else "")
    if rep.kp_missing + rep.kp_extra:
        log.warning("keypoint tier differed from the store: %d sets missing, %d extra%s",
                    rep.kp_missing, rep.kp_extra, " (repaired)" if repair else "")
    return rep


def _set_digests(ids: np.ndarray, lists: np.ndarray) -> np.ndarray:
    return _mix(_mix(ids.astype(np.uint64)) ^ lists.astype(np.uint64))


def _reconcile_keypoints(matcher: Matcher, rep: Report, repair: bool, batch: int) -> None:
    kpf = matcher.keypoint_feed
    assert kpf is not None
    checks: dict[int, ListCheck] = {}
    id_parts: list[np.ndarray] = []
    list_parts: list[np.ndarray] = []
    with matcher.store.snapshot() as snap:  # survey: no lock, the tier keeps following
        names = snap.list_names()
        for rows in snap.keypoint_live(data=False, batch=batch):
            id_parts.append(np.fromiter((r[0] for r in rows), np.int64, len(rows)))
            list_parts.append(np.fromiter((r[1] for r in rows), np.int64, len(rows)))
    ids = np.concatenate(id_parts) if id_parts else np.zeros(0, np.int64)
    lists = np.concatenate(list_parts) if list_parts else np.zeros(0, np.int64)
    held_ids = kpf.held_ids()
    held = np.isin(ids, held_ids)
    h = _set_digests(ids, lists)
    for lst in np.unique(lists).tolist():
        sel = lists == lst
        c = checks.setdefault(lst, ListCheck(names.get(lst, f"#{lst}")))
        c.add_store(h[sel])
        c.add_index(h[sel & held])
    suspect = np.union1d(ids[~held], np.setdiff1d(held_ids, ids))
    if len(suspect):
        with kpf.lock, matcher.store.snapshot() as snap:
            kpf.catch_up(snap)  # the tier now reflects exactly this snapshot
            states = snap.keypoint_states(suspect.tolist())
            names = snap.list_names()
            fixes: list[tuple[int, bool]] = []
            for i in suspect.tolist():
                lst, live = states.get(i, (-1, False))
                held_now = kpf.holds(i)
                if live and not held_now:
                    rep.kp_missing += 1
                    fixes.append((i, True))
                elif held_now and not live:
                    rep.kp_extra += 1
                    fixes.append((i, False))
                    c = checks.setdefault(lst, ListCheck(names.get(lst, "?")))
                    c.add_index(_set_digests(np.array([i]), np.array([max(lst, 0)])))
            if repair and fixes:
                kpf.set_states(snap, fixes)
    rep.keypoints = sorted(checks.values(), key=lambda c: c.list)


def _confirm(matcher: Matcher, buckets: list[int], checks: dict[int, ListCheck], rep: Report,
             repair: bool) -> None:
    index = matcher.index
    with matcher._lock, matcher.store.snapshot() as snap:
        matcher.catch_up(snap)  # the index now reflects exactly this snapshot
        rep.position = snap.position
        names = snap.list_names()
        fixes: list[tuple[int, str | None]] = []
        extra_ids: list[int] = []
        for b in buckets:
            lo, hi = b << BUCKET_BITS, (b + 1) << BUCKET_BITS
            store_rows = {r[0]: r[2] for part in snap.live("pdq", lo=lo, hi=hi,
                                                             variants=matcher.hash_views)
                          for r in part}
            ids, codes = index.range(lo, hi)
            held = {int(i): bytes(c).hex() for i, c in zip(ids, codes, strict=True)}
            for eid, value in store_rows.items():
                have = held.get(eid)
                if have is None:
                    rep.missing += 1
                    fixes.append((eid, value))
                elif have != value:
                    rep.wrong += 1
                    fixes.append((eid, value))
            for eid in held.keys() - store_rows.keys():
                rep.extra += 1
                extra_ids.append(eid)
                fixes.append((eid, None))
        # the survey's per-list index figures counted only entries held identically; add the
        # extras to their lists (an id the store never had goes under "?")
        owner = snap.list_of(extra_ids) if extra_ids else {}
        if extra_ids:
            codes = index.lookup(np.array(extra_ids, np.int64))[1]
            h = entry_digests(np.array(extra_ids, np.int64), codes)
            for k, eid in enumerate(extra_ids):
                lst = owner.get(eid, -1)
                c = checks.setdefault(lst, ListCheck(names.get(lst, "?")))
                c.add_index(h[k : k + 1])
        if repair and fixes:
            matcher.apply_states(fixes)
            rep.repaired = True
