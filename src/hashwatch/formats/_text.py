"""Bytes of a list file -> text, the way partner tools write them.

Windows forensic tools write UTF-16 with a byte-order mark, spreadsheets write UTF-8 with
one, older exports write Windows-1252; all of them may use CRLF. ``open_text`` detects the
encoding from the byte-order mark (UTF-8, UTF-16 LE/BE, UTF-32 LE/BE), else from the NUL
pattern of BOM-less UTF-16, else UTF-8 when the first 64 KiB decode as UTF-8, else
Windows-1252. ``open_utf8`` gives the same text as UTF-8 bytes (for the JSON parser).
Hash values are ASCII in every encoding, so a wrong guess can only garble names and notes,
never a hash: undecodable bytes become U+FFFD instead of failing the import.
"""

from __future__ import annotations

import codecs
import io
from typing import IO

_SNIFF = 64 * 1024

_BOMS = (  # longest first: the UTF-32 LE mark starts with the UTF-16 LE one
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def detect_encoding(head: bytes, *, whole: bool = False) -> str:
    """The encoding of a file that starts with ``head`` (a Python codec name); ``whole``
    when ``head`` is the entire file (then no character can be cut at its end)."""
    for bom, enc in _BOMS:
        if head.startswith(bom):
            return enc
    sample = head[:4096]
    if len(sample) >= 4:
        even, odd = sample[0::2].count(0), sample[1::2].count(0)
        # ASCII text in UTF-16 has a NUL in every other byte
        if odd > len(sample) // 4 and even == 0:
            return "utf-16-le"
        if even > len(sample) // 4 and odd == 0:
            return "utf-16-be"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # a UTF-8 character cut by the end of the sample is no evidence against UTF-8
        if whole or exc.reason != "unexpected end of data":
            return "cp1252"
    return "utf-8"


class _Borrowed(io.RawIOBase):
    """Reads ``fh`` (after ``head``, bytes already taken from it) and never closes it: the
    caller owns ``fh``, and a text wrapper being collected must not close it underneath."""

    def __init__(self, fh: IO[bytes], head: bytes = b"") -> None:
        self._fh, self._head = fh, head

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # noqa: ANN001 - a writable buffer
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._fh.read(len(b))
        b[: len(data)] = data
        return len(data)


def _peek(fh: IO[bytes]) -> tuple[str, io.BufferedReader]:
    """(encoding, a stream reading ``fh`` from where it was)."""
    head = fh.read(_SNIFF)
    if isinstance(head, str):
        raise TypeError("expected a binary stream")
    enc = detect_encoding(head, whole=len(head) < _SNIFF)
    return enc, io.BufferedReader(_Borrowed(fh, head))


def open_text(fh: IO[bytes] | IO[str]) -> IO[str]:
    """A text stream over ``fh`` (returned as is when it already is text), newlines kept
    for the csv module (``newline=""``). The caller closes ``fh``, which stays open when
    the result is closed or collected."""
    if isinstance(fh, io.TextIOBase):
        return fh
    enc, raw = _peek(fh)  # type: ignore[arg-type]
    return io.TextIOWrapper(raw, encoding=enc, errors="replace", newline="")


class _Utf8Bytes(io.RawIOBase):
    """UTF-8 bytes of a text stream (for parsers that take UTF-8 bytes only)."""

    def __init__(self, text: IO[str]) -> None:
        self._text, self._buf = text, b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # noqa: ANN001
        while not self._buf:
            chunk = self._text.read(16 * 1024)
            if not chunk:
                return 0
            self._buf = chunk.encode("utf-8")
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def open_utf8(fh: IO[bytes]) -> IO[bytes]:
    """``fh`` as UTF-8 bytes without a byte-order mark, transcoding when needed."""
    enc, raw = _peek(fh)
    if enc == "utf-8":
        return raw
    if enc == "utf-8-sig":
        raw.read(len(codecs.BOM_UTF8))
        return raw
    return io.BufferedReader(_Utf8Bytes(open_text(raw)))
