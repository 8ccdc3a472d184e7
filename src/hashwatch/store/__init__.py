"""Hash lists, their entries, a change feed and an append-only audit log.

SQLite (one file, WAL mode) is the embedded default; any SQLAlchemy URL works for the
same code path (PostgreSQL in production). The schema is managed by Alembic migrations,
applied on open.
"""

from __future__ import annotations

from hashwatch.store.connect import upgrade_notice
from hashwatch.store.core import Store
from hashwatch.store.guards import InvalidText
from hashwatch.store.records import (
    AddResult,
    EntryIn,
    EntryRow,
    InvalidName,
    ListExists,
    ListInfo,
    ListNotFound,
    SignalCounts,
    StoreError,
    default_db_path,
)

__all__ = [
    "AddResult",
    "SignalCounts",
    "EntryIn",
    "EntryRow",
    "InvalidName",
    "InvalidText",
    "ListExists",
    "ListInfo",
    "ListNotFound",
    "Store",
    "StoreError",
    "default_db_path",
    "upgrade_notice",
]
