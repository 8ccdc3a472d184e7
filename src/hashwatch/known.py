"""What a known image becomes in a hash list: its entries, grouped by the file's SHA-256."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from hashwatch.categories import Category
from hashwatch.signals.vpdq import VpdqFeature, vpdq_group_ref
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
    vpdq = getattr(rec, "vpdq", None)
    if vpdq:
        # a known video: its vPDQ, one entry per frame (its first frame's PDQ is not a picture
        # of the list's, so no "pdq" entry)
        out.extend(vpdq_entries(vpdq, group_ref=group, category=category, source_ref=ref))
    elif getattr(rec, "pdq", None):
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


def vpdq_entries(
    features: Sequence[VpdqFeature],
    *,
    group_ref: str = "",
    category: Category | None = None,
    labels: tuple[str, ...] = (),
    source_ref: str = "",
) -> list[EntryIn]:
    """One known video's vPDQ → its list entries: one ``vpdq`` entry per frame
    (``"hex,quality,seconds"``), all sharing ``group_ref`` (default: a digest of the vPDQ).
    ``variant`` carries a digest of the group so that two videos of a list that share a frame
    (a common intro) each keep all of theirs. :func:`group_vpdq` reverses this."""
    group = group_ref or vpdq_group_ref(features)
    variant = "g:" + hashlib.sha256(group.encode()).hexdigest()[:24]
    return [EntryIn(signal_type="vpdq", value=str(f), category=category, labels=labels,
                    source_ref=source_ref, group_ref=group, variant=variant)
            for f in features]


def group_vpdq(rows: Iterable[Any]) -> Iterator[tuple[list[Any], list[VpdqFeature]]]:
    """Entry rows in id order → (the rows of one known video, its vPDQ) per video, for
    exporters: consecutive ``vpdq`` rows of one (list, group_ref) make one vPDQ hash."""
    batch: list[Any] = []
    for r in rows:
        if batch and (r.group_ref, r.list_id) != (batch[0].group_ref, batch[0].list_id):
            yield batch, [VpdqFeature.parse(b.value) for b in batch]
            batch = []
        batch.append(r)
    if batch:
        yield batch, [VpdqFeature.parse(b.value) for b in batch]


def local_features_for_record(rec: Any) -> tuple[str, bytes] | None:
    """(group_ref, local features) of a known image hashed with ``robust.known_extras``."""
    extras = getattr(rec, "extras", None) or {}
    if rec.sha256 and extras.get("local"):
        return rec.sha256, extras["local"]
    return None
