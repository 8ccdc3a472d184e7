"""Interpol ICSE-style CSV exchange.

Columns ``ImageID``, ``MD5``, ``SHA1``, ``SHA256``, ``PDQ``, ``PhotoDNA`` and ``Category``, under
any of the spellings tools use (``Image ID``, ``MD5 Hash``, ``SHA-1``...; see
``_common.column_name``), separated by ``,``, ``;`` or tab. A category value of the form
``scheme:code`` is kept as given; a bare value is stored under the ``icse`` scheme, which
hashwatch does not interpret and round-trips unchanged.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import IO

from hashwatch.categories import Category
from hashwatch.formats import FormatError, RowError
from hashwatch.formats._common import category_or_none, csv_rows, wide_entries
from hashwatch.formats._text import open_text
from hashwatch.formats.vics import _group
from hashwatch.store import EntryIn, EntryRow

COLUMNS = ["ImageID", "MD5", "SHA1", "SHA256", "PDQ", "PhotoDNA", "Category"]
_SIGNALS = {"md5": "md5", "sha1": "sha1", "sha256": "sha256", "pdq": "pdq", "photodna": "photodna"}
_KNOWN = frozenset({*_SIGNALS, "imageid", "category", "filename"})


def read(
    fh: IO[str] | IO[bytes], *, signal: str | None = None, category: Category | None = None
) -> Iterator[EntryIn | RowError]:
    """Entries of an ICSE CSV export: any delimiter (``,`` ``;`` tab), encoding and header
    spelling (``Image ID``, ``MD5 Hash``...); every hash of a row shares the row's group, and
    a bad hash cell never drops the row's other hashes."""
    header, rows = csv_rows(open_text(fh), "ICSE CSV", _KNOWN)
    present = {c: _SIGNALS[c] for c in _SIGNALS if c in header}
    if not present:
        raise FormatError("ICSE CSV header has no hash column (MD5, SHA1, SHA256, PDQ, PhotoDNA)")
    for item in rows:
        if isinstance(item, RowError):
            yield item
            continue
        line, row = item
        try:
            raw_cat = (row.get("category") or "").strip()
            cat = category
            if raw_cat:
                cat = category_or_none(raw_cat if ":" in raw_cat else f"icse:{raw_cat}")
            ref = (row.get("imageid") or row.get("filename") or "").strip()
        except ValueError as exc:
            yield RowError(line, str(exc))
            continue
        yield from wide_entries(row, present, line=line, category=cat, source_ref=ref,
                                group_ref=ref)


def write(rows: Iterator[EntryRow], fh: IO[str]) -> int:
    w = csv.writer(fh, lineterminator="\n")
    w.writerow(COLUMNS)
    n = 0
    for group in _group(rows):
        rec = {c: "" for c in COLUMNS}
        rec["ImageID"] = group[0].source_ref
        for e in group:
            col = {
                "md5": "MD5",
                "sha1": "SHA1",
                "sha256": "SHA256",
                "pdq": "PDQ",
                "photodna": "PhotoDNA",
            }.get(e.signal_type)
            if col and not e.variant and not rec[col]:
                rec[col] = e.value
            if e.category and not rec["Category"]:
                c = e.category
                rec["Category"] = c.code if c.scheme == "icse" else str(c)
        w.writerow([rec[c] for c in COLUMNS])
        n += 1
    return n
