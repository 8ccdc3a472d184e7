"""Shared row handling for the readers."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import IO

from hashwatch.categories import Category, CategoryError, parse_category
from hashwatch.store import EntryIn

_HEX = re.compile(r"^[0-9a-fA-F]+$")
# hex length -> exact signal type; 64 is ambiguous (sha256 or pdq) and needs --signal
_BY_LENGTH = {32: "md5", 40: "sha1"}


def guess_signal(value: str) -> str:
    v = value.strip()
    if _HEX.match(v) and len(v) in _BY_LENGTH:
        return _BY_LENGTH[len(v)]
    if _HEX.match(v) and len(v) == 64:
        raise ValueError("64 hex characters could be sha256 or pdq: pass --signal sha256|pdq")
    raise ValueError(f"cannot tell the signal type of {shorten(v)!r}: pass --signal")


def shorten(value: str, n: int = 24) -> str:
    # bad values are echoed back in errors; keep them short (and hashes out of logs)
    return value if len(value) <= n else value[:n] + "..."


def make_entry(
    signal: str,
    value: str,
    *,
    category: Category | None = None,
    labels: Sequence[str] = (),
    source_ref: str = "",
    group_ref: str = "",
    variant: str = "",
) -> EntryIn:
    """Validate and normalise one entry; raises ValueError with a readable message."""
    from hashwatch.signals import get_signal_type

    try:
        st = get_signal_type(signal.strip().lower())
    except KeyError as exc:
        raise ValueError(str(exc).strip("'\"")) from None
    normalised = st.validate(value.strip())
    return EntryIn(
        signal_type=st.name,
        value=normalised,
        category=category,
        labels=tuple(x for x in (s.strip() for s in labels) if x),
        source_ref=source_ref,
        group_ref=group_ref,
        variant=variant,
    )


def category_or_none(text: str | None) -> Category | None:
    if text is None or not text.strip():
        return None
    try:
        return parse_category(text.strip())
    except CategoryError as exc:
        raise ValueError(str(exc)) from None


def split_labels(text: str | None) -> list[str]:
    if not text:
        return []
    return [x for x in re.split(r"[;|]", text) if x.strip()]


def csv_rows(fh: IO[str], what: str) -> Iterator[tuple[int, dict[str, str] | None]]:
    """(line number, row with lower-cased column names) of a CSV with a header; the row is
    None when it has more fields than the header. The header is checked by the caller
    through the first yielded item: ``(0, {name: name})``."""
    rd = csv.DictReader(fh)
    if not rd.fieldnames:
        from hashwatch.formats import FormatError

        raise FormatError(f"empty {what} file (a header row is required)")
    rd.fieldnames = [f.strip().lower() for f in rd.fieldnames]
    yield 0, {f: f for f in rd.fieldnames}
    for row in rd:
        yield rd.line_num, (None if None in row else row)


def wide_entries(
    row: Mapping[str, str | None],
    columns: Mapping[str, str],
    *,
    category: Category | None,
    source_ref: str,
    group_ref: str = "",
    labels: Sequence[str] = (),
) -> list[EntryIn]:
    """Entries of a row with one column per hash (``columns``: column -> signal type); all
    of a row's hashes share one group (the given one, else the first hash)."""
    cells = [(sig, (row.get(col) or "").strip()) for col, sig in columns.items()]
    cells = [(sig, v) for sig, v in cells if v]
    if not cells:
        raise ValueError("no hash in this row")
    group = group_ref or cells[0][1]
    return [
        make_entry(sig, v, category=category, labels=labels, source_ref=source_ref, group_ref=group)
        for sig, v in cells
    ]
