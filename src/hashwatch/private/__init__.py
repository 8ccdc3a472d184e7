"""Private matching with threshold vouchers (after Apple's PSI system, 2021).

The device side is the public API here: :class:`VoucherClient` turns each image (or its
PDQ hash) into one fixed-size voucher against a server's :class:`PublicTable` (its commitment
chain verified against the server's pinned key, else :class:`TableRejected`), keeping its
per-account secret in a :class:`ClientState`:

    from hashwatch.private import ClientState, PublicTable, VoucherClient

    table = PublicTable.load("psi-table/", pinned_key)   # what the server publishes
    client = VoucherClient(table, ClientState.load("state.json"), pinned_key)
    voucher = client.voucher_for_pixels(rgb)   # bytes, sent with the image (or
                                               # voucher_for_hash(pdq_hex) for a hash alone)

``hashwatch.private.device.sync`` keeps the table current (monthly deltas, verified against
the chain and its witnesses).

Internal modules: ``sodium`` (crypto primitives), ``field`` (GF(p) arithmetic, Shamir,
detection), ``views`` (the device's PDQ views), ``keys`` (PDQ -> exact match keys, probes),
``fuse`` (table layout), ``build`` (one chunk), ``publish`` (set-up, deltas, removals,
rotation), ``chain`` (commitment chain, witnesses), ``table`` (epoch parameters, chunks, the
verified table), ``device`` (updates), ``client`` (vouchers), ``server`` (intake, threshold
detection, recovery, report), ``demo``. See docs/private-matching.md.
"""

from __future__ import annotations

# no import at run time beyond what first use needs: `import hashwatch` stays at interpreter cost
TYPE_CHECKING = False  # what typing.TYPE_CHECKING is; importing typing costs ~10 ms

_EXPORTS: dict[str, str] = {
    "VoucherClient": "hashwatch.private.client",
    "ClientState": "hashwatch.private.client",
    "PublicTable": "hashwatch.private.table",
    "TableRejected": "hashwatch.private.table",
}

__all__ = ["VoucherClient", "ClientState", "PublicTable", "TableRejected"]

if TYPE_CHECKING:
    from typing import Any

    from hashwatch.private.client import ClientState, VoucherClient
    from hashwatch.private.table import PublicTable, TableRejected


def __getattr__(name: str) -> Any:
    from importlib import import_module

    if name not in _EXPORTS:
        raise AttributeError(f"module 'hashwatch.private' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
