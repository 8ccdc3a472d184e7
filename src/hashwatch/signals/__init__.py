"""Signals: what hashwatch computes from a file, and the registry of signal types.

Built-in types: ``md5``, ``sha1``, ``sha256`` (exact), ``pdq`` (perceptual, distance <= 31,
quality >= 50), ``vpdq`` (video PDQ: one entry per frame, matched by frame-match percentages)
and ``photodna`` (stored and exported, not matchable without the licensed plug-in). Plug-ins
register more through the ``hashwatch.signals`` entry-point group.
"""

from hashwatch.signals.base import (
    ENTRY_POINT_GROUP,
    HexSignalType,
    InvalidSignalValue,
    SignalNotMatchable,
    SignalType,
    UnknownSignalType,
    get_signal_type,
    load_plugins,
    plugin_errors,
    register_signal_type,
    signal_types,
    unregister_signal_type,
)
from hashwatch.signals.crypto import MD5, SHA1, SHA256
from hashwatch.signals.pdq import (
    PDQ,
    hamming_hex,
    pdq_dihedral,
    pdq_dihedral_fast,
    pdq_hash,
    pdq_hash_fast,
)
from hashwatch.signals.photodna import PHOTODNA
from hashwatch.signals.vpdq import VPDQ

for _st in (MD5, SHA1, SHA256, PDQ, VPDQ, PHOTODNA):
    register_signal_type(_st, replace=True)
del _st

__all__ = [
    "ENTRY_POINT_GROUP",
    "MD5",
    "PDQ",
    "PHOTODNA",
    "SHA1",
    "SHA256",
    "VPDQ",
    "HexSignalType",
    "InvalidSignalValue",
    "SignalNotMatchable",
    "SignalType",
    "UnknownSignalType",
    "get_signal_type",
    "hamming_hex",
    "load_plugins",
    "pdq_dihedral",
    "pdq_dihedral_fast",
    "pdq_hash",
    "pdq_hash_fast",
    "plugin_errors",
    "register_signal_type",
    "signal_types",
    "unregister_signal_type",
]
