"""PhotoDNA values, kept so that lists carrying them lose nothing.

PhotoDNA (Microsoft) is proprietary and licensed: hashwatch cannot compute or compare it.
Yet ICSE and Project VIC exports carry a PhotoDNA hash beside the MD5/SHA-1/PDQ of nearly
every record, so the built-in ``photodna`` signal type *stores* the value (validated as
144 bytes, canonical lower-case hex), exports it and round-trips it, and says it is not
matchable. A licensed build plugs in through the ``hashwatch.signals`` entry-point group: a
plug-in signal type named ``photodna`` replaces this placeholder (see
:func:`hashwatch.signals.base.load_plugins`) and then matches.

Accepted spellings (all 144 bytes): 288 hex digits (ICSE CSV), base64 (192 characters, as
Project VIC JSON carries it), or 144 comma-separated byte values (0-255).
"""

from __future__ import annotations

import base64
import binascii
import re

from hashwatch.signals.base import InvalidSignalValue, SignalNotMatchable, SignalType

PHOTODNA_BYTES = 144
_HEX = re.compile(r"[0-9a-f]{288}")


class PhotoDNAPlaceholder(SignalType):
    """The stored-only ``photodna`` signal type (no distance without the licensed plug-in)."""

    name = "photodna"
    threshold = 0
    exact = False
    matchable = False
    placeholder = True
    description = "PhotoDNA 144-byte hash (stored and exported; matched only with a plug-in)"

    def validate(self, value: str) -> str:
        if not isinstance(value, str):
            raise InvalidSignalValue(f"photodna value must be a string, got {type(value).__name__}")
        v = value.strip()
        low = v.lower()
        if _HEX.fullmatch(low):
            return low
        if "," in v:
            try:
                data = bytes(int(x) for x in v.split(","))
            except ValueError:
                raise InvalidSignalValue(
                    "photodna byte list must be 144 numbers 0-255 separated by commas") from None
        else:
            try:
                data = base64.b64decode(v, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidSignalValue(
                    f"photodna value must be 288 hex digits, base64 or 144 comma-separated "
                    f"bytes (got {len(v)} characters)") from None
        if len(data) != PHOTODNA_BYTES:
            raise InvalidSignalValue(f"photodna value must be {PHOTODNA_BYTES} bytes, "
                                     f"got {len(data)}")
        return data.hex()

    def distance(self, a: str, b: str) -> int:
        raise SignalNotMatchable("photodna values are matched only with the licensed plug-in")


def photodna_base64(canonical: str) -> str:
    """The base64 spelling of a canonical (hex) PhotoDNA value, as Project VIC writes it."""
    return base64.b64encode(bytes.fromhex(canonical)).decode("ascii")


PHOTODNA = PhotoDNAPlaceholder()
