"""hashwatch: recognise known images again, wherever they turn up.

The names below are the public API; the modules behind them are internal and may move.
Names are imported on first use, so ``import hashwatch`` stays as cheap as the interpreter
start (the command line starts no slower for it).

    import hashwatch

    with hashwatch.Store.open("hw.db") as store:          # SQLite file or SQLAlchemy URL
        store.create_list("known", source="partner X")
        hashwatch.lists.add_files(store, "known", ["known-images/"])
        matcher = hashwatch.Matcher(store)
        for result in matcher.match_files(["evidence/"]):
            for m in result.matches:
                print(result.path, m.list, m.ref, m.signal, m.distance)

The device side of private matching (vouchers) is :mod:`hashwatch.private`.
"""

from __future__ import annotations

# no import at run time beyond what first use needs: `import hashwatch` stays at interpreter cost
TYPE_CHECKING = False  # what typing.TYPE_CHECKING is; importing typing costs ~10 ms

__version__ = "0.1.0"

# public name -> the module that defines it (imported on first access)
_EXPORTS: dict[str, str] = {
    # hashing: bytes and files -> hashes
    "FileHashes": "hashwatch.hashing",
    "hash_file": "hashwatch.hashing",
    "hash_bytes": "hashwatch.hashing",
    "hash_many": "hashwatch.hashing",
    "iter_files": "hashwatch.hashing",
    "DecodedImage": "hashwatch.decode",
    "decode_image": "hashwatch.decode",
    # signal types
    "SignalType": "hashwatch.signals",
    "get_signal_type": "hashwatch.signals",
    "register_signal_type": "hashwatch.signals",
    "signal_types": "hashwatch.signals",
    "pdq_hash": "hashwatch.signals",
    "hamming_hex": "hashwatch.signals",
    # matching
    "Matcher": "hashwatch.matcher",
    "Match": "hashwatch.matcher",
    "MatchResult": "hashwatch.matcher",
    # the store: hash lists, entries, audit
    "Store": "hashwatch.store",
    "ListInfo": "hashwatch.store",
    "EntryIn": "hashwatch.store",
    "EntryRow": "hashwatch.store",
    "AddResult": "hashwatch.store",
    # categories
    "Category": "hashwatch.categories",
    "parse_category": "hashwatch.categories",
    "make_category": "hashwatch.categories",
    # errors
    "DecodeError": "hashwatch.decode",
    "StoreError": "hashwatch.store",
    "ListNotFound": "hashwatch.store",
    "ListExists": "hashwatch.store",
    "FormatError": "hashwatch.formats",
    "CategoryError": "hashwatch.categories",
    "InvalidSignalValue": "hashwatch.signals",
    "UnknownSignalType": "hashwatch.signals",
    "SignalNotMatchable": "hashwatch.signals",
}
# public submodules: list import/export/add, list file formats, private matching (device)
_SUBMODULES = ("lists", "formats", "private")

__all__ = [
    "__version__",
    "FileHashes",
    "hash_file",
    "hash_bytes",
    "hash_many",
    "iter_files",
    "DecodedImage",
    "decode_image",
    "SignalType",
    "get_signal_type",
    "register_signal_type",
    "signal_types",
    "pdq_hash",
    "hamming_hex",
    "Matcher",
    "Match",
    "MatchResult",
    "Store",
    "ListInfo",
    "EntryIn",
    "EntryRow",
    "AddResult",
    "Category",
    "parse_category",
    "make_category",
    "DecodeError",
    "StoreError",
    "ListNotFound",
    "ListExists",
    "FormatError",
    "CategoryError",
    "InvalidSignalValue",
    "UnknownSignalType",
    "SignalNotMatchable",
    "lists",
    "formats",
    "private",
]

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time names load on first use
    from typing import Any

    from hashwatch import formats, lists, private
    from hashwatch.categories import Category, CategoryError, make_category, parse_category
    from hashwatch.decode import DecodedImage, DecodeError, decode_image
    from hashwatch.formats import FormatError
    from hashwatch.hashing import FileHashes, hash_bytes, hash_file, hash_many, iter_files
    from hashwatch.matcher import Match, Matcher, MatchResult
    from hashwatch.signals import (
        InvalidSignalValue,
        SignalNotMatchable,
        SignalType,
        UnknownSignalType,
        get_signal_type,
        hamming_hex,
        pdq_hash,
        register_signal_type,
        signal_types,
    )
    from hashwatch.store import (
        AddResult,
        EntryIn,
        EntryRow,
        ListExists,
        ListInfo,
        ListNotFound,
        Store,
        StoreError,
    )


def __getattr__(name: str) -> Any:
    from importlib import import_module

    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = import_module(f"hashwatch.{name}")
    else:
        raise AttributeError(f"module 'hashwatch' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
