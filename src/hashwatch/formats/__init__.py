"""Streaming import and export of hash lists.

Readers yield ``EntryIn`` for good rows and ``RowError`` (with a line or record number)
for bad ones, so a caller keeps the good rows and reports the bad. Nothing is loaded
whole: a file of millions of lines streams in constant memory.

Formats: ``csv`` (hashwatch's own), ``hashlines`` (one hash per line), ``vics``
(Project VIC / VICS JSON, 1.x and 2.0), ``icse`` (Interpol ICSE-style CSV export).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

from hashwatch.store import EntryIn, EntryRow

FORMATS = ("csv", "hashlines", "vics", "icse")


class FormatError(ValueError):
    """A file that cannot be read as the format at all (as opposed to one bad row)."""


@dataclass(frozen=True)
class RowError:
    line: int
    message: str
    unit: str = "line"

    def __str__(self) -> str:
        return f"{self.unit} {self.line}: {self.message}"


Reader = Callable[..., Iterator[EntryIn | RowError]]
Writer = Callable[[Iterator[EntryRow], IO[str]], int]


def _module(fmt: str):  # noqa: ANN202 - a format module
    import importlib

    modules = {"csv": "csvfmt", "hashlines": "hashlines", "vics": "vics", "icse": "icse"}
    if fmt not in modules:
        raise FormatError(f"unknown format {fmt!r} (choose one of {', '.join(FORMATS)})")
    return importlib.import_module(f"hashwatch.formats.{modules[fmt]}")


def reader(fmt: str) -> Reader:
    """``read(fh, *, signal=None, category=None)`` of a format."""
    return _module(fmt).read


def writer(fmt: str) -> Writer:
    """``write(rows, fh)`` of a format."""
    return _module(fmt).write


def __getattr__(name: str):  # noqa: ANN202 - lazily re-exported helpers of the readers
    if name in ("make_entry", "category_or_none"):
        from hashwatch.formats import _common

        return getattr(_common, name)
    raise AttributeError(f"module 'hashwatch.formats' has no attribute {name!r}")


__all__ = ["FORMATS", "FormatError", "RowError", "category_or_none", "make_entry", "reader",
           "writer"]
