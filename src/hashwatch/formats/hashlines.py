"""One hash per line. Blank lines and ``#`` comments are skipped.

The signal type comes from ``--signal``; without it, 32 hex digits are MD5 and 40 are
SHA-1, while 64 (SHA-256 or PDQ) must be told. A line may also be ``signal:value``, and
checksum tools' ``value  file name`` lines are read too (the name becomes the reference).
On export, each line is ``signal:value`` unless a single signal type was asked for.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO

from hashwatch.categories import Category
from hashwatch.formats import RowError
from hashwatch.formats._common import guess_signal, make_entry
from hashwatch.formats._text import open_text
from hashwatch.store import EntryIn, EntryRow


def read(
    fh: IO[str] | IO[bytes], *, signal: str | None = None, category: Category | None = None
) -> Iterator[EntryIn | RowError]:
    """Entries of a hash-per-line file in any encoding partner tools write (UTF-8 with or
    without BOM, UTF-16, CRLF). A line is ``value``, ``signal:value``, or a checksum tool's
    ``value  name`` / ``value *name`` (the name becomes the source reference)."""
    for line_no, raw in enumerate(open_text(fh), start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        try:
            sig = signal
            value, *rest = text.split(None, 1)
            name = rest[0].strip().removeprefix("*") if rest else ""
            if ":" in value:
                sig, _, value = value.partition(":")
            elif sig is None:
                sig = guess_signal(value)
            yield make_entry(sig, value, category=category, source_ref=name)
        except ValueError as exc:
            yield RowError(line_no, str(exc))


def write(rows: Iterator[EntryRow], fh: IO[str], *, signal: str | None = None) -> int:
    n = 0
    for e in rows:
        if signal is not None:
            if e.signal_type != signal:
                continue
            fh.write(f"{e.value}\n")
        else:
            fh.write(f"{e.signal_type}:{e.value}\n")
        n += 1
    return n
