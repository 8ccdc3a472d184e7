"""What a known image becomes in a hash list: its entries, grouped by the file's SHA-256."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hashwatch.categories import Category
from hashwatch.store import EntryIn


def entries_for_record(
    rec: Any, *, category: Category | None = None, source_ref: str | None = None
) -> list[EntryIn]:
    """Entries for one hashed file (a ``FileHashes``): crypto hashes, then PDQ.

    The source reference is the file name (never the full path: it may name a case or a
    person); all entries of one file share the SHA-256 as ``group_ref``.
    """
    ref = source_ref if source_ref is not None else Path(str(rec.path)).name
    group = rec.sha256 or ""
    out = [
        EntryIn(
            signal_type=sig,
            value=getattr(rec, sig),
            category=category,
            source_ref=ref,
            group_ref=group,
        )
        for sig in ("md5", "sha1", "sha256")
        if getattr(rec, sig, None)
    ]
    if getattr(rec, "pdq", None):
        out.append(
            EntryIn(
                signal_type="pdq", value=rec.pdq, category=category, source_ref=ref, group_ref=group
            )
        )
        # extra views of the picture for the robust matcher (robust.known_extras)
        extras = getattr(rec, "extras", None) or {}
        out.extend(
            EntryIn(
                signal_type="pdq",
                value=value,
                category=category,
                source_ref=ref,
                group_ref=group,
                variant=variant,
            )
            for variant, value, _quality in extras.get("pdq_variants", ())
        )
    return out


def local_features_for_record(rec: Any) -> tuple[str, bytes] | None:
    """(group_ref, local features) of a known image hashed with ``robust.known_extras``."""
    extras = getattr(rec, "extras", None) or {}
    if rec.sha256 and extras.get("local"):
        return rec.sha256, extras["local"]
    return None
