"""Shared row handling for the readers."""

from __future__ import annotations

import re
from collections.abc import Sequence

from hashwatch.categories import Category, CategoryError, parse_category
from hashwatch.store import EntryIn

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
    from hashwatch.signals import get_signal_type

    try:
        st = get_signal_type(signal.strip().lower())
    except KeyError as exc:
        raise ValueError(str(exc).strip("'\"")) from None
    normalised = st.validate(value.strip())
    return EntryIn(
        signal_type=st.name,
        value=normalised,
        category=category,
        labels=tuple(x for x in (s.strip() for s in labels) if x),
        source_ref=source_ref,
        group_ref=group_ref,
        variant=variant,
    )


def category_or_none(text: str | None) -> Category | None:
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
