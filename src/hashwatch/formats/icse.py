"""Interpol ICSE-style CSV exchange.

Column names are matched case-insensitively: ``ImageID``/``ID``, ``MD5``, ``SHA1``,
``SHA256``, ``PDQ``, ``PhotoDNA`` and ``Category``. A category value of the form
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
from hashwatch.formats.vics import _group
from hashwatch.store import EntryIn, EntryRow

COLUMNS = ["ImageID", "MD5", "SHA1", "SHA256", "PDQ", "PhotoDNA", "Category"]
_SIGNALS = {"md5": "md5", "sha1": "sha1", "sha256": "sha256", "pdq": "pdq", "photodna": "photodna"}


def read(
    fh: IO[str], *, signal: str | None = None, category: Category | None = None
) -> Iterator[EntryIn | RowError]:
    rows = csv_rows(fh, "ICSE CSV")
    header = next(rows)[1]
    present = {c: _SIGNALS[c] for c in _SIGNALS if c in header}
    if not present:
        raise FormatError("ICSE CSV header has no hash column (MD5, SHA1, SHA256, PDQ, PhotoDNA)")
    for line, row in rows:
        if row is None:
            yield RowError(line, "more fields than the header")
            continue
        try:
            raw_cat = (row.get("category") or "").strip()
            cat = category
            if raw_cat:
                cat = category_or_none(raw_cat if ":" in raw_cat else f"icse:{raw_cat}")
            ref = (row.get("imageid") or row.get("id") or "").strip()
            yield from wide_entries(row, present, category=cat, source_ref=ref, group_ref=ref)
        except ValueError as exc:
            yield RowError(line, str(exc))


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
