"""Shared row handling for the readers."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import IO

from hashwatch.categories import Category, CategoryError, parse_category
from hashwatch.formats import RowError
from hashwatch.store import EntryIn, EntryRow
from hashwatch.store.guards import text_problem

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
    try:
        st = _signal_type(signal.strip().lower())
    except KeyError as exc:
        raise ValueError(str(exc).strip("'\"")) from None
    normalised = st.validate(value.strip())
    for name, text in (("source_ref", source_ref), ("group_ref", group_ref),
                       ("variant", variant), *(("label", x) for x in labels)):
        problem = text_problem(text)
        if problem:  # a bad row, reported with its line, not a failed import
            raise ValueError(f"{name} {problem}")
    return EntryIn(
        signal_type=st.name,
        value=normalised,
        category=category,
        # this runs once per row of a 20M-line import: skip the generator when there are none
        labels=tuple(x for x in (s.strip() for s in labels) if x) if labels else (),
        source_ref=source_ref,
        group_ref=group_ref,
        variant=variant,
    )


def make_entries(signal: str, value: str, **kw: object) -> list[EntryIn]:
    """:func:`make_entry`, except that a whole vPDQ hash (a video's frames, in any of the
    reference's interchange forms) becomes one ``vpdq`` entry per frame
    (:func:`hashwatch.known.vpdq_entries`, grouped by ``group_ref`` or a digest)."""
    if signal.strip().lower() == "vpdq" and value.strip()[:1] in ("[", "{"):
        from hashwatch.known import vpdq_entries
        from hashwatch.signals.vpdq import parse_vpdq

        labels = kw.pop("labels", ())
        kw.pop("variant", None)
        return vpdq_entries(parse_vpdq(value), labels=tuple(  # type: ignore[arg-type]
            x for x in (s.strip() for s in labels) if x), **kw)  # type: ignore[union-attr]
    return [make_entry(signal, value, **kw)]  # type: ignore[arg-type]


def vpdq_runs(rows: Iterator[EntryRow]) -> Iterator[EntryRow | tuple[list[EntryRow], str]]:
    """Rows in id order, with each known video's consecutive ``vpdq`` rows folded into one
    ``(rows, reference JSON)`` item: writers export one vPDQ value per video."""
    from hashwatch.signals.vpdq import VpdqFeature, format_vpdq

    run: list[EntryRow] = []
    for e in rows:
        if run and (e.signal_type != "vpdq" or (e.list_id, e.group_ref) != (
                run[0].list_id, run[0].group_ref)):
            yield run, format_vpdq(VpdqFeature.parse(r.value) for r in run)
            run = []
        if e.signal_type == "vpdq":
            run.append(e)
        else:
            yield e
    if run:
        yield run, format_vpdq(VpdqFeature.parse(r.value) for r in run)


def _signal_type(name: str):  # noqa: ANN202 - a SignalType
    # imported on first use (keeps hashwatch.formats light to import), then bound here
    global _signal_type
    from hashwatch.signals import get_signal_type

    _signal_type = get_signal_type
    return get_signal_type(name)


def category_or_none(text: str | None) -> Category | None:
    """``SCHEME:CODE`` as a Category; None for an empty text; ValueError if malformed."""
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


# Column names as partner tools write them ("MD5 Hash", "Image ID", "SHA-1", "PhotoDNA
# Hash"...), compared after lower-casing and dropping everything but letters and digits.
_ALIASES: dict[str, tuple[str, ...]] = {
    "md5": ("md5", "md5hash", "hashmd5", "md5sum", "md5value", "md5digest"),
    "sha1": ("sha1", "sha1hash", "hashsha1", "sha1sum", "sha1value", "sha1digest"),
    "sha256": ("sha256", "sha256hash", "hashsha256", "sha256sum", "sha256value", "sha2"),
    "pdq": ("pdq", "pdqhash", "hashpdq", "pdqvalue"),
    "photodna": ("photodna", "photodnahash", "pdna", "photodnavalue", "hashphotodna"),
    "imageid": ("imageid", "id", "mediaid", "imageref", "imagenumber", "fileid", "itemid"),
    "category": ("category", "categoryid", "cat", "classification", "legalcategory"),
    "category_scheme": ("categoryscheme", "scheme"),
    "category_code": ("categorycode",),
    "signal_type": ("signaltype", "signal", "hashtype", "hashname"),
    "value": ("value", "hashvalue", "hash"),
    "labels": ("labels", "label", "tags"),
    "source_ref": ("sourceref", "ref", "reference", "source"),
    "group_ref": ("groupref", "group"),
    "variant": ("variant",),
    "filename": ("filename", "file", "name", "path", "filepath"),
}
_CANONICAL = {alias: col for col, aliases in _ALIASES.items() for alias in aliases}
_NOT_ALNUM = re.compile(r"[^0-9a-z]+")
DELIMITERS = (",", ";", "\t", "|")


def column_name(header: str) -> str:
    """The canonical name of a header cell ("MD5 Hash" -> "md5", "Image ID" -> "imageid");
    unknown names are kept, lower-cased with only letters and digits."""
    key = _NOT_ALNUM.sub("", header.strip().lower())
    return _CANONICAL.get(key, key)


def _split_header(line: str, delimiter: str) -> list[str]:
    return next(csv.reader([line], delimiter=delimiter), [])


def sniff_delimiter(header_line: str, known: Collection[str]) -> str:
    """The delimiter (one of , ; tab |) that splits the header into the most columns
    hashwatch knows; ties go to the one giving more columns, then to the comma."""
    best, best_score = ",", (-1, -1)
    for d in DELIMITERS:
        names = [column_name(h) for h in _split_header(header_line, d)]
        score = (sum(1 for n in names if n in known), len(names))
        if score > best_score:
            best, best_score = d, score
    return best


def csv_rows(
    fh: IO[str], what: str, known: Collection[str] = ()
) -> tuple[list[str], Iterator[tuple[int, dict[str, str]] | RowError]]:
    """Read a delimited file with a header row: (canonical column names, rows), each row
    ``(line number, {column: cell})`` or a ``RowError`` (more non-empty fields than the
    header has columns; a row the csv module cannot read, e.g. a field over its size
    limit). The delimiter is sniffed from the header (``sniff_delimiter``; ``known`` are the
    canonical columns the caller understands); unnamed header cells, e.g. from trailing
    delimiters, are ignored; blank lines are skipped. Raises ``FormatError`` when there is
    no header."""
    from hashwatch.formats import FormatError

    header_line = ""
    for header_line in fh:
        if header_line.strip():
            break
    if not header_line.strip():
        raise FormatError(f"empty {what} file (a header row is required)")
    delimiter = sniff_delimiter(header_line, set(known) or set(_ALIASES))
    rd = csv.reader(itertools.chain([header_line], fh), delimiter=delimiter)
    names = [column_name(h) for h in next(rd)]
    named = [(i, n) for i, n in enumerate(names) if n]
    width = len(names)

    def rows() -> Iterator[tuple[int, dict[str, str]] | RowError]:
        while True:
            try:
                cells = next(rd)
            except StopIteration:
                return
            except csv.Error as exc:
                yield RowError(rd.line_num, f"unreadable row: {exc}")
                continue
            if not any(c.strip() for c in cells):
                continue
            if len(cells) > width and any(c.strip() for c in cells[width:]):
                yield RowError(rd.line_num, "more fields than the header")
                continue
            yield rd.line_num, {n: (cells[i] if i < len(cells) else "") for i, n in named}

    return [n for _i, n in named], rows()


def wide_entries(
    row: Mapping[str, str | None],
    columns: Mapping[str, str],
    *,
    line: int,
    category: Category | None,
    source_ref: str,
    group_ref: str = "",
    labels: Sequence[str] = (),
) -> list[EntryIn | RowError]:
    """Entries of a row with one column per hash (``columns``: column -> signal type); all
    of a row's hashes share one group (the given one, else the first hash). A malformed
    cell is a ``RowError`` (its message names the signal type) and never costs the row its
    other hashes."""
    cells = [(sig, (row.get(col) or "").strip()) for col, sig in columns.items()]
    cells = [(sig, v) for sig, v in cells if v]
    if not cells:
        return [RowError(line, "no hash in this row")]
    out: list[EntryIn | RowError] = []
    group = group_ref
    for sig, v in cells:
        try:
            # a whole vPDQ value (one video) is one entry per frame
            es = make_entries(sig, v, category=category, labels=labels, source_ref=source_ref,
                              group_ref=group)
        except ValueError as exc:
            out.append(RowError(line, str(exc)))  # names the signal type
            continue
        if not group:  # the row's first good hash names the group
            if es[0].signal_type == "vpdq":
                group = es[0].group_ref  # the vPDQ's own digest (its variants derive from it)
            else:
                group = es[0].value
                es = [dataclasses.replace(e, group_ref=group) for e in es]
        out.extend(es)
    return out
