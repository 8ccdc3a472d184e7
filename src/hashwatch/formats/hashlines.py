"""One hash per line. Blank lines and ``#`` comments are skipped.

The signal type comes from ``--signal``; without it, 32 hex digits are MD5 and 40 are
SHA-1, while 64 (SHA-256 or PDQ) must be told. A line may also be ``signal:value``, and
checksum tools' lines are read too, the name becoming the reference: GNU ``md5sum`` /
``sha256sum`` (``value  file name``, ``value *file name``) and the BSD "tagged" form that
macOS ``md5``, ``shasum --tag``, ``sha256sum --tag`` and ``openssl dgst`` write
(``SHA256 (file name) = value``), whose tag names the signal type.
On export, each line is ``signal:value`` unless a single signal type was asked for.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import IO

from hashwatch.categories import Category
from hashwatch.formats import RowError
from hashwatch.formats._common import guess_signal, make_entry
from hashwatch.formats._text import open_text
from hashwatch.store import EntryIn, EntryRow

# BSD tagged checksum line: "MD5 (name) = value", "SHA2-256(name)= value" (openssl 3); the
# name may hold parentheses, so the last ") = " before the hex value closes it
_TAGGED = re.compile(r"^([A-Za-z][A-Za-z0-9-]*) ?\((.*)\) ?= ?([0-9A-Fa-f]+)$")
_TAG_SIGNALS = {"md5": "md5", "sha1": "sha1", "sha256": "sha256", "sha2256": "sha256"}


# GNU tools start a line with a backslash when the name holds a backslash, newline or CR,
# and escape those in the name
_ESCAPE = re.compile(r"\\(.)")
_UNESCAPE = {"\\": "\\", "n": "\n", "r": "\r"}


def _unescape(name: str) -> str:
    return _ESCAPE.sub(lambda m: _UNESCAPE.get(m.group(1), m.group(0)), name)


def _tagged(text: str) -> tuple[str, str, str] | None:
    """(signal, value, name) of a BSD tagged checksum line, else None."""
    m = _TAGGED.match(text)
    if m is None:
        return None
    tag = re.sub(r"[^0-9a-z]", "", m.group(1).lower())
    return _TAG_SIGNALS.get(tag, tag), m.group(3), m.group(2)


def read(
    fh: IO[str] | IO[bytes], *, signal: str | None = None, category: Category | None = None
) -> Iterator[EntryIn | RowError]:
    """Entries of a hash-per-line file in any encoding partner tools write (UTF-8 with or
    without BOM, UTF-16, CRLF). A line is ``value``, ``signal:value``, or a checksum tool's
    ``value  name`` / ``value *name`` / ``TAG (name) = value`` (the name becomes the source
    reference; the BSD tag names the signal type)."""
    for line_no, raw in enumerate(open_text(fh), start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        escaped = text.startswith("\\")
        if escaped:
            text = text[1:]
        try:
            tagged = _tagged(text)
            if tagged is not None:
                sig, value, name = tagged
                name = _unescape(name) if escaped else name
                yield make_entry(sig, value, category=category, source_ref=name)
                continue
            sig = signal
            value, *rest = text.split(None, 1)
            name = rest[0].strip().removeprefix("*") if rest else ""
            name = _unescape(name) if escaped else name
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
