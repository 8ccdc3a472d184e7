"""One hash per line. Blank lines and ``#`` comments are skipped.

The signal type comes from ``--signal``; without it, 32 hex digits are MD5 and 40 are
SHA-1, while 64 (SHA-256 or PDQ) must be told. A line may also be ``signal:value``.
On export, each line is ``signal:value`` unless a single signal type was asked for.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO

from hashwatch.categories import Category
from hashwatch.formats import RowError
from hashwatch.formats._common import guess_signal, make_entry
from hashwatch.store import EntryIn, EntryRow


def read(
    fh: IO[str], *, signal: str | None = None, category: Category | None = None
) -> Iterator[EntryIn | RowError]:
    for line_no, raw in enumerate(fh, start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        try:
            sig = signal
            value = text
            if ":" in text:
                sig, _, value = text.partition(":")
            elif sig is None:
                sig = guess_signal(text)
            yield make_entry(sig, value, category=category)
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
