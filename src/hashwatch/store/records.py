"""What the store's API takes and gives back: its errors, a hash list (:class:`ListInfo`), an
entry to add (:class:`EntryIn`) and a stored one (:class:`EntryRow`), an add's counts
(:class:`AddResult`), and the row conversions the row-by-row and bulk paths share."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from platformdirs import user_data_dir

from hashwatch.categories import Category


class StoreError(Exception):
    """A store operation that cannot be done as asked."""


class InvalidName(StoreError):
    """An identifier that the store refuses (control, bidi or path-like characters)."""


class ListNotFound(StoreError):
    """No (undeleted) hash list has that name; ``.name`` is the name asked for."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no hash list named {name!r} (see `hashwatch lists show`)")
        self.name = name


class ListExists(StoreError):
    """A hash list of that name already exists (deleted lists keep their names)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"a hash list named {name!r} already exists")
        self.name = name


def utcnow() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_db_path() -> Path:
    env = os.environ.get("HASHWATCH_DB")
    if env:
        return Path(env)
    return Path(user_data_dir("hashwatch", appauthor=False)) / "hashwatch.db"


@dataclass(frozen=True)
class ListInfo:
    """A hash list: its ``name``, provenance (``source``, ``jurisdiction``), the
    ``category_scheme`` its entries use, a ``version`` that grows with every change,
    ``enabled`` (a disabled list does not match), ISO-8601 UTC times, and ``entry_count``
    (live entries) when counted."""

    id: int
    name: str
    source: str
    jurisdiction: str
    category_scheme: str
    description: str
    version: int
    enabled: bool
    created_at: str
    updated_at: str
    deleted_at: str | None = None
    entry_count: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class EntryIn:
    """An entry to add. ``value`` must already be normalised by its signal type."""

    signal_type: str
    value: str
    category: Category | None = None
    labels: tuple[str, ...] = ()
    source_ref: str = ""
    group_ref: str = ""
    variant: str = ""


@dataclass(frozen=True)
class EntryRow:
    """A stored entry: one hash (``signal_type``, canonical ``value``) in one list, with its
    ``category``, ``labels``, ``source_ref``, the ``group_ref`` shared by one known picture's
    entries, its ``variant`` (a robust PDQ view, "" for the full picture), who added it
    when, and ``removed_at`` (None while live)."""

    id: int
    list_id: int
    list_name: str
    signal_type: str
    value: str
    category: Category | None
    labels: tuple[str, ...]
    source_ref: str
    group_ref: str
    variant: str
    added_at: str
    added_by: str
    removed_at: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "list": self.list_name,
            "signal_type": self.signal_type,
            "value": self.value,
            "category": str(self.category) if self.category else None,
            "labels": list(self.labels),
            "source_ref": self.source_ref,
            "group_ref": self.group_ref,
            "variant": self.variant,
            "added_at": self.added_at,
            "added_by": self.added_by,
        }


@dataclass
class SignalCounts:
    """What an add did for one signal type."""

    added: int = 0
    duplicates: int = 0
    restored: int = 0


@dataclass
class AddResult:
    """What an add did: entries ``added``, ``duplicates`` (already present), ``restored``
    (present but removed before), the new ``added_ids`` and the same counts per signal
    type in ``by_signal``."""

    added: int = 0
    duplicates: int = 0
    restored: int = 0
    added_ids: list[int] = field(default_factory=list)
    by_signal: dict[str, SignalCounts] = field(default_factory=dict)

    def count(self, signal_type: str, *, added: int = 0, duplicates: int = 0,
              restored: int = 0) -> None:
        c = self.by_signal.setdefault(signal_type, SignalCounts())
        c.added += added
        c.duplicates += duplicates
        c.restored += restored


def _labels_to_text(labels: Sequence[str]) -> str:
    return json.dumps(list(labels), ensure_ascii=False) if labels else ""


def _labels_from_text(text: str) -> tuple[str, ...]:
    return tuple(json.loads(text)) if text else ()


def entry_row(list_id: int, e: EntryIn, now: str, actor: str) -> tuple:
    """An entry as the row tuple of ``Store._INSERT_COLUMNS`` (one layout for the row-by-row
    and the bulk paths)."""
    cat = e.category
    return (
        list_id,
        e.signal_type,
        e.value,
        cat.scheme if cat else "",
        cat.code if cat else "",
        _labels_to_text(e.labels),
        e.source_ref,
        e.group_ref,
        e.variant,
        now,
        actor,
    )


def _row_to_entry(row: Any) -> EntryRow:
    cat = Category(row.category_scheme, row.category_code) if row.category_scheme else None
    return EntryRow(
        id=row.id,
        list_id=row.list_id,
        list_name=row.list_name,
        signal_type=row.signal_type,
        value=row.value,
        category=cat,
        labels=_labels_from_text(row.labels),
        source_ref=row.source_ref,
        group_ref=row.group_ref,
        variant=row.variant,
        added_at=row.added_at,
        added_by=row.added_by,
        removed_at=row.removed_at,
    )


def _list_info(row: Any, count: int | None = None) -> ListInfo:
    return ListInfo(
        id=row.id,
        name=row.name,
        source=row.source,
        jurisdiction=row.jurisdiction,
        category_scheme=row.category_scheme,
        description=row.description,
        version=row.version,
        enabled=bool(row.enabled),
        created_at=row.created_at,
        updated_at=row.updated_at,
        deleted_at=row.deleted_at,
        entry_count=count,
    )
