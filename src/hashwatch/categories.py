"""Legal categories as (scheme, code): never a bare number.

Known schemes are validated; unknown schemes round-trip unchanged so a partner's
list is never silently rewritten.
"""

from __future__ import annotations

from dataclasses import dataclass

# scheme -> {code: description}
SCHEMES: dict[str, dict[str, str]] = {
    "uk": {
        "A": "Category A (UK sentencing): most serious",
        "B": "Category B (UK sentencing)",
        "C": "Category C (UK sentencing): other indecent images",
    },
    "vics": {
        "0": "Non-pertinent",
        "1": "CAM (child abuse material)",
        "2": "Exploitive / age-difficult",
        "3": "CGI / animation",
        "4": "Comparison",
    },
    "ncmec": {
        "A1": "Prepubescent, sex act",
        "A2": "Prepubescent, lascivious exhibition",
        "B1": "Pubescent, sex act",
        "B2": "Pubescent, lascivious exhibition",
    },
}


class CategoryError(ValueError):
    """A category string or code that cannot be used."""


@dataclass(frozen=True, order=True)
class Category:
    """A legal category as (``scheme``, ``code``), written ``SCHEME:CODE``: ``uk:A|B|C``
    (UK sentencing), ``vics:0..4`` (Project VIC), ``ncmec:A1|A2|B1|B2``; unknown schemes
    round-trip unchanged. Make one with :func:`make_category` or :func:`parse_category`."""

    scheme: str
    code: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.code}"

    @property
    def known(self) -> bool:
        return self.scheme in SCHEMES

    @property
    def description(self) -> str | None:
        return SCHEMES.get(self.scheme, {}).get(self.code)


def make_category(scheme: str, code: str | int) -> Category:
    """Validate and normalise a category. Unknown schemes are kept as given."""
    scheme = scheme.strip().lower()
    code = str(code).strip()
    if not scheme or not code:
        raise CategoryError("category needs both a scheme and a code, e.g. uk:A")
    if any(c in scheme for c in ":,\n\r\t"):
        raise CategoryError(f"invalid category scheme {scheme!r}")
    if scheme in SCHEMES:
        codes = SCHEMES[scheme]
        norm = code.upper()
        if norm not in codes:
            raise CategoryError(
                f"unknown code {code!r} for scheme {scheme!r} (expected one of {', '.join(codes)})"
            )
        code = norm
    return Category(scheme, code)


def parse_category(text: str) -> Category:
    """Parse ``SCHEME:CODE`` (e.g. ``uk:A``, ``vics:1``, ``ncmec:B2``)."""
    if ":" not in text:
        raise CategoryError(f"category {text!r} must be SCHEME:CODE, e.g. uk:A or vics:1")
    scheme, _, code = text.partition(":")
    return make_category(scheme, code)
