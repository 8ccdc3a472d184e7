"""hashwatch CSV: ``signal_type,value,category,labels,source_ref`` (header required).

Also accepted on import: a wide layout with one column per signal (``md5``, ``sha1``,
``sha256``, ``pdq``, ...), each non-empty cell becoming an entry of that row, and the
category given as ``category`` (``scheme:code``) or ``category_scheme`` +
``category_code``. Labels are separated by ``;``. A ``vpdq`` value is a whole video's vPDQ
(the reference's JSON list of ``"hex,quality,seconds"``): stored one entry per frame,
exported as one row per video.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import IO

from hashwatch.categories import Category
from hashwatch.formats import FormatError, RowError
from hashwatch.formats._common import (
    category_or_none,
    csv_rows,
    guess_signal,
    make_entries,
    split_labels,
    vpdq_runs,
    wide_entries,
)
from hashwatch.formats._text import open_text
from hashwatch.store import EntryIn, EntryRow

HEADER = ["signal_type", "value", "category", "labels", "source_ref", "group_ref", "variant"]
_WIDE_SIGNALS = ("md5", "sha1", "sha256", "pdq", "photodna", "vpdq")


def _row_category(row: dict[str, str]) -> Category | None:
    if row.get("category"):
        return category_or_none(row["category"])
    scheme, code = (row.get("category_scheme") or "").strip(), (row.get("category_code") or "")
    if scheme or code.strip():
        return category_or_none(f"{scheme}:{code}")
    return None


_KNOWN = frozenset(HEADER) | {"category_scheme", "category_code", "filename", *_WIDE_SIGNALS}


def read(
    fh: IO[str] | IO[bytes], *, signal: str | None = None, category: Category | None = None
) -> Iterator[EntryIn | RowError]:
    """Entries of a hashwatch CSV (long or wide form), any delimiter, encoding and header
    spelling partner tools use (see ``_common.csv_rows``); bad rows as ``RowError``."""
    fields, rows = csv_rows(open_text(fh), "CSV", _KNOWN)
    long_form = "value" in fields
    wide = {s: s for s in _WIDE_SIGNALS if s in fields}
    if not long_form and not wide:
        raise FormatError(
            "CSV header needs 'signal_type,value,...' or hash columns (md5, sha1, sha256, pdq)"
        )
    for item in rows:
        if isinstance(item, RowError):
            yield item
            continue
        line, row = item
        try:
            cat = _row_category(row) or category
            labels = split_labels(row.get("labels"))
            ref = (row.get("source_ref") or row.get("filename") or "").strip()
            group = (row.get("group_ref") or "").strip()
            if not long_form:
                yield from wide_entries(row, wide, line=line, category=cat, source_ref=ref,
                                        group_ref=group, labels=labels)
                continue
            sig = (row.get("signal_type") or signal or "").strip()
            value = (row.get("value") or "").strip()
            if not value:
                raise ValueError("empty value")
            # a whole vPDQ value (one video) becomes one entry per frame
            yield from make_entries(
                sig or guess_signal(value),
                value,
                category=cat,
                labels=labels,
                source_ref=ref,
                group_ref=group,
                variant=(row.get("variant") or "").strip(),
            )
        except ValueError as exc:
            yield RowError(line, str(exc))


def write(rows: Iterator[EntryRow], fh: IO[str]) -> int:
    w = csv.writer(fh, lineterminator="\n")
    w.writerow(HEADER)
    n = 0
    for item in vpdq_runs(rows):
        # a known video's vPDQ frames are one row: the reference's JSON value, no variant
        e, value, variant = (item[0][0], item[1], "") if isinstance(item, tuple) else (
            item, item.value, item.variant)
        w.writerow(
            [
                e.signal_type,
                value,
                str(e.category) if e.category else "",
                ";".join(e.labels),
                e.source_ref,
                e.group_ref,
                variant,
            ]
        )
        n += 1
    return n
