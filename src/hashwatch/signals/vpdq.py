"""vPDQ, Meta's video PDQ: one PDQ hash per sampled frame, matched by frame-match percentages.

Algorithm and defaults follow the reference (facebook/ThreatExchange: ``vpdq/README.md`` and
``python-threatexchange/threatexchange/extensions/vpdq/vpdq_util.py``,
``vpdq_brute_matcher.py``, ``vpdq_index.py``):

* **Hash**: the PDQ of one frame per second (``seconds_per_hash = 1``), each with its quality
  (0-100) and timestamp (seconds). hashwatch computes the frames with PyAV and PDQ with
  pdqhash (:mod:`hashwatch.media`); the ``vpdq`` package's own hasher is the benchmark's anchor.
* **Match** two vPDQ hashes: drop frames of quality < 50 and repeated hashes on each side; the
  *query match percent* is the share of the query's frames within Hamming distance 31 of some
  frame of the compared video, the *compared match percent* the same the other way round. The
  reference index (``VPDQIndex``) calls it a match when query % >= 80 and compared % >= 0.

Interchange form (the reference's ``vpdq_to_json``): a JSON list of ``"<pdq hex>,<quality>,
<timestamp>"`` strings. Also read: the reference's older JSON object keyed by frame number
(``{"0": {"hash": ..., "quality": ..., "timestamp": ...}}``) and the ``vpdq`` tool's text
lines (``frame,hex,quality,timestamp``).

In a hash list one vPDQ hash is stored as one entry per frame (signal type ``vpdq``, value
``"<hex>,<quality>,<timestamp>"``) sharing a ``group_ref``: the frames then sit in the same
Hamming index as PDQ would, and the list's change feed keeps it current frame by frame.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from hashwatch.signals.base import InvalidSignalValue, SignalType

__all__ = [
    "VPDQ",
    "VPDQ_COMPARED_MATCH_PERCENT",
    "VPDQ_DISTANCE",
    "VPDQ_QUALITY",
    "VPDQ_QUERY_MATCH_PERCENT",
    "VpdqFeature",
    "VpdqSignalType",
    "format_vpdq",
    "match_percentages",
    "parse_vpdq",
    "prepare",
    "vpdq_group_ref",
]

# The reference's defaults (vpdq_util.py: VPDQ_DISTANCE_THRESHOLD, VPDQ_QUALITY_THRESHOLD,
# VPDQ_QUERY_MATCH_THRESHOLD_PERCENT, VPDQ_INDEX_MATCH_THRESHOLD_PERCENT).
VPDQ_DISTANCE: Final = 31
VPDQ_QUALITY: Final = 50
VPDQ_QUERY_MATCH_PERCENT: Final = 80.0
VPDQ_COMPARED_MATCH_PERCENT: Final = 0.0

_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class VpdqFeature:
    """One frame of a vPDQ hash: PDQ (64 hex), quality 0-100, timestamp in seconds."""

    pdq: str
    quality: int
    timestamp: float

    def __str__(self) -> str:
        return f"{self.pdq},{self.quality},{self.timestamp:.3f}"

    @classmethod
    def parse(cls, text: str) -> VpdqFeature:
        """``"hex,quality,timestamp"`` → feature. Raises :class:`InvalidSignalValue`."""
        parts = [p.strip() for p in str(text).split(",")]
        if len(parts) != 3:
            raise InvalidSignalValue(
                f"vpdq frame must be 'hex,quality,timestamp', got {len(parts)} field(s)")
        return cls.of(parts[0], parts[1], parts[2])

    @classmethod
    def of(cls, pdq: Any, quality: Any, timestamp: Any) -> VpdqFeature:
        hexv = str(pdq).strip().lower()
        if not _HEX.fullmatch(hexv):
            raise InvalidSignalValue("vpdq frame hash must be 64 hex characters")
        try:
            q = int(quality)
            ts = float(timestamp)
        except (TypeError, ValueError):
            raise InvalidSignalValue("vpdq quality must be an integer and timestamp a number"
                                     ) from None
        if not 0 <= q <= 100:
            raise InvalidSignalValue(f"vpdq quality must be 0-100, got {q}")
        if not ts >= 0 or ts != ts or ts == float("inf"):
            raise InvalidSignalValue(f"vpdq timestamp must be >= 0, got {timestamp}")
        return cls(hexv, q, round(ts, 3))


def parse_vpdq(value: str | Sequence[Any]) -> list[VpdqFeature]:
    """Any interchange form of a whole vPDQ hash → features in the given order.

    Accepts the reference JSON list of ``"hex,quality,timestamp"`` strings (or of objects with
    ``hash``/``pdq``, ``quality``, ``timestamp``), the older JSON object keyed by frame number,
    text with one ``hex,quality,timestamp`` or ``frame,hex,quality,timestamp`` per line (or
    ``;``-separated), or an already parsed list. Raises :class:`InvalidSignalValue`."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise InvalidSignalValue("empty vpdq value")
        if text[0] in "[{":
            try:
                data: Any = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InvalidSignalValue(f"vpdq value is not valid JSON: {exc.msg}") from None
        else:
            data = [x for x in re.split(r"[;\n]+", text) if x.strip()]
    else:
        data = list(value)
    if isinstance(data, dict):  # {"<frame>": {"hash", "quality", "timestamp"}}
        try:
            items = sorted(data.items(), key=lambda kv: int(kv[0]))
        except ValueError:
            raise InvalidSignalValue("vpdq JSON object keys must be frame numbers") from None
        data = [v for _k, v in items]
    if not isinstance(data, list) or not data:
        raise InvalidSignalValue("vpdq value must be a non-empty list of frames")
    out = []
    for item in data:
        if isinstance(item, VpdqFeature):
            out.append(item)
        elif isinstance(item, str):
            parts = item.split(",")
            if len(parts) == 4:  # the vpdq tool's "frame,hex,quality,timestamp"
                parts = parts[1:]
            out.append(VpdqFeature.parse(",".join(parts)))
        elif isinstance(item, dict):
            out.append(VpdqFeature.of(item.get("hash", item.get("pdq", item.get("hex"))),
                                      item.get("quality"), item.get("timestamp", 0)))
        elif isinstance(item, list | tuple) and len(item) == 3:
            out.append(VpdqFeature.of(*item))
        else:
            raise InvalidSignalValue(f"unreadable vpdq frame {str(item)[:40]!r}")
    return out


def format_vpdq(features: Iterable[VpdqFeature]) -> str:
    """Features → the reference interchange JSON (a list of ``"hex,quality,timestamp"``)."""
    return json.dumps([str(f) for f in features], separators=(",", ":"))


def vpdq_group_ref(features: Sequence[VpdqFeature]) -> str:
    """A stable id for one whole vPDQ hash (its frames' entries share it as ``group_ref``)
    when the list file gives none: ``vpdq:`` + SHA-256 of the interchange form, shortened."""
    return "vpdq:" + hashlib.sha256(format_vpdq(features).encode()).hexdigest()[:40]


def prepare(features: Iterable[VpdqFeature], quality: int = VPDQ_QUALITY) -> list[str]:
    """The frames the reference compares: quality >= ``quality``, each hash once, in order."""
    seen: dict[str, None] = {}
    for f in features:
        if f.quality >= quality:
            seen.setdefault(f.pdq, None)
    return list(seen)


def match_percentages(query: Iterable[VpdqFeature], compared: Iterable[VpdqFeature], *,
                      distance: int = VPDQ_DISTANCE, quality: int = VPDQ_QUALITY
                      ) -> tuple[float, float]:
    """(query match %, compared match %) of two vPDQ hashes, as the reference's brute-force
    matcher computes them (``match_VPDQ_hash_brute``; 0.0 for a side with no usable frame).
    O(n x m) popcounts in NumPy: for pairs and tests; lists are matched through an index."""
    import numpy as np

    q, c = prepare(query, quality), prepare(compared, quality)
    if not q or not c:
        return 0.0, 0.0
    qa = np.frombuffer(bytes.fromhex("".join(q)), np.uint8).reshape(-1, 32)
    ca = np.frombuffer(bytes.fromhex("".join(c)), np.uint8).reshape(-1, 32)
    d = np.unpackbits(qa[:, None, :] ^ ca[None, :, :], axis=2).sum(axis=2)
    close = d <= distance
    return (100.0 * close.any(axis=1).sum() / len(q), 100.0 * close.any(axis=0).sum() / len(c))


class VpdqSignalType(SignalType):
    """``vpdq``: one stored value is one frame ``"hex,quality,timestamp"``; a video's frames
    share a ``group_ref``. ``threshold`` is the per-frame Hamming distance (31); a video
    matches by the frame-match percentages above."""

    name = "vpdq"
    threshold = VPDQ_DISTANCE
    exact = False
    min_quality = VPDQ_QUALITY
    description = "vPDQ (video PDQ): PDQ of one frame per second, matched by frame percentages"

    def validate(self, value: str) -> str:
        return str(VpdqFeature.parse(value))

    def distance(self, a: str, b: str) -> int:
        return (int(a[:64], 16) ^ int(b[:64], 16)).bit_count()


VPDQ: Final = VpdqSignalType()
