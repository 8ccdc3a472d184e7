"""Match file hashes against the store: exact crypto hashes first, then PDQ.

The PDQ index lives beside the database (``<db>.pdq.idx``) and is kept current by
replaying the store's change feed (``hashwatch.store.feed``: commit-ordered, so no committed
change is skipped), so adding or removing entries never rebuilds it.
List state (enabled, deleted) is applied when results are read back from the store.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from hashwatch import robust
from hashwatch.index import HammingIndex
from hashwatch.keypoint_feed import KeypointFeed
from hashwatch.matches import (
    PDQ_MIN_QUALITY,
    HashedLike,
    Match,
    MatchResult,
    keypoint_route,
    match_from_entry,
    pdq_matchability,
)
from hashwatch.robust.keypoint_index import KeypointIndex
from hashwatch.robust.vocab import default_vocabulary
from hashwatch.signals.vpdq import VPDQ_COMPARED_MATCH_PERCENT, VPDQ_QUERY_MATCH_PERCENT
from hashwatch.store import EntryRow, Store
from hashwatch.store.feed import FeedError, Snapshot, page_limit

log = logging.getLogger(__name__)

CRYPTO_SIGNALS = ("sha256", "sha1", "md5")
PDQ_THRESHOLD = 31
# change rows read under the matcher's lock per page of the feed (see Matcher.refresh)
FEED_PAGE = 50_000
# Known images nominated by the keypoint index and verified (geometry + scene check) per query
# (see BENCHMARKS.md, "Scale study", for the choice).
KEYPOINT_CANDIDATES = 8
def hex_to_codes(values: Sequence[str]) -> np.ndarray:
    """64-hex PDQ strings → (n, 32) uint8, in one C-level conversion."""
    if not values:
        return np.zeros((0, 32), dtype=np.uint8)
    return np.frombuffer(bytes.fromhex("".join(values)), dtype=np.uint8).reshape(-1, 32)


def _known_class(variant: str) -> str:
    """Route class of a stored PDQ entry. Views hashwatch does not know (a partner's own
    variant names) are compared as plain full-image hashes."""
    if variant in ("", "full"):
        return "full"
    if variant == "trim" or variant.startswith("crop"):
        return robust.known_class(variant)
    return "full"


def check_views(views: Collection[str] | None) -> frozenset[str] | None:
    """View names -> the stored variant names (``""`` for the full image and for entries
    without a view, which every index holds), or None for every view."""
    if views is None:
        return None
    if isinstance(views, str):  # "full,trim" would be read letter by letter
        raise ValueError(f"hash views must be a list of names, not the string {views!r}")
    views = list(views)  # read once: an iterator would be empty at the second look
    if not views:
        raise ValueError("no hash view named (None: every view)")
    unknown = sorted(set(views) - set(robust.KNOWN_VIEWS))
    if unknown:
        raise ValueError(f"unknown hash view(s) {', '.join(unknown)}: choose from "
                         f"{', '.join(robust.KNOWN_VIEWS)}")
    return frozenset({""} | {v for v in views if v != "full"})


def index_path_for(store: Store, views: Collection[str] | None = None) -> Path | None:
    """The default saved PDQ index of a SQLite database: ``<db>.pdq.idx`` beside it, or
    ``<db>.pdq-<views>.idx`` for an index holding only ``views`` (so a process holding fewer
    views never replaces, and forces a rebuild of, the file another process maps); None for
    other databases (no default). Raises ValueError for an unknown view name."""
    url = store.engine.url
    if url.get_backend_name() != "sqlite" or not url.database:
        return None
    db = Path(url.database)
    held = check_views(views)
    tag = "" if held is None else "-" + "+".join(sorted("full" if v == "" else v for v in held))
    return db.with_suffix(db.suffix + f".pdq{tag}.idx")


def keypoint_path_for(index_path: Path) -> Path:
    """The keypoint index folder that goes with a saved PDQ index: ``<index_path>.kp``. The
    keypoint tier does not depend on the hash views, so a default index made for some views
    (``<db>.pdq-<views>.idx``) shares the folder of the full one (``<db>.pdq.idx.kp``)."""
    m = re.fullmatch(r"(.*\.pdq)-[a-z0-9+]+(\.idx)", index_path.name)
    name = m.group(1) + m.group(2) if m else index_path.name
    return index_path.with_name(name + ".kp")


class Matcher:
    """Exact-then-perceptual matching over every active list (or the named ones)."""

    def __init__(
        self,
        store: Store,
        *,
        index_path: str | os.PathLike[str] | None = None,
        pdq_threshold: int = PDQ_THRESHOLD,
        min_quality: int = PDQ_MIN_QUALITY,
        persist: bool = True,
        mmap: bool = False,
        vpdq_query_percent: float = VPDQ_QUERY_MATCH_PERCENT,
        vpdq_compared_percent: float = VPDQ_COMPARED_MATCH_PERCENT,
        writable: bool = True,
        hash_views: Collection[str] | None = None,
    ) -> None:
        """``mmap``: map a saved index instead of reading it (instant start; processes serving
        the same index share its pages, see BENCHMARKS). ``vpdq_*_percent``: a video matches a
        known vPDQ video when both frame-match percentages reach these (the reference's 80/0,
        :mod:`hashwatch.signals.vpdq`). ``writable=False``: use the saved indexes (PDQ and
        keypoint) but never write them, keeping changes made since they were saved in this
        process only (worker processes: one process, the one that prepared them, owns the
        files). ``hash_views``: the known images' views the PDQ index holds (names of
        :data:`hashwatch.robust.views.KNOWN_VIEWS`; None: every view). Fewer views, less
        memory (~111 B per entry, about 2.2 GB per view at 2*10^7 known images) for less
        recall on the edits those views cover (BENCHMARKS.md, "Which views the hash tier
        holds"); entries with no view name (plain list imports) are always held. Raises
        ValueError for an unknown view name."""
        self.store = store
        self.hash_views = check_views(hash_views)
        self.vpdq_query_percent = vpdq_query_percent
        self.vpdq_compared_percent = vpdq_compared_percent
        self._vpdq: Any = None
        self.mmap = mmap
        self.writable = writable
        self.pdq_threshold = pdq_threshold
        self.min_quality = min_quality
        self.index_path = (Path(index_path) if index_path
                           else index_path_for(store, self.views_held()))
        self.persist = persist and self.index_path is not None
        self.position = ""  # change-feed position the index is current at
        # windows of the feed read in part (since, until, cursor): refresh(complete=False)
        self._backlog: list[tuple[str, str, tuple[int, int]]] = []
        # one feed replay at a time (a poller and a request may both refresh)
        self._lock = threading.RLock()
        # keypoint tier: loaded (or built) on first use, then following the change feed
        # like the PDQ index (hashwatch.keypoint_feed)
        self._kpf: KeypointFeed | None = None
        self._kp_open_lock = threading.Lock()
        self._vpdq_lock = threading.Lock()  # the vPDQ index has one writer at a time
        # a failed save (disk full, folder gone): the indexes keep serving from memory and
        # the next save() retries; shown in the service's readiness and metrics
        self.save_error: str | None = None
        self.save_failures = 0
        self.index = self._load_or_build()

    # -- index lifecycle ------------------------------------------------------------
    def _meta_path(self) -> Path:
        assert self.index_path is not None
        return self.index_path.with_suffix(self.index_path.suffix + ".json")

    def _load_or_build(self) -> HammingIndex:
        if self.persist and self.index_path and self.index_path.exists():
            try:
                meta = json.loads(self._meta_path().read_text())
                if (meta.get("feed_id") == self.store.feed_id()
                        and meta.get("hash_views") == self.views_held()
                        and self.store.position_usable(meta["position"])):
                    self.index = HammingIndex.load(self.index_path, mmap=self.mmap)
                    self.position = meta["position"]
                    if self.refresh():
                        self.save()
                    return self.index
                log.info("PDQ index at %s is from another database, feed format or set of "
                         "views; rebuilding", self.index_path)
            except (OSError, ValueError, KeyError, FeedError) as exc:
                log.warning("PDQ index at %s unusable (%s); rebuilding", self.index_path, exc)
        return self.rebuild()

    def views_held(self) -> list[str] | None:
        """The known images' views the PDQ index holds, by name ("full" for the full image),
        or None for every view."""
        if self.hash_views is None:
            return None
        return sorted("full" if v == "" else v for v in self.hash_views)

    def rebuild(self) -> HammingIndex:
        """Build the index from the store's live PDQ entries, read in one snapshot whose
        feed position becomes the index's: later changes are replayed from exactly there."""
        with self._lock:
            ids_parts: list[np.ndarray] = []
            code_parts: list[np.ndarray] = []
            with self.store.snapshot() as snap:
                for batch in snap.live("pdq", variants=self.hash_views):
                    ids_parts.append(np.fromiter((r[0] for r in batch), np.int64, len(batch)))
                    code_parts.append(hex_to_codes([r[2] for r in batch]))
                position = snap.position
            index = HammingIndex()
            if ids_parts:
                ids = np.concatenate(ids_parts)
                codes = np.concatenate(code_parts)
                order = np.argsort(ids, kind="stable")
                # one add builds one segment; adding per batch would set off merge after merge
                index.add(ids[order], codes[order], copy=False)
            self.index, self.position = index, position
            self._backlog = []
            self.save()
            return index

    def refresh(self, *, complete: bool = True, tiers: bool = True,
                also: Callable[[Snapshot], None] | None = None) -> int:
        """Apply the entries added, removed or restored since the index's feed position
        (``hashwatch.store.feed``: commit-ordered, nothing skipped), and bring the keypoint
        and vPDQ tiers (when loaded, and ``tiers``) to the same snapshot. Returns how many
        PDQ change rows were applied.

        ``complete=False`` (the service's workers) bounds the work done under the lock: the
        new window's first page (``feed.FIRST_PAGE`` change rows) and, when that was full,
        one of ``FEED_PAGE`` rows, and one page of an older window
        still pending. The rest of a big window (a bulk import of millions) waits in
        :attr:`feed_backlog` for the next calls, so changes committed meanwhile are applied
        at once and no call holds the lock for long. ``also(snapshot)``: more reads in the
        same snapshot once the PDQ index is current (the service's allow-list: one
        transaction per refresh instead of two)."""
        # the lock is taken before the snapshot, so positions only move forward; it is let
        # go before the other tiers catch up, so PDQ freshness never waits on them
        held = self._lock.acquire()
        try:
            with self.store.snapshot() as snap:
                try:
                    applied = self.catch_up(snap, complete=complete)
                finally:
                    self._lock.release()
                    held = False
                if also is not None:
                    also(snap)
                if tiers:
                    self._catch_up_tiers(snap)
                return applied
        finally:
            if held:
                self._lock.release()

    def refresh_tiers(self) -> None:
        """Bring the keypoint and vPDQ tiers (when loaded) to a new snapshot (the service
        runs this in its own thread, so a big window there never delays the PDQ index)."""
        if self._kpf is None and self._vpdq is None:
            return
        with self.store.snapshot() as snap:
            self._catch_up_tiers(snap)

    def _catch_up_tiers(self, snap: Snapshot) -> None:
        # a thread already catching a tier up brings it past this snapshot
        kpf = self._kpf
        if kpf is not None and kpf.lock.acquire(blocking=False):
            try:
                kpf.catch_up(snap)
            finally:
                kpf.lock.release()
        if self._vpdq is not None and self._vpdq_lock.acquire(blocking=False):
            try:
                self._vpdq.refresh(snap)
            finally:
                self._vpdq_lock.release()

    @property
    def feed_backlog(self) -> int:
        """Change-feed windows read only in part (see :meth:`refresh`); 0 when current."""
        return len(self._backlog)

    def catch_up(self, snap: Snapshot, *, complete: bool = True) -> int:
        """Bring the PDQ index to the feed position of ``snap``, a snapshot opened after the
        index's current position was taken (see :meth:`refresh`), page by page."""
        with self._lock:
            applied = 0
            cursor = None
            while True:  # the new window (a small first page: see feed.page_limit)
                lim = page_limit(cursor, FEED_PAGE)
                page, nxt, n = snap.changed_page(self.position, "pdq", after=cursor, limit=lim,
                                                 variants=self.hash_views)
                self.apply_states(page)
                applied += len(page)
                if n < lim:
                    break
                cursor = nxt
                if not complete and lim == FEED_PAGE:  # the rest later, read in later
                    # snapshots up to this one (after a small first page: one full page first)
                    self._backlog.append((self.position, snap.position, cursor))
                    break
            self.position = snap.position
            while self._backlog:  # windows read in part before
                since, until, cursor = self._backlog[0]
                page, nxt, n = snap.changed_page(since, "pdq", until=until, after=cursor,
                                                 limit=FEED_PAGE, variants=self.hash_views)
                self.apply_states(page)
                applied += len(page)
                if n < FEED_PAGE:
                    self._backlog.pop(0)
                else:
                    self._backlog[0] = (since, until, nxt)
                if not complete:
                    break
            return applied

    def apply_states(self, states: Sequence[tuple[int, str | None]]) -> None:
        """Set entries to their store state: (entry id, PDQ hex) is live, (id, None) is
        removed. Idempotent; an id already held gets its code replaced."""
        live: dict[int, str] = {}
        dead: list[int] = []
        for entry_id, value in states:
            if value is None:
                dead.append(entry_id)
                live.pop(entry_id, None)
            else:
                live[entry_id] = value
        if dead:
            self.index.remove(np.array(dead, dtype=np.int64))
        if live:
            ids = np.fromiter(live.keys(), dtype=np.int64, count=len(live))
            self.index.add(ids, hex_to_codes(list(live.values())))

    def save(self) -> bool:
        """Write the PDQ index, its feed position and the keypoint tier (when loaded and
        changed) beside the database. Returns False when writing failed (OSError: a full
        disk, a folder gone): the indexes keep serving from memory, the reason is kept in
        ``save_error`` and logged, and the next call tries again."""
        if not self.persist or self.index_path is None or not self.writable:
            return True
        with self._lock:
            try:
                # a keypoint save is refused when another process saved it first: this one
                # keeps its changes in memory
                if self._kpf is not None:
                    self._kpf.save(self._kp_path(), self.store.feed_id())
                self.index.save(self.index_path)
                tmp = self._meta_path().with_suffix(".tmp")
                fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as fh:
                    # with windows still pending, the oldest one's start: a reload replays
                    # them (states: replaying is harmless)
                    position = self._backlog[0][0] if self._backlog else self.position
                    json.dump({"feed_id": self.store.feed_id(), "position": position,
                               "count": len(self.index), "hash_views": self.views_held()},
                              fh)
                os.replace(tmp, self._meta_path())
            except OSError as exc:
                self.save_failures += 1
                self.save_error = f"{type(exc).__name__}: {exc.strerror or exc}"[:300]
                log.warning("could not save the index at %s (%s); serving from memory, "
                            "retrying at the next save", self.index_path, self.save_error)
                return False
            self.save_error = None
            return True

    # -- matching -------------------------------------------------------------------
    def match_exact(self, hashes: HashedLike, lists: Sequence[str] | None = None) -> list[Match]:
        out: list[Match] = []
        for sig in CRYPTO_SIGNALS:
            value = getattr(hashes, sig, None)
            if value:
                out.extend(
                    match_from_entry(e, 0, True)
                    for e in self.store.lookup(sig, [value], lists=lists)
                )
        return out

    def match_pdq(
        self,
        pdq: str,
        quality: int | None = None,
        lists: Sequence[str] | None = None,
        radius: int | None = None,
    ) -> list[Match]:
        """Plain PDQ: every active entry within ``radius`` (default 31) of one hash."""
        if quality is not None and quality < self.min_quality:
            return []
        r = self.pdq_threshold if radius is None else radius
        hits = self.index.search(hex_to_codes([pdq])[0], r)
        return self._entries_for_hits([("full", h) for h in hits], lists, plain=True)

    def resolve_pdq_hits(
        self, hits: Sequence[tuple[int, int]], lists: Sequence[str] | None = None
    ) -> list[Match]:
        """Index hits (entry id, distance) of one plain PDQ query → matches, with the plain
        rule and list state applied (for callers that batch their own index searches)."""
        return self._entries_for_hits([("full", h) for h in hits], lists, plain=True)

    def match_views(
        self, views: Sequence[tuple[str, str, int | None]], lists: Sequence[str] | None = None
    ) -> list[Match]:
        """Robust hash tier: each (query view, hex, quality) against every stored view, each
        pair within its route's threshold (``robust.THRESHOLDS``; full/full stays <= 31, so
        plain PDQ lists behave exactly as before). One match per known image, best first."""
        views = [v for v in views if v[2] is None or v[2] >= self.min_quality]
        if not views:
            return []
        radius = max(robust.THRESHOLDS.values())
        found = self.index.search_many(hex_to_codes([v[1] for v in views]), radius)
        pairs = [(v[0], h) for v, hits in zip(views, found, strict=True) for h in hits]
        return self._entries_for_hits(pairs, lists, plain=False)

    def _entries_for_hits(
        self,
        pairs: Sequence[tuple[str, tuple[int, int]]],
        lists: Sequence[str] | None,
        *,
        plain: bool,
    ) -> list[Match]:
        if not pairs:
            return []
        rows = self.store.get_entries(sorted({eid for _, (eid, _) in pairs}))
        allowed = set(lists) if lists else None
        best: dict[tuple[str, str], tuple[int, Match]] = {}
        for qview, (eid, dist) in pairs:
            e = rows.get(eid)
            if e is None or (allowed is not None and e.list_name not in allowed):
                continue
            kclass = _known_class(e.variant)
            qclass = "full" if plain else robust.query_class(qview)
            if (qclass, kclass) == ("full", "full"):
                limit, route = self.pdq_threshold, ""  # the plain PDQ rule, unchanged
            elif plain:
                continue  # extra stored views answer only the robust matcher
            else:
                found = robust.THRESHOLDS.get((qclass, kclass))
                if found is None:
                    continue
                limit, route = found, f"{qview}/{e.variant or 'full'}"
            if dist > limit:
                continue
            # one match per known image (group) and list: the best route (query crops and
            # turned crops only when no other route matches, robust.route_rank)
            key = (e.list_name, e.group_ref or f"entry:{e.id}")
            score = robust.route_rank(qclass, dist, limit)
            if key not in best or score < best[key][0]:
                best[key] = (score, match_from_entry(e, dist, False, route))
        return sorted((m for _, m in best.values()), key=lambda m: (m.distance, m.list, m.entry_id))

    # -- local tier (keypoint index) -------------------------------------------------
    def _kp_path(self) -> Path:
        assert self.index_path is not None
        return keypoint_path_for(self.index_path)

    def _kp_feed(self) -> KeypointFeed:
        """The keypoint tier, loaded (or built) and caught up on first use."""
        if self._kpf is None:
            with self._kp_open_lock:
                if self._kpf is None:
                    self._kpf = KeypointFeed.open(
                        self.store, self._kp_path() if self.persist else None,
                        mmap=self.mmap, vocab=default_vocabulary)
                    self.save()
        return self._kpf

    @property
    def keypoint_feed(self) -> KeypointFeed | None:
        """The keypoint tier's feed follower, None until the tier is first used."""
        return self._kpf

    @property
    def keypoints(self) -> KeypointIndex:
        """The keypoint index (loaded on first use, then kept current by :meth:`refresh`;
        searchable while another thread adds to it)."""
        return self._kp_feed().kp

    @property
    def local_enabled(self) -> bool:
        """Whether queries should carry local features (the lists hold some)."""
        return self.keypoints.live_slots > 0

    def match_local(self, local: bytes | robust.LocalFeatures,
                    lists: Sequence[str] | None = None) -> list[Match]:
        """Local tier: the keypoint index nominates known images, each is verified pairwise
        (geometric check + scene check, :func:`hashwatch.robust.verify`)."""
        kp = self.keypoints
        if not kp.live_slots:
            return []
        q = robust.decode_local(local) if isinstance(local, bytes | bytearray) else local
        allowed = set(lists) if lists else None
        groups: dict[int, tuple[int, str]] = {}
        entries_of: dict[int, list[EntryRow]] = {}

        def group_entries(image_id: int) -> list[EntryRow]:
            if image_id not in entries_of:
                if image_id not in groups:  # one look-up per search stage's nominees
                    groups.update(self.store.local_feature_groups(
                        [c.image_id for c in cands if c.image_id not in groups] or [image_id]))
                g = groups.get(image_id)
                entries_of[image_id] = self.store.group_entries(*g) if g else []
            return entries_of[image_id]

        def known_hashes(image_id: int) -> list[robust.KnownHash]:
            # the stored PDQ views of that known image, for the scene check
            return [robust.KnownHash(e.variant or "full", bytes.fromhex(e.value), 100)
                    for e in group_entries(image_id) if e.signal_type == "pdq"]

        def search(stage: robust.LocalFeatures, top: int | None
                   ) -> dict[int, robust.LocalVerdict]:
            found = kp.search(stage, top=top or KEYPOINT_CANDIDATES)
            cands.extend(found)
            return {c.image_id: robust.verify(stage, kp.features(c.slot),
                                              lambda c=c: known_hashes(c.image_id))
                    for c in found}

        # the query's plain, mirrored and small-picture passes, each only when nothing matched
        cands: list[Any] = []
        verdicts = robust.search_in_stages(q, search)
        out = []
        for image_id, v in verdicts.items():
            if not v.ok:
                continue
            entries = [e for e in group_entries(image_id)
                       if allowed is None or e.list_name in allowed]
            if not entries:
                continue
            e = next((x for x in entries if x.signal_type == "pdq" and not x.variant), entries[0])
            out.append(match_from_entry(e, -1, False, keypoint_route(v), v.inliers))
        return sorted(out, key=lambda m: (-(m.inliers or 0), m.list, m.entry_id))

    def query_extras(self) -> Any:
        """What hashing workers should compute per query file for this matcher (a picklable
        callable on decoded pixels, for ``hashing.hash_many(extras=...)``)."""
        return partial(robust.query_extras, local=self.local_enabled)

    # -- videos ---------------------------------------------------------------------
    def match_vpdq(self, features: Sequence[Any], lists: Sequence[str] | None = None,
                   views: Any = None) -> list[Match]:
        """Known vPDQ videos this vPDQ hash (``VpdqFeature`` s) matches, by the reference's
        frame-match percentages; ``distance`` is the best frame distance. ``views``: frame hex
        → turned / border-trimmed view hexes (see ``VpdqIndex.query``); a match that needed
        them has route ``vpdq:views``."""
        from hashwatch.media.vpdq_index import VpdqIndex

        with self._vpdq_lock:
            if self._vpdq is None:
                self._vpdq = VpdqIndex(self.store)
            else:
                self._vpdq.refresh()
        hits = self._vpdq.query(features, query_percent=self.vpdq_query_percent,
                                compared_percent=self.vpdq_compared_percent, views=views)
        if not hits:
            return []
        rows = self.store.get_entries([h.entry_id for h in hits])
        allowed = set(lists) if lists else None
        out = []
        for h in hits:
            e = rows.get(h.entry_id)
            if e is None or (allowed is not None and e.list_name not in allowed):
                continue
            m = match_from_entry(e, h.distance, False, "vpdq:views" if h.via_views else "")
            out.append(dataclasses.replace(m, query_match_percent=h.query_match_percent,
                                           compared_match_percent=h.compared_match_percent))
        return out

    def match_hashes(self, hashes: HashedLike, lists: Sequence[str] | None = None) -> list[Match]:
        """Exact matches first, then perceptual ones for known images not matched exactly.

        With query views (``hashes.extras["pdq_variants"]``, from :meth:`query_extras`) the
        robust hash tier runs; with local features, the local tier when no hash route matched
        or only views showing part of the file (:func:`hashwatch.robust.part_of_frame`). A video
        or animation (``hashes.frames``) is matched frame by frame, each match saying which
        frame, and a video's vPDQ (``hashes.vpdq``) against known vPDQ videos."""
        frames = getattr(hashes, "frames", None)
        if frames:
            from hashwatch.media.matching import match_media

            return match_media(self, hashes, lists)
        exact = self.match_exact(hashes, lists)
        extras = getattr(hashes, "extras", None) or {}
        near: list[Match] = []
        if hashes.pdq:
            views = [("full", hashes.pdq, hashes.pdq_quality)]
            views += [tuple(v) for v in extras.get("pdq_variants", ())]
            near = self.match_views(views, lists)
        if not exact and extras.get("local") and all(
                robust.part_of_frame(m.route.split("/", 1)[0]) for m in near):
            # nothing matched, or only pictures among others in the file (a region, grid cell
            # or pasted picture, robust.part_of_frame): the keypoint tier looks for the rest
            got = {(m.list, m.ref) for m in near}
            near += [m for m in self.match_local(extras["local"], lists)
                     if (m.list, m.ref) not in got]
        seen = {(m.list, m.ref) for m in exact}
        near = [m for m in near if not (m.distance == 0 and (m.list, m.ref) in seen)]
        return exact + near

    def match_records(
        self, records: Iterable[Any], lists: Sequence[str] | None = None
    ) -> Iterable[MatchResult]:
        """One :class:`MatchResult` per hashed record (``FileHashes``), in order."""
        for rec in records:
            if rec.error and not (rec.md5 or rec.pdq):
                yield MatchResult(path=rec.path, error=rec.error, pdq_matchable=False,
                                  pdq_reason=f"no PDQ: {rec.error}")
                continue
            ok, why = pdq_matchability(rec, self.min_quality)
            yield MatchResult(path=rec.path, matches=self.match_hashes(rec, lists),
                              error=rec.error, pdq_matchable=ok, pdq_reason=why,
                              limited=getattr(rec, "limited", None))

    def match_files(
        self, paths: Iterable[str | os.PathLike[str]], lists: Sequence[str] | None = None, *,
        workers: int = 1,
    ) -> Iterator[MatchResult]:
        """Hash the files under ``paths`` (folders recursively) with the query views this
        matcher needs and match each: one :class:`MatchResult` per file, in order. A file that
        cannot be read is a result with its ``error``. With ``workers > 1`` each file is
        hashed *and matched* (every tier) in one of ``workers`` processes that map the saved
        indexes (:func:`hashwatch.matchwork.match_paths`, the path ``hashwatch match`` takes),
        with this matcher's settings; a database only this process can open (in-memory
        SQLite) is hashed in the workers and matched here."""
        from hashwatch import matchwork
        from hashwatch.hashing import hash_many

        if workers > 1 and matchwork.shareable(self.store):
            spec = matchwork.MatchSpec.for_store(
                self.store, index_path=str(self.index_path) if self.index_path else None,
                lists=tuple(lists) if lists else None, persist=self.persist,
                pdq_threshold=self.pdq_threshold, min_quality=self.min_quality,
                vpdq_query_percent=self.vpdq_query_percent,
                vpdq_compared_percent=self.vpdq_compared_percent)
            yield from matchwork.match_paths(spec, paths, workers=workers)
            return
        yield from self.match_records(
            hash_many(paths, workers=workers, extras=self.query_extras(),
                      initializer=matchwork.limit_library_threads if workers > 1 else None),
            lists)

    def match_bytes(self, data: bytes, lists: Sequence[str] | None = None) -> list[Match]:
        """Matches of one file held in memory (exact first, then PDQ views, then keypoints).
        Bytes that are no image this build decodes are still matched by their MD5, SHA-1
        and SHA-256."""
        from hashwatch.hashing import hash_bytes

        return self.match_hashes(hash_bytes(data, path="<bytes>", extras=self.query_extras()),
                                 lists)
