"""Project VIC / VICS JSON (OData): read 1.x (Cases → Media) and 2.0 (Media), write 2.0.

Each Media record carries MD5 / SHA1 (and SHA256 when present), a VICS ``Category``
(integer, absent = uncategorised) and ``AlternativeHashes`` such as
``{"HashName": "PDQ", "HashValue": "..."}``. Every hash in a record becomes an entry of
the same group, so a record round-trips. Categories of other schemes travel in ``Tags`` as
``scheme:code``; robust-matching variants travel as ``PDQ:<variant>`` alternative hashes; a
known video's vPDQ as one ``{"HashName": "vPDQ", "HashValue": "<reference JSON>"}``.

Parsing is event-driven (ijson), so a file of millions of records streams.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import IO, Any

import ijson

from hashwatch.categories import Category
from hashwatch.formats import FormatError, RowError
from hashwatch.formats._common import category_or_none, make_entries, vpdq_runs
from hashwatch.formats._text import open_utf8
from hashwatch.signals.photodna import photodna_base64
from hashwatch.store import EntryIn, EntryRow

ODATA_CONTEXT = (
    "http://github.com/VICSDATAMODEL/ProjectVic/DataModels/2.0.xml/hashwatch/$metadata#Media"
)
_DIRECT = {"MD5": "md5", "SHA1": "sha1", "SHA256": "sha256"}
_MEDIA = "value.item.Media.item"


class _Members(dict):
    """A JSON object that remembers member names given twice (RFC 8259 section 4: names
    SHOULD be unique, and readers differ on which value wins). A plain dict silently keeps the
    last one, so a record with two ``MD5`` or two ``AlternativeHashes`` would lose hashes
    without a word; ``duplicate_members`` (shared by a record's nested objects) says so."""

    def __init__(self, seen: list[str]) -> None:
        super().__init__()
        self.duplicate_members = seen

    def __setitem__(self, key: str, value: Any) -> None:
        if key in self:
            self.duplicate_members.append(key)
        super().__setitem__(key, value)


def _builder() -> Any:
    seen: list[str] = []
    return ijson.ObjectBuilder(map_type=lambda: _Members(seen))


def iter_media(fh: IO[bytes]) -> Iterator[dict[str, Any]]:
    """Yield Media objects of either layout without building a whole Case in memory. A
    Media object that names a member twice carries the names in ``duplicate_members``."""
    outer: Any = None
    inner: Any = None
    case_has_media = False
    seen_value = False
    try:
        for prefix, event, value in ijson.parse(fh, use_float=True):
            if inner is not None:
                inner.event(event, value)
                if event == "end_map" and prefix == _MEDIA:
                    yield inner.value
                    inner = None
                continue
            if event == "start_map" and prefix == _MEDIA:
                inner = _builder()
                inner.event(event, value)
                continue
            if prefix == "value" and event == "start_array":
                seen_value = True
            if outer is None:
                if event == "start_map" and prefix == "value.item":
                    outer = _builder()
                    outer.event(event, value)
                    case_has_media = False
                continue
            if prefix == "value.item.Media" or prefix.startswith("value.item.Media."):
                continue
            if event == "map_key" and prefix == "value.item" and value == "Media":
                case_has_media = True  # a 1.x Case: its Media are yielded one by one
                continue
            outer.event(event, value)
            if event == "end_map" and prefix == "value.item":
                if not case_has_media:
                    yield outer.value
                outer = None
    except ijson.JSONError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "parse error"
        raise FormatError(f"not valid VICS JSON: {first}") from None
    except UnicodeDecodeError as exc:
        raise FormatError(f"not valid VICS JSON (encoding): {exc}") from None
    if not seen_value:
        raise FormatError("not a VICS JSON file: no top-level 'value' array")


def media_category(media: dict[str, Any]) -> Category | None:
    cat = media.get("Category")
    if cat is not None and cat != "":
        if isinstance(cat, float) and cat.is_integer():
            cat = int(cat)
        return category_or_none(f"vics:{cat}")
    for tag in media.get("Tags") or []:
        if isinstance(tag, str) and ":" in tag:
            return category_or_none(tag)
    return None


def media_entries(
    media: dict[str, Any], default: Category | None = None, *, record: int = 0
) -> list[EntryIn | RowError]:
    """Entries of one Media record (all in one group), and a ``RowError`` for each hash
    that cannot be read; a bad or unknown hash never costs the record its other hashes.
    Raises ValueError when the record itself is unusable (not an object, no hash, a member
    named twice: which of the two values is meant cannot be told)."""
    if not isinstance(media, dict):
        raise ValueError("a Media record must be a JSON object")
    dup = getattr(media, "duplicate_members", None)
    if dup:
        names = ", ".join(sorted(set(dup)))
        raise ValueError(f"the record names {names} twice (JSON member names must be unique; "
                         "which value is meant is ambiguous, so none of its hashes is taken)")
    cat = media_category(media) or default
    media_id = media.get("MediaID")
    files = media.get("MediaFiles") or []
    ref = ""
    if files and isinstance(files[0], dict):
        ref = str(files[0].get("FileName") or files[0].get("FilePath") or "")
    cells: list[tuple[str, str, str]] = []  # (signal, value, variant)
    for key, sig in _DIRECT.items():
        if media.get(key):
            cells.append((sig, str(media[key]), ""))
    alts = media.get("AlternativeHashes") or []
    if not isinstance(alts, list):
        alts = [alts]
    for alt in alts:
        if not isinstance(alt, dict):
            cells.append(("", "", ""))
            continue
        sig, _, variant = str(alt.get("HashName") or "").partition(":")
        cells.append((sig.lower(), str(alt.get("HashValue") or ""), variant))
    if not cells:
        raise ValueError("Media record holds no hash")
    # the record's group: its MD5 (else SHA-1, else MediaID), spelled as stored
    group = str(media.get("MD5") or media.get("SHA1") or "").strip().lower() or str(
        media_id or "")
    labels = _metadata_labels(media)
    out: list[EntryIn | RowError] = []
    for sig, value, variant in cells:
        try:
            if not sig or not value:
                raise ValueError("an AlternativeHashes item needs a HashName and a HashValue")
            # a "vPDQ" alternative hash is a whole video (reference JSON): one entry per frame
            out.extend(make_entries(sig, value, category=cat, source_ref=ref,
                                    group_ref=group, variant=variant, labels=labels))
        except ValueError as exc:  # the message names the signal type
            out.append(RowError(record, str(exc), unit="record"))
    return out


# Exifs PropertyName -> metadata key (EXIF tag names, as hashwatch writes them, plus the
# spellings other exporters use for the same facts)
_EXIF_KEYS = {
    "make": "make", "model": "model", "bodyserialnumber": "serial", "serialnumber": "serial",
    "serial number": "serial", "software": "software", "datetimeoriginal": "taken",
    "capture time": "taken", "gpslatitude": "gps_lat", "gpslongitude": "gps_lon",
}
_FILE_TIMES = {"Created": "fs_created", "Written": "fs_modified", "Modified": "fs_modified",
               "Accessed": "fs_accessed"}


def media_metadata(media: dict[str, Any]) -> dict[str, Any]:
    """What a Media record says about the file beyond its hashes: ``Exifs`` rows
    (``{PropertyName, PropertyValue}``: make, model, serial, software, taken, gps_lat,
    gps_lon) and the first ``MediaFiles`` item's times (``Created``, ``Written``,
    ``Accessed`` -> fs_created, fs_modified, fs_accessed) and ``FilePath``. Unknown rows are
    ignored; GPS values that are not numbers are left out."""
    out: dict[str, Any] = {}
    for row in media.get("Exifs") or []:
        if not isinstance(row, dict):
            continue
        key = _EXIF_KEYS.get(str(row.get("PropertyName") or "").strip().lower())
        value = row.get("PropertyValue")
        if key is None or value in (None, "") or key in out:
            continue
        if key in ("gps_lat", "gps_lon"):
            try:
                out[key] = float(value)
            except (TypeError, ValueError):
                continue
        else:
            out[key] = str(value)
    files = media.get("MediaFiles") or []
    if files and isinstance(files[0], dict):
        for name, key in _FILE_TIMES.items():
            if files[0].get(name) and key not in out:
                out[key] = str(files[0][name])
        if files[0].get("FilePath"):
            out["path"] = str(files[0]["FilePath"])
    return out


def _metadata_labels(media: dict[str, Any]) -> tuple[str, ...]:
    """The recording device and date of a Media record, kept on its entries as labels
    (``device:MAKE | MODEL | serial=...``, ``taken:ISO``) so a list remembers them."""
    from hashwatch.metadata import device_key

    meta = media_metadata(media)
    out = []
    dev = device_key(meta)
    if dev:
        out.append(f"device:{dev}")
    if meta.get("taken"):
        out.append(f"taken:{meta['taken']}")
    return tuple(out)


def read(
    fh: IO[bytes], *, signal: str | None = None, category: Category | None = None
) -> Iterator[EntryIn | RowError]:
    """Entries of a VICS JSON file (1.x Cases -> Media or 2.0 Media), streamed, in any
    Unicode encoding (UTF-8 with or without BOM, UTF-16 as Windows tools write it)."""
    for n, media in enumerate(iter_media(open_utf8(fh)), start=1):
        try:
            yield from media_entries(media, category, record=n)
        except ValueError as exc:
            yield RowError(n, str(exc), unit="record")


def _media_from_group(media_id: int, group: list[EntryRow]) -> dict[str, Any]:
    rec: dict[str, Any] = {"MediaID": media_id}
    cats = {e.category for e in group if e.category}
    for c in sorted(cats):
        if c.scheme == "vics":
            rec["Category"] = int(c.code)
        else:
            rec.setdefault("Tags", []).append(str(c))
    alts = []
    for item in vpdq_runs(iter(group)):
        if isinstance(item, tuple):  # a known video's vPDQ frames: one alternative hash
            alts.append({"HashName": "vPDQ", "HashValue": item[1]})
            continue
        e = item
        direct = {v: k for k, v in _DIRECT.items()}.get(e.signal_type)
        if direct and not e.variant and direct not in rec:
            rec[direct] = e.value.upper()
        else:
            name, value = e.signal_type.upper(), e.value
            if e.signal_type == "photodna":  # Project VIC carries PhotoDNA as base64
                name, value = "PhotoDNA", photodna_base64(e.value)
            alts.append(
                {"HashName": f"{name}:{e.variant}" if e.variant else name, "HashValue": value}
            )
    if alts:
        rec["AlternativeHashes"] = alts
    if group[0].source_ref:
        rec["MediaFiles"] = [{"FileName": group[0].source_ref}]
    return rec


def write_records(records: Iterable[dict[str, Any]], fh: IO[str]) -> int:
    """Write Media records as a VICS 2.0 document, one record at a time."""
    fh.write('{"@odata.context": ' + json.dumps(ODATA_CONTEXT) + ', "value": [\n')
    n = 0
    for rec in records:
        fh.write((",\n" if n else "") + json.dumps(rec, ensure_ascii=False))
        n += 1
    fh.write("\n]}\n")
    return n


def _group(rows: Iterator[EntryRow]) -> Iterator[list[EntryRow]]:
    """Consecutive entries of one group_ref form one Media record."""
    current: list[EntryRow] = []
    for e in rows:
        if current and (not e.group_ref or e.group_ref != current[0].group_ref):
            yield current
            current = []
        current.append(e)
    if current:
        yield current


def write(rows: Iterator[EntryRow], fh: IO[str]) -> int:
    return write_records((_media_from_group(i, g) for i, g in enumerate(_group(rows), start=1)), fh)
