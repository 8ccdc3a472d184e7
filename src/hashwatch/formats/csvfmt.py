"""hashwatch CSV: ``signal_type,value,category,labels,source_ref`` (header required).

Also accepted on import: a wide layout with one column per signal (``md5``, ``sha1``,
``sha256``, ``pdq``, ...), each non-empty cell becoming an entry of that row, and the
category given as ``category`` (``scheme:code``) or ``category_scheme`` +
``category_code``. Labels are separated by ``;``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import IO

from hashwatch.categories import Category
from hashwatch.formats import FormatError, RowError
from hashwatch.formats._common import category_or_none, make_entry, split_labels
from hashwatch.store import EntryIn, EntryRow

HEADER = ["signal_type", "value", "category", "labels", "source_ref", "group_ref", "variant"]
_WIDE_SIGNALS = ("md5", "sha1", "sha256", "pdq", "photodna")


def _row_category(row: dict[str, str]) -> Category | None:
    if row.get("category"):
        return category_or_none(row["category"])
    scheme, code = (row.get("category_scheme") or "").strip(), (row.get("category_code") or "")
    if scheme or code.strip():
        return category_or_none(f"{scheme}:{code}")
    return None


def read(
    fh: IO[str], *, signal: str | None = None, category: Category | None = None
) -> Iterator[EntryIn | RowError]:
    rd = csv.DictReader(fh)
    fields = [f.strip().lower() for f in (rd.fieldnames or [])]
    if not fields:
        raise FormatError("empty CSV file (a header row is required)")
    rd.fieldnames = fields
    long_form = "value" in fields
    wide = [s for s in _WIDE_SIGNALS if s in fields]
    if not long_form and not wide:
        raise FormatError(
            "CSV header needs 'signal_type,value,...' or hash columns (md5, sha1, sha256, pdq)"
        )
    for row in rd:
        line = rd.line_num
        if None in row:
            yield RowError(line, "more fields than the header")
            continue
        try:
            cat = _row_category(row) or category
            labels = split_labels(row.get("labels"))
            ref = (row.get("source_ref") or row.get("ref") or "").strip()
            group = (row.get("group_ref") or "").strip()
            variant = (row.get("variant") or "").strip()
            if long_form:
                sig = (row.get("signal_type") or row.get("signal") or signal or "").strip()
                value = (row.get("value") or "").strip()
                if not value:
                    raise ValueError("empty value")
                if not sig:
                    from hashwatch.formats._common import guess_signal

                    sig = guess_signal(value)
                yield make_entry(
                    sig,
                    value,
                    category=cat,
                    labels=labels,
                    source_ref=ref,
                    group_ref=group,
                    variant=variant,
                )
            else:
                cells = [(s, (row.get(s) or "").strip()) for s in wide]
                cells = [(s, v) for s, v in cells if v]
                if not cells:
                    raise ValueError("no hash in this row")
                made = [
                    make_entry(
                        s,
                        v,
                        category=cat,
                        labels=labels,
                        source_ref=ref,
                        group_ref=group or cells[0][1],
                    )
                    for s, v in cells
                ]
                yield from made
        except ValueError as exc:
            yield RowError(line, str(exc))


def write(rows: Iterator[EntryRow], fh: IO[str]) -> int:
    w = csv.writer(fh, lineterminator="\n")
    w.writerow(HEADER)
    n = 0
    for e in rows:
        w.writerow(
            [
                e.signal_type,
                e.value,
                str(e.category) if e.category else "",
                ";".join(e.labels),
                e.source_ref,
                e.group_ref,
                e.variant,
            ]
        )
        n += 1
    return n
