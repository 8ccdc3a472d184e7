"""The device keeping its table current: fetch only what is new, verify it, then use it.

``sync`` reads the server's chain (``chain.json``), keeps the versions after the one the
device holds, fetches only the epoch parameters and chunks those versions name, and applies
them through :meth:`PublicTable.apply` (each version must extend the held head, each chunk
must match its signed digest, the last head must carry the witness quorum). Until all of it
checks, the device keeps matching against the version it had. The transport is a callable
``fetch(name) -> bytes`` (a folder, the service's ``/v1/private/files/{name}``, a CDN).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .chain import ChainRejected, SignedLink, WitnessPolicy
from .table import (
    CHAIN_FILE,
    PublicTable,
    TableRejected,
    chunk_name,
    params_name,
    save_chain,
)

Fetch = Callable[[str], bytes]


@dataclass
class SyncReport:
    """What one sync did: versions applied, files and bytes fetched, CPU seconds verifying."""

    from_version: int | None
    to_version: int
    fetched: list[tuple[str, int]] = field(default_factory=list)
    verify_cpu_s: float = 0.0

    @property
    def bytes_fetched(self) -> int:
        return sum(n for _, n in self.fetched)


def folder_fetch(directory: str | os.PathLike) -> Fetch:
    """Fetch from a folder (a copy of the server's public files)."""
    d = Path(directory)

    def fetch(name: str) -> bytes:
        if "/" in name or name.startswith("."):
            raise TableRejected(f"refused file name {name!r}")
        return (d / name).read_bytes()

    return fetch


def sync(local: str | os.PathLike, fetch: Fetch, server_pk: bytes,
         witnesses: WitnessPolicy | None = None, table: PublicTable | None = None
         ) -> tuple[PublicTable, SyncReport]:
    """Bring the device's copy in ``local`` up to the server's head. ``table``: the version
    the device holds (None: first sync, everything is fetched). Raises TableRejected and
    leaves ``table`` (and what it uses in ``local``) untouched when anything fails."""
    loc = Path(local)
    loc.mkdir(parents=True, exist_ok=True)
    report = SyncReport(table.version if table else None, table.version if table else -1)
    raw = fetch(CHAIN_FILE)
    report.fetched.append((CHAIN_FILE, len(raw)))
    try:
        links = [SignedLink.from_dict(d) for d in json.loads(raw)["links"]]
    except (ValueError, KeyError, TypeError, ChainRejected) as e:
        raise TableRejected(f"the server's chain is not readable ({e})") from e
    held = table.version if table else -1
    if table is not None:
        mine = {sl.link.version: sl.link.head for sl in table.links}
        for sl in links:
            if sl.link.version in mine and sl.link.head != mine[sl.link.version]:
                raise TableRejected(f"the server's version {sl.link.version} differs from the "
                                    "one this device holds (a fork)")
    new = [sl for sl in links if sl.link.version > held]
    if not new:
        return table, report  # type: ignore[return-value]
    head = new[-1].link
    needed = [] if table is not None and head.epoch == table.epoch else [params_name(head.epoch)]
    held = {c.index for c in table.chunks} if table is not None and head.epoch == table.epoch \
        else set()
    needed += [chunk_name(head.epoch, c) for c in head.live if c not in held]
    added: list[Path] = []
    try:
        for name in dict.fromkeys(needed):
            if (loc / name).exists():
                continue
            data = fetch(name)
            report.fetched.append((name, len(data)))
            tmp = loc / (name + ".part")
            tmp.write_bytes(data)
            os.replace(tmp, loc / name)
            added.append(loc / name)
        t0 = time.process_time()
        if table is None:
            save_chain(loc, links)
            fresh = PublicTable.open(loc, server_pk, witnesses)
        else:
            fresh = table.apply(loc, server_pk, new, witnesses)
            save_chain(loc, fresh.links)
    except BaseException as e:
        # nothing unverified stays behind: the next sync fetches it again (a first sync that
        # is refused leaves no chain either, or the device would look like it holds one)
        for p in added:
            p.unlink(missing_ok=True)
        if table is not None:
            save_chain(loc, table.links)
        else:
            (loc / CHAIN_FILE).unlink(missing_ok=True)
        if isinstance(e, ChainRejected) and not isinstance(e, TableRejected):
            raise TableRejected(str(e)) from e
        raise
    report.verify_cpu_s = time.process_time() - t0
    report.to_version = fresh.version
    return fresh, report
