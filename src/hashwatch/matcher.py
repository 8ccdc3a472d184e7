"""Match file hashes against the store: exact crypto hashes first, then PDQ.

The PDQ index lives beside the database (``<db>.pdq.idx``) and is kept current by
replaying the store's change feed, so adding or removing entries never rebuilds it.
List state (enabled, deleted) is applied when results are read back from the store.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hashwatch.index import HammingIndex
from hashwatch.store import EntryRow, Store

log = logging.getLogger(__name__)

CRYPTO_SIGNALS = ("sha256", "sha1", "md5")
PDQ_THRESHOLD = 31
PDQ_MIN_QUALITY = 50


class HashedLike(Protocol):
    md5: str | None
    sha1: str | None
    sha256: str | None
    pdq: str | None
    pdq_quality: int | None


@dataclass(frozen=True)
class Match:
    list: str
    entry_id: int
    ref: str
    signal: str
    distance: int
    category: str | None
    exact: bool
    variant: str = ""

    def as_dict(self) -> dict[str, Any]:
        d = {
            "list": self.list,
            "entry_id": self.entry_id,
            "ref": self.ref,
            "signal": self.signal,
            "distance": self.distance,
            "category": self.category,
            "exact": self.exact,
        }
        if self.variant:
            d["variant"] = self.variant
        return d


@dataclass
class MatchResult:
    path: str
    matches: list[Match] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "matches": [m.as_dict() for m in self.matches],
            "error": self.error,
        }


def hex_to_codes(values: Sequence[str]) -> np.ndarray:
    """64-hex PDQ strings → (n, 32) uint8, in one C-level conversion."""
    if not values:
        return np.zeros((0, 32), dtype=np.uint8)
    return np.frombuffer(bytes.fromhex("".join(values)), dtype=np.uint8).reshape(-1, 32)


def _match_from_entry(e: EntryRow, distance: int, exact: bool) -> Match:
    return Match(
        list=e.list_name,
        entry_id=e.id,
        ref=e.source_ref,
        signal=e.signal_type,
        distance=distance,
        category=str(e.category) if e.category else None,
        exact=exact,
        variant=e.variant,
    )


def index_path_for(store: Store) -> Path | None:
    url = store.engine.url
    if url.get_backend_name() == "sqlite" and url.database:
        return Path(url.database).with_suffix(Path(url.database).suffix + ".pdq.idx")
    return None


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
    ) -> None:
        self.store = store
        self.pdq_threshold = pdq_threshold
        self.min_quality = min_quality
        self.index_path = Path(index_path) if index_path else index_path_for(store)
        self.persist = persist and self.index_path is not None
        self.seq = 0
        self.index = self._load_or_build()

    # -- index lifecycle ------------------------------------------------------------
    def _meta_path(self) -> Path:
        assert self.index_path is not None
        return self.index_path.with_suffix(self.index_path.suffix + ".json")

    def _load_or_build(self) -> HammingIndex:
        if self.persist and self.index_path and self.index_path.exists():
            try:
                meta = json.loads(self._meta_path().read_text())
                index = HammingIndex.load(self.index_path)
                self.seq = int(meta["seq"])
                if self.seq <= self.store.last_change():
                    self.index = index
                    changed = self.refresh()
                    if changed:
                        self.save()
                    return index
            except (OSError, ValueError, KeyError) as exc:
                log.warning("PDQ index at %s unusable (%s); rebuilding", self.index_path, exc)
        return self.rebuild()

    def rebuild(self) -> HammingIndex:
        # read the feed position first: anything added while we scan is replayed later
        self.seq = self.store.last_change()
        index = HammingIndex()
        for batch in self.store.iter_signal_values("pdq"):
            ids = np.fromiter((i for i, _ in batch), dtype=np.int64, count=len(batch))
            index.add(ids, hex_to_codes([v for _, v in batch]))
        self.index = index
        self.save()
        return index

    def refresh(self) -> int:
        """Apply entries added or removed since the index was last current."""
        applied = 0
        while True:
            rows = self.store.changes_since(self.seq, signal_type="pdq")
            if not rows:
                # skip past non-PDQ changes so the next poll starts later
                self.seq = max(self.seq, self.store.last_change())
                return applied
            adds: dict[int, str] = {}
            for seq, entry_id, op, _sig, value in rows:
                if op == "add":
                    adds[entry_id] = value
                else:
                    adds.pop(entry_id, None)
                    self.index.remove(np.array([entry_id], dtype=np.int64))
                self.seq = seq
            if adds:
                ids = np.fromiter(adds.keys(), dtype=np.int64, count=len(adds))
                self.index.remove(ids)  # a restored entry must not be held twice
                self.index.add(ids, hex_to_codes(list(adds.values())))
            applied += len(rows)

    def save(self) -> None:
        if not self.persist or self.index_path is None:
            return
        self.index.save(self.index_path)
        tmp = self._meta_path().with_suffix(".tmp")
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"seq": self.seq, "count": len(self.index)}, fh)
        os.replace(tmp, self._meta_path())

    # -- matching -------------------------------------------------------------------
    def match_exact(self, hashes: HashedLike, lists: Sequence[str] | None = None) -> list[Match]:
        out: list[Match] = []
        for sig in CRYPTO_SIGNALS:
            value = getattr(hashes, sig, None)
            if value:
                out.extend(
                    _match_from_entry(e, 0, True)
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
        if quality is not None and quality < self.min_quality:
            return []
        hits = self.index.search(
            hex_to_codes([pdq])[0], self.pdq_threshold if radius is None else radius
        )
        if not hits:
            return []
        rows = self.store.get_entries([i for i, _ in hits])
        allowed = set(lists) if lists else None
        out = []
        for entry_id, dist in hits:
            e = rows.get(entry_id)
            if e is None or (allowed is not None and e.list_name not in allowed):
                continue
            out.append(_match_from_entry(e, dist, False))
        return out

    def match_hashes(self, hashes: HashedLike, lists: Sequence[str] | None = None) -> list[Match]:
        """Exact matches first; perceptual matches for entries not already matched exactly."""
        exact = self.match_exact(hashes, lists)
        seen_groups = {(m.list, m.ref) for m in exact}
        near: list[Match] = []
        if hashes.pdq:
            for m in self.match_pdq(hashes.pdq, hashes.pdq_quality, lists):
                if m.distance == 0 and (m.list, m.ref) in seen_groups:
                    continue  # the same known item, already reported as an exact match
                near.append(m)
        near.sort(key=lambda m: (m.distance, m.list, m.entry_id))
        return exact + near

    def match_records(
        self, records: Iterable[Any], lists: Sequence[str] | None = None
    ) -> Iterable[MatchResult]:
        for rec in records:
            if rec.error and not (rec.md5 or rec.pdq):
                yield MatchResult(path=rec.path, error=rec.error)
                continue
            yield MatchResult(path=rec.path, matches=self.match_hashes(rec, lists), error=rec.error)
