"""HMA (Hasher-Matcher-Actioner / OpenMediaMatch 2.x) names and shapes over hashwatch lists.

The HMA-compatible routes (:mod:`hashwatch.service.routes.hma`) speak HMA's words; this
module maps them onto hashwatch's:

- a **bank** is a hash list. ``matching_enabled_ratio`` is 1.0 for an enabled list and 0.0
  for a disabled one (hashwatch lists are on or off: HMA's partial ratios are refused).
- a bank's **content** is a group of entries of one list: the entries that share a
  ``group_ref`` (one known picture: its MD5/SHA-1/SHA-256, its PDQ and the PDQ views the
  robust matcher adds). Its ``bank_content_id`` is the id of the group's first entry, so
  it never changes while the group lives; an entry without a group is content on its own.
- **signal types** keep hashwatch's names (``pdq``, ``md5``, ``sha1``, ``sha256``, plug-ins);
  HMA's ``video_md5`` (the MD5 of a video file) is read as ``md5``.
- HMA's content **metadata** maps to the entries: ``content_id`` is the entries'
  ``source_ref``; ``content_uri``, ``json`` and the ``note`` are kept as labels prefixed
  ``hma.`` (see :func:`metadata_labels`).

Source of the shapes: HMA's API page (facebook/ThreatExchange, website/content/hma/api.md)
and its OpenAPI schemas (hasher-matcher-actioner/src/OpenMediaMatch/schemas/*.py).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from hashwatch.store import EntryRow, ListInfo, Store
from hashwatch.store.schema import GROUPED, entries, hash_lists

BANK_NAME_RE = re.compile(r"[A-Z_][A-Z0-9_]*")  # HMA's rule for names it creates
ALIASES = {"video_md5": "md5"}  # HMA signal type name -> hashwatch's
CONTENT_TYPES = ("photo", "video")  # HMA's multipart field names = content types
NO_DISTANCE = "-"  # HMA's distance text for a match that has no distance (exact hashes)
NOTE_MAX = 255  # HMA's limit on a content note
LABEL_PREFIX = "hma."
JSON_MAX = 8000  # characters of a content's ``json`` metadata kept as a label


class HmaError(Exception):
    """Bad input in HMA's terms: answered as ``{"message": ...}`` with ``status`` (400)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.status = message, status


# -- banks -------------------------------------------------------------------------------
def bank_json(info: ListInfo) -> dict[str, Any]:
    """A list as HMA's ``BankConfig``: ``{"name", "matching_enabled_ratio"}``."""
    return {"name": info.name, "matching_enabled_ratio": 1.0 if info.enabled else 0.0}


def enabled_from(enabled: bool | None, ratio: float | None) -> bool | None:
    """HMA's ``enabled`` / ``enabled_ratio`` pair as hashwatch's on/off (None = unchanged).
    Raises :class:`HmaError` for a ratio strictly between 0 and 1."""
    if ratio is not None:
        if ratio not in (0.0, 1.0):
            raise HmaError("hashwatch lists are on or off: enabled_ratio must be 0 or 1 "
                           "(partial matching ratios are not supported)")
        return ratio == 1.0
    return enabled


def existing_banks(store: Store, names: Iterable[str]) -> list[str]:
    """Those of ``names`` that are lists (not deleted), in the order given. HMA ignores an
    unknown bank in a ``banks=`` filter instead of failing the lookup."""
    wanted = list(dict.fromkeys(n for n in names if n))
    if not wanted:
        return []
    q = sa.select(hash_lists.c.name).where(hash_lists.c.name.in_(wanted),
                                            hash_lists.c.deleted_at.is_(None))
    with store.engine.connect() as conn:
        found = {r.name for r in conn.execute(q)}
    return [n for n in wanted if n in found]


def split_banks(text: str | None) -> list[str] | None:
    """HMA's comma-separated ``banks`` parameter (None = every bank)."""
    if text is None:
        return None
    return [b.strip() for b in text.split(",") if b.strip()]


# -- signal types ------------------------------------------------------------------------
def signal_type(name: str, *, matchable: bool = False) -> Any:
    """The hashwatch ``SignalType`` for an HMA signal type name; :class:`HmaError` when
    there is none (or, with ``matchable``, when its values cannot be matched here)."""
    from hashwatch.signals import UnknownSignalType, get_signal_type

    key = name.strip().lower()
    try:
        st = get_signal_type(ALIASES.get(key, key))
    except (UnknownSignalType, KeyError):
        raise HmaError(f"No such SignalType '{name[:64]}'") from None
    if matchable and not lookup_type(st):
        raise HmaError(f"SignalType '{name[:64]}' is not enabled for lookups (kept in lists; "
                       "matched by hash value: exact hashes and pdq)")
    return st


def lookup_type(st: Any) -> bool:
    """Whether a hash value of this type can be looked up (as on ``/v1/match/hashes``):
    exact hashes and PDQ. PhotoDNA without its plug-in, and vPDQ (a video matches by frame
    percentages, through uploads) are kept in banks but not looked up by value."""
    return st.matchable and (st.exact or st.name == "pdq")


def lookup_signal_types() -> list[str]:
    """The signal type names lookups accept, HMA aliases included, sorted."""
    from hashwatch.signals import signal_types

    names = {n for n, st in signal_types().items() if lookup_type(st)}
    names |= {a for a, target in ALIASES.items() if target in names}
    return sorted(names)


def validate_value(st: Any, value: str, hma_name: str) -> str:
    """A signal value in its canonical form; :class:`HmaError` (HMA's wording) if bad."""
    from hashwatch.signals import InvalidSignalValue

    try:
        return st.validate(value)
    except (InvalidSignalValue, ValueError, TypeError) as exc:
        raise HmaError(f"invalid signal: Invalid {hma_name[:64]} hash: {exc}") from None


def compare(st: Any, a: str, b: str) -> list[Any]:
    """HMA's comparison result ``[match, similarity]``: ``[bool, {"distance": d}]`` for a
    distance-based type (PDQ: Hamming bits, match within the type's threshold), ``[bool,
    {}]`` for an exact one."""
    if st.exact:
        return [a == b, {}]
    d = st.distance(a, b)
    return [d <= st.threshold, {"distance": d}]


def upload_signals(hashes: Mapping[str, Any], *, video: bool, min_quality: int,
                   types: Sequence[str] | None = None) -> dict[str, str]:
    """HMA's hash answer (signal type -> value) for an upload's hashes (the service's
    ``hash_dict``). A photo gives ``pdq``, ``md5``, ``sha1``, ``sha256``; a video
    ``video_md5``, ``sha1``, ``sha256`` and ``vpdq`` (the reference's ``vpdq_to_json`` form,
    as python-threatexchange's vPDQ signal type writes it). Like HMA, a PDQ below the quality
    floor is ``""``. ``types`` keeps only those names (HMA's ``types=``; unknown ones are an
    error)."""
    from hashwatch.signals.vpdq import VpdqFeature, format_vpdq

    out: dict[str, str] = {}
    if not video and hashes.get("pdq"):
        q = hashes.get("pdq_quality")
        out["pdq"] = hashes["pdq"] if q is None or q >= min_quality else ""
    if video and hashes.get("vpdq"):
        out["vpdq"] = format_vpdq(VpdqFeature.parse(f) for f in hashes["vpdq"])
    out["video_md5" if video else "md5"] = hashes["md5"]
    out["sha1"] = hashes["sha1"]
    out["sha256"] = hashes["sha256"]
    if types is None:
        return out
    picked = {}
    for t in types:
        if t not in out:
            raise HmaError(f"signal type '{t[:64]}' doesn't exist or is disabled")
        picked[t] = out[t]
    if not picked:
        raise HmaError("empty signal type selection")
    return picked


def split_types(text: str | None) -> list[str] | None:
    """HMA's comma-separated ``types`` parameter (None = every type of the content)."""
    if text is None:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def distance_text(match: Mapping[str, Any]) -> str:
    """A hashwatch match's distance as HMA writes it: Hamming bits as text for PDQ, ``-``
    for an exact hash or a keypoint match (neither has a bit distance)."""
    if match.get("exact") or match.get("distance", -1) < 0:
        return NO_DISTANCE
    return str(match["distance"])


# -- content: groups of entries ------------------------------------------------------------
def content_ids(store: Store, entry_ids: Sequence[int]) -> dict[int, int]:
    """entry id -> its content's id (the first entry of its group in its list; the entry
    itself when it has no group). Two queries, on the (list_id, group_ref) index."""
    rows = store.get_entries(sorted(set(entry_ids)), active_only=False)
    groups = sorted({(r.list_id, r.group_ref) for r in rows.values() if r.group_ref})
    first: dict[tuple[int, str], int] = {}
    with store.engine.connect() as conn:
        for i in range(0, len(groups), 200):
            part = groups[i:i + 200]
            q = (sa.select(entries.c.list_id, entries.c.group_ref, sa.func.min(entries.c.id))
                 .where(sa.tuple_(entries.c.list_id, entries.c.group_ref).in_(part),
                        GROUPED)
                 .group_by(entries.c.list_id, entries.c.group_ref))
            first.update({(r[0], r[1]): r[2] for r in conn.execute(q)})
    return {eid: (first.get((r.list_id, r.group_ref), eid) if r.group_ref else eid)
            for eid, r in rows.items()}


def content_members(store: Store, list_id: int, content_id: int) -> list[EntryRow]:
    """The live entries of one content of one list, in id order ([] when there is no such
    content, or all its entries were removed)."""
    first = store.get_entries([content_id], active_only=False).get(content_id)
    if first is None or first.list_id != list_id:
        return []
    if not first.group_ref:
        return [first] if first.removed_at is None else []
    with store.engine.connect() as conn:
        ids = [r.id for r in conn.execute(
            sa.select(entries.c.id).where(entries.c.list_id == list_id,
                                          entries.c.group_ref == first.group_ref,
                                          GROUPED)
            .order_by(entries.c.id))]
    if not ids or ids[0] != content_id:
        return []  # an entry of someone else's content, not a content id
    rows = store.get_entries(ids, active_only=False)
    return [rows[i] for i in ids if i in rows and rows[i].removed_at is None]


def content_json(info: ListInfo, members: Sequence[EntryRow], *, include_signals: bool,
                 include_metadata: bool) -> dict[str, Any]:
    """HMA's ``BankContentResponse`` for a content: ``{"id", "disable_until_ts": 1,
    "original_media_uri": null, "bank", ["signals"], ["metadata"], ["note"]}``; absent keys
    as HMA leaves them out. ``signals`` holds each signal type's full-picture value (the
    robust matcher's extra PDQ views are not HMA signals); a known video's frames are one
    ``vpdq`` value (reference JSON) and its MD5 is ``video_md5``, as HMA names them."""
    from hashwatch.formats._common import vpdq_runs

    out: dict[str, Any] = {"id": members[0].id if members else None,
                           "disable_until_ts": 1, "original_media_uri": None,
                           "bank": bank_json(info)}
    if include_signals:
        # the first value of each type; a video's frames folded as the list writers fold them
        sigs: dict[str, str] = {}
        for item in vpdq_runs(iter(members)):
            if isinstance(item, tuple):
                sigs.setdefault("vpdq", item[1])
            elif not item.variant:
                sigs.setdefault(item.signal_type, item.value)
        if "vpdq" in sigs and "md5" in sigs:
            sigs["video_md5"] = sigs.pop("md5")
        if sigs:
            out["signals"] = dict(sorted(sigs.items()))
    meta, note = metadata_from(members)
    if include_metadata and meta:
        out["metadata"] = meta
    if note:
        out["note"] = note
    return out


def group_for_signals(signals: Mapping[str, str]) -> str:
    """The group of content added as signal values: its SHA-256 when one is given (the
    same group a file upload of it would make), else a digest of the values."""
    if signals.get("sha256"):
        return signals["sha256"]
    text = "\n".join(f"{k}:{v}" for k, v in sorted(signals.items()))
    return "hma:" + hashlib.sha256(text.encode()).hexdigest()[:40]


def content_id_of_group(store: Store, list_id: int, group: str) -> int | None:
    """The id of a group's first entry in a list (None when the group has none)."""
    with store.engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.min(entries.c.id)).where(entries.c.list_id == list_id,
                                                      entries.c.group_ref == group,
                                                      GROUPED)
        ).scalar_one_or_none()


def entry_ids_for_values(store: Store, list_id: int, pairs: Iterable[tuple[str, str]]
                         ) -> list[int]:
    """Ids of the live full-picture entries of a list holding these (signal, value)."""
    out: list[int] = []
    with store.engine.connect() as conn:
        for sig, value in pairs:
            out.extend(r.id for r in conn.execute(
                sa.select(entries.c.id).where(
                    entries.c.list_id == list_id, entries.c.signal_type == sig,
                    entries.c.value == value, entries.c.variant == "",
                    entries.c.removed_at.is_(None)).order_by(entries.c.id).limit(1)))
    return out


# -- metadata and note as labels -------------------------------------------------------------
def check_note(note: Any) -> str | None:
    """HMA's note rule: a string of at most 255 characters (empty = none)."""
    if not note:
        return None
    if not isinstance(note, str):
        raise HmaError("note should be a string")
    if len(note) > NOTE_MAX:
        raise HmaError("note must be at most 255 characters")
    return note


def check_metadata(raw: Any) -> dict[str, Any] | None:
    """HMA's ``BankedContentMetadata``: an object with optional ``content_id``,
    ``content_uri`` (strings) and ``json`` (an object); other keys are refused."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise HmaError("metadata should be a json object")
    raw = {k: v for k, v in raw.items() if k != "collab"}  # HMA drops it too
    extra = sorted(set(raw) - {"content_id", "content_uri", "json"})
    if extra:
        raise HmaError(f"Invalid metadata: unexpected field(s) {', '.join(extra)[:200]}")
    for k in ("content_id", "content_uri"):
        if raw.get(k) is not None and not isinstance(raw[k], str):
            raise HmaError(f"Invalid metadata: {k} must be a string")
    if raw.get("json") is not None:
        if not isinstance(raw["json"], dict):
            raise HmaError("Invalid metadata: json must be an object")
        if len(json.dumps(raw["json"])) > JSON_MAX:
            raise HmaError(f"Invalid metadata: json over {JSON_MAX} characters")
    if raw.get("content_id") and len(raw["content_id"]) > 500:
        raise HmaError("Invalid metadata: content_id over 500 characters")
    return {k: v for k, v in raw.items() if v is not None} or None


def metadata_labels(meta: Mapping[str, Any] | None, note: str | None) -> tuple[str, ...]:
    """Labels that keep what hashwatch has no column for: ``hma.content_uri=``,
    ``hma.json=`` (compact JSON) and ``hma.note=``."""
    out = []
    if meta and meta.get("content_uri"):
        out.append(f"{LABEL_PREFIX}content_uri={meta['content_uri']}")
    if meta and meta.get("json") is not None:
        out.append(f"{LABEL_PREFIX}json=" + json.dumps(meta["json"], separators=(",", ":"),
                                                         sort_keys=True, ensure_ascii=False))
    if note:
        out.append(f"{LABEL_PREFIX}note={note}")
    return tuple(out)


def metadata_from(members: Sequence[EntryRow]) -> tuple[dict[str, Any] | None, str | None]:
    """(HMA metadata, note) of a content, read back from its entries' ``source_ref`` and
    ``hma.`` labels (the first entry that has each wins)."""
    meta: dict[str, Any] = {}
    note = None
    for e in members:
        if e.source_ref and "content_id" not in meta:
            meta["content_id"] = e.source_ref
        for label in e.labels:
            key, sep, value = label.partition("=")
            if not sep or not key.startswith(LABEL_PREFIX):
                continue
            key = key[len(LABEL_PREFIX):]
            if key == "content_uri" and key not in meta:
                meta[key] = value
            elif key == "json" and key not in meta:
                try:
                    meta[key] = json.loads(value)
                except ValueError:
                    continue
            elif key == "note" and note is None:
                note = value
    return (meta or None), note


# -- index status ------------------------------------------------------------------------------
class LiveCounts:
    """Live entries per signal type, cached for ``ttl`` seconds per worker: HMA's index
    status is polled by health checks, and a count over tens of millions of rows is not
    free."""

    def __init__(self, ttl: float = 60.0) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._at = 0.0
        self._counts: dict[str, int] = {}

    def get(self, store: Store) -> dict[str, int]:
        with self._lock:
            if time.monotonic() - self._at > self.ttl:
                q = (sa.select(entries.c.signal_type, sa.func.count())
                     .where(entries.c.removed_at.is_(None))
                     .group_by(entries.c.signal_type))
                with store.engine.connect() as conn:
                    self._counts = {r[0]: r[1] for r in conn.execute(q)}
                self._at = time.monotonic()
            return dict(self._counts)


__all__ = [
    "ALIASES", "BANK_NAME_RE", "CONTENT_TYPES", "NO_DISTANCE", "HmaError", "LiveCounts",
    "bank_json", "check_metadata", "check_note", "compare", "content_id_of_group",
    "content_ids", "content_json", "content_members", "distance_text", "enabled_from",
    "entry_ids_for_values", "existing_banks", "group_for_signals", "lookup_signal_types",
    "lookup_type",
    "metadata_from", "metadata_labels", "signal_type", "split_banks", "split_types",
    "upload_signals", "validate_value",
]
