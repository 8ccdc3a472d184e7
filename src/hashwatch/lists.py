"""List curation as a library: import a file, export a list. The CLI and the HTTP service
both call these, so both behave the same way on bad rows and duplicates."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO

from hashwatch.categories import Category
from hashwatch.formats import RowError, hashlines, reader, writer
from hashwatch.store import AddResult, EntryIn, Store

BINARY_FORMATS = frozenset({"vics"})  # read as bytes (the JSON parser decodes itself)


@dataclass
class ImportResult:
    added: int = 0
    duplicates: int = 0
    restored: int = 0
    bad_rows: int = 0
    errors: list[RowError] = field(default_factory=list)  # the first ``keep_errors``

    @classmethod
    def from_add(cls, res: AddResult, bad: int, errors: list[RowError]) -> ImportResult:
        return cls(res.added, res.duplicates, res.restored, bad, errors)


def import_stream(
    store: Store,
    list_name: str,
    fh: IO[str] | IO[bytes],
    fmt: str,
    *,
    signal: str | None = None,
    category: Category | None = None,
    actor: str = "cli",
    source_name: str = "",
    keep_errors: int = 100,
    on_error: Callable[[RowError], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> ImportResult:
    """Stream ``fh`` into a list: good rows kept, bad rows counted and reported.

    Raises ``FormatError`` when the file is not the format at all, and ``ListNotFound``.
    Batches already written stay written (re-running adds only what is missing).
    """
    read = reader(fmt)
    store.get_list(list_name)  # fail before reading anything
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

    res = store.add_entries(
        list_name,
        good_rows(),
        actor=actor,
        action="entries.import",
        detail=detail,
        on_batch=on_batch,
        collect_ids=False,
    )
    return ImportResult.from_add(res, bad, errors)


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
