"""List curation as a library: import a file, export a list. The CLI and the HTTP service
both call these, so both behave the same way on bad rows and duplicates."""

from __future__ import annotations

import itertools
import os
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from hashwatch.categories import Category
from hashwatch.formats import RowError, hashlines, reader, writer
from hashwatch.store import AddResult, EntryIn, ListNotFound, SignalCounts, Store

# files from this size on are imported with the bulk method when the caller lets us choose
BULK_MIN_BYTES = 16 * 1024 * 1024


def choose_method(size: int) -> str:
    """"bulk" for files of ``BULK_MIN_BYTES`` (about 250,000 PDQ lines) or more, else "rows"
    (small imports keep the row path: it returns ids and shows progress as it commits)."""
    return "bulk" if size >= BULK_MIN_BYTES else "rows"


@dataclass
class ImportResult:
    """What an import did: totals, per signal type, and the bad rows (first ``keep_errors``
    of them, each with its line or record number)."""

    added: int = 0
    duplicates: int = 0
    restored: int = 0
    bad_rows: int = 0
    errors: list[RowError] = field(default_factory=list)  # the first ``keep_errors``
    by_signal: dict[str, SignalCounts] = field(default_factory=dict)
    created: bool = False  # the import made the list (``import_stream(create=True)``)

    @classmethod
    def from_add(cls, res: AddResult, bad: int, errors: list[RowError]) -> ImportResult:
        return cls(res.added, res.duplicates, res.restored, bad, errors, dict(res.by_signal))

    def not_matchable(self) -> dict[str, int]:
        """Signal type -> values of it the file carried that are kept in the list but cannot
        be matched here (e.g. PhotoDNA without the licensed plug-in)."""
        from hashwatch.signals import get_signal_type

        return {sig: c.added + c.duplicates + c.restored for sig, c in self.by_signal.items()
                if not get_signal_type(sig).matchable}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready report (what the service answers)."""
        nm = self.not_matchable()
        return {
            "added": self.added, "duplicates": self.duplicates, "restored": self.restored,
            "bad_rows": self.bad_rows, "first_errors": [str(e) for e in self.errors],
            "by_signal": {sig: {"added": c.added, "duplicates": c.duplicates,
                                "restored": c.restored, "matchable": sig not in nm}
                          for sig, c in sorted(self.by_signal.items())},
        }

    def lines(self) -> list[str]:
        """One line per signal type, for people."""
        nm = self.not_matchable()
        out = []
        for sig, c in sorted(self.by_signal.items()):
            text = f"{sig}: {c.added} added, {c.duplicates} already present"
            if c.restored:
                text += f", {c.restored} restored"
            if sig in nm:
                text += (f" ({nm[sig]} kept, not matchable here: needs the {sig} "
                         "signal plug-in)")
            out.append(text)
        return out


def import_stream(
    store: Store,
    list_name: str,
    fh: IO[bytes] | IO[str],
    fmt: str,
    *,
    signal: str | None = None,
    category: Category | None = None,
    actor: str = "cli",
    source_name: str = "",
    keep_errors: int = 100,
    on_error: Callable[[RowError], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    method: str = "rows",
    on_apply: Callable[[], None] | None = None,
    create: bool = False,
) -> ImportResult:
    """Stream ``fh`` into a list: good rows kept, bad rows counted and reported.

    ``create=True`` makes a missing list (source = ``source_name``), but only once the file
    has given a good row: a file refused as a whole (``FormatError``) or holding no good row
    leaves no empty list behind (``ImportResult.created`` says whether it was made).

    ``fh`` is best given as bytes: every reader detects the encoding (UTF-8 with or without
    BOM, UTF-16, Windows-1252) and the delimited ones the delimiter and header spelling.

    Raises ``FormatError`` when the file is not the format at all, and ``ListNotFound``.
    ``method="rows"``: batches commit as they go; an interrupted import keeps them and
    re-running adds only what is missing (resumable). ``method="bulk"``
    (``hashwatch.store.bulk``): staged, then applied set-based, several times faster on big
    files: in one transaction on PostgreSQL (atomic), in chunks of short transactions on
    SQLite (resumable, other writers keep getting the lock). Both read the file with the
    same reader.
    """
    if method not in ("rows", "bulk"):
        raise ValueError(f"unknown import method {method!r} (rows or bulk)")
    read = reader(fmt)
    try:
        store.get_list(list_name)  # fail before reading anything
        missing = False
    except ListNotFound:
        if not create:
            raise
        missing = True
    errors: list[RowError] = []
    bad = 0
    # read by add_entries when it writes its audit record, after the stream is consumed
    detail = {"source": source_name, "format": fmt, "bad_rows": 0}

    def good_rows() -> Iterator[EntryIn]:
        nonlocal bad
        for item in read(fh, signal=signal, category=category):
            if isinstance(item, RowError):
                bad += 1
                detail["bad_rows"] = bad
                if len(errors) < keep_errors:
                    errors.append(item)
                if on_error is not None:
                    on_error(item)
                continue
            yield item

    rows: Iterable[EntryIn] = good_rows()
    if missing:
        # read up to the first good row (a file that is not the format at all raises here)
        # before the list is made, so a refused file never leaves an empty list behind
        rows = iter(rows)
        first = next(rows, None)
        if first is None:
            return ImportResult(bad_rows=bad, errors=errors)
        store.create_list(list_name, source=source_name, actor=actor)
        rows = itertools.chain([first], rows)
    if method == "bulk":
        from hashwatch.store.bulk import bulk_add

        res = bulk_add(store, list_name, rows, actor=actor, detail=detail,
                       on_batch=on_batch, on_apply=on_apply)
    else:
        res = store.add_entries(
            list_name,
            rows,
            actor=actor,
            action="entries.import",
            detail=detail,
            on_batch=on_batch,
            collect_ids=False,
        )
    out = ImportResult.from_add(res, bad, errors)
    out.created = missing
    return out


def export_list(
    store: Store,
    list_name: str,
    fh: IO[str],
    fmt: str,
    *,
    signal: str | None = None,
    actor: str = "cli",
) -> int:
    """Write a list's active entries (hashes and metadata only, never images)."""
    write = writer(fmt)
    store.get_list(list_name)
    rows = store.iter_entries(list_name=list_name, signal_type=signal)
    n = hashlines.write(rows, fh, signal=signal) if fmt == "hashlines" else write(rows, fh)
    store.audit(actor, "list.export", {"format": fmt, "records": n}, list_name=list_name)
    return n


@dataclass
class AddFilesResult:
    """What adding files did: entries ``added`` and ``duplicates``, ``files`` hashed, the
    ``failed`` ones as (path, error), and the known images given ``local_features``."""

    added: int = 0
    duplicates: int = 0
    files: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, error)
    local_features: int = 0


def add_records(
    store: Store,
    list_name: str,
    records: Iterable[Any],
    *,
    category: Category | None = None,
    actor: str = "cli",
    on_record: Callable[[Any], None] | None = None,
) -> AddFilesResult:
    """Add hashed known images (``FileHashes`` computed with ``robust.known_extras``): their
    crypto hashes, full PDQ and extra PDQ views as entries of one group, and their local
    features. A file that could not be read at all is reported, not added.

    Entries commit in batches (:meth:`Store.add_entries`); each image's local features are
    written once all its entries have committed, batch by batch: memory stays flat on a
    month's additions (250,000 images hold ~2 GB of keypoints), the keypoint tier sees the
    images while the rest are still hashing, and an interrupted add keeps the keypoints of
    every image whose entries it kept (re-running it adds only what is missing)."""
    from hashwatch.known import entries_for_record, local_features_for_record

    out = AddFilesResult()
    local: list[tuple[str, bytes]] = []  # waiting for their entries to commit
    ends: list[int] = []  # entries yielded up to and including each waiting image's
    yielded = committed = 0

    def items() -> Iterator[EntryIn]:
        nonlocal yielded
        for rec in records:
            if on_record is not None:
                on_record(rec)
            if rec.error and not rec.sha256:
                out.failed.append((str(rec.path), rec.error))
                continue
            out.files += 1
            entries = entries_for_record(rec, category=category)
            yielded += len(entries)
            feats = local_features_for_record(rec)
            if feats is not None:
                local.append(feats)
                ends.append(yielded)
            yield from entries

    def flush(upto: int) -> None:
        k = bisect_right(ends, upto)
        if k:
            out.local_features += store.add_local_features(list_name, local[:k], actor=actor)
            del local[:k], ends[:k]

    def on_batch(n: int) -> None:
        nonlocal committed
        committed += n
        flush(committed)

    res = store.add_entries(list_name, items(), actor=actor, action="entries.add_files",
                            on_batch=on_batch)
    out.added, out.duplicates = res.added, res.duplicates
    flush(yielded)
    return out


def add_files(
    store: Store,
    list_name: str,
    paths: Iterable[str | os.PathLike[str]],
    *,
    category: Category | None = None,
    workers: int = 1,
    actor: str = "library",
    on_record: Callable[[Any], None] | None = None,
) -> AddFilesResult:
    """Hash the image files under ``paths`` (folders recursively, ``workers`` processes) and
    add them to a list as known images: crypto hashes, PDQ, the robust matcher's extra PDQ
    views and keypoints, one group per file; a video as its MD5/SHA-1/SHA-256 and vPDQ
    (``lists add`` in the CLI). Raises
    ``ListNotFound``; unreadable files are reported in ``failed``, not added."""
    from hashwatch import robust
    from hashwatch.hashing import hash_many
    from hashwatch.matchwork import limit_library_threads

    store.get_list(list_name)  # fail before hashing anything
    # known videos are kept as their vPDQ, not as pictures: no per-frame extras. One library
    # thread per worker: OpenCV's own pool only contends for the cores the workers use
    records = hash_many(paths, workers=workers, extras=robust.known_extras, frame_extras=False,
                        initializer=limit_library_threads)
    return add_records(store, list_name, records, category=category, actor=actor,
                       on_record=on_record)
