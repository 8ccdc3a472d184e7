"""Commitment chain: every published version of the table signs the one before it.

The table grows by append-only chunks (a base, then monthly deltas). Version ``v`` is a
``Link``: the epoch, the kind (``base``, ``delta``, ``compaction``), the digest of the epoch's
public parameters, the digest and size of the chunk it adds, the chunks a device holds from
then on, and the head of version ``v - 1``. The server signs ``head(v)`` (BLAKE2b of the
canonical link) with its Ed25519 key, so each signature covers the whole history before it:
a device holding version N accepts N+1 only if it extends N's head and its chunk matches.

A signature alone cannot stop a server from showing one device a special version (a fork:
two differently signed links with the same number). That is what witnesses are for, as in
certificate transparency and the witness cosigning of Sigsum / the Go checksum database:
independent parties that cosign a head only if it extends the last head they cosigned, and
never cosign two heads of one version. A device requires a quorum of pinned witnesses on the
head it adopts; a targeted delta then either fails the quorum (honest witnesses refuse it) or
is cosigned instead of the public one, which every other device and witness sees. Two server
signatures on different heads of one version are proof of the fork (``ForkDetected``).

Sources: Laurie, Langley, Kasper, "Certificate Transparency", RFC 6962 (2013); Syta et al.,
"Keeping Authorities 'Honest or Bust' with Decentralized Witness Cosigning", IEEE S&P 2016.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from . import sodium

CHAIN_DOMAIN = b"hashwatch-psi-chain-v1"
WITNESS_DOMAIN = b"hashwatch-psi-witness-v1"
ZERO_HEAD = bytes(32)
KINDS = ("base", "delta", "compaction")


class ChainRejected(Exception):
    """A link, chunk or cosignature failed verification: the device keeps its old version."""


class ForkDetected(ChainRejected):
    """Two different heads signed for one version: the server forked its history."""

    def __init__(self, version: int, heads: tuple[bytes, bytes]) -> None:
        super().__init__(f"two different heads signed for version {version}")
        self.version = version
        self.heads = heads


@dataclass(frozen=True)
class Link:
    """One published version (see the module docstring). ``live``: the epoch's chunks a device
    holds at this version, in order; ``entries``: list entries the chunk adds."""

    version: int
    epoch: int
    kind: str
    prev: bytes
    params_digest: bytes
    chunk: int
    chunk_digest: bytes
    chunk_bytes: int
    live: tuple[int, ...]
    entries: int

    def canonical(self) -> bytes:
        d = {"version": self.version, "epoch": self.epoch, "kind": self.kind,
             "prev": self.prev.hex(), "params_digest": self.params_digest.hex(),
             "chunk": self.chunk, "chunk_digest": self.chunk_digest.hex(),
             "chunk_bytes": self.chunk_bytes, "live": list(self.live), "entries": self.entries}
        return json.dumps(d, sort_keys=True, separators=(",", ":")).encode()

    @property
    def head(self) -> bytes:
        return hashlib.blake2b(self.canonical(), digest_size=32,
                               person=b"hw-psi-chain-v1").digest()

    @classmethod
    def from_dict(cls, d: dict) -> Link:
        try:
            link = cls(int(d["version"]), int(d["epoch"]), str(d["kind"]),
                       bytes.fromhex(d["prev"]), bytes.fromhex(d["params_digest"]),
                       int(d["chunk"]), bytes.fromhex(d["chunk_digest"]), int(d["chunk_bytes"]),
                       tuple(int(x) for x in d["live"]), int(d["entries"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ChainRejected("malformed chain link") from e
        if link.kind not in KINDS or len(link.prev) != 32 or len(link.chunk_digest) != 32:
            raise ChainRejected("malformed chain link")
        return link

    def to_dict(self) -> dict:
        return json.loads(self.canonical())


@dataclass
class SignedLink:
    link: Link
    signature: bytes
    cosignatures: dict[str, str] = field(default_factory=dict)  # witness pk hex -> sig hex

    def to_dict(self) -> dict:
        return {"link": self.link.to_dict(), "head": self.link.head.hex(),
                "signature": self.signature.hex(), "cosignatures": dict(self.cosignatures)}

    @classmethod
    def from_dict(cls, d: dict) -> SignedLink:
        try:
            sl = cls(Link.from_dict(d["link"]), bytes.fromhex(d["signature"]),
                     {str(k): str(v) for k, v in d.get("cosignatures", {}).items()})
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ChainRejected("malformed signed link") from e
        if "head" in d and d["head"] != sl.link.head.hex():
            raise ChainRejected("stated head does not match the link")
        return sl


def sign_link(sign_sk: bytes, link: Link) -> SignedLink:
    return SignedLink(link, sodium.sign(sign_sk, CHAIN_DOMAIN + link.head))


def _witness_message(version: int, head: bytes) -> bytes:
    return WITNESS_DOMAIN + version.to_bytes(8, "big") + head


@dataclass(frozen=True)
class WitnessPolicy:
    """The witnesses a device pins and how many of them must cosign the head it adopts."""

    keys: tuple[bytes, ...] = ()
    quorum: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.quorum <= len(self.keys):
            raise ValueError("quorum must be between 0 and the number of witness keys")

    def check(self, sl: SignedLink) -> None:
        msg = _witness_message(sl.link.version, sl.link.head)
        good = 0
        for pk in self.keys:
            sig = sl.cosignatures.get(pk.hex())
            if sig is not None and sodium.verify(pk, msg, bytes.fromhex(sig)):
                good += 1
        if good < self.quorum:
            raise ChainRejected(f"version {sl.link.version}: {good} of the required "
                                f"{self.quorum} witness cosignatures")


def verify_extension(server_pk: bytes, prev: Link | None, sl: SignedLink) -> None:
    """Raise ChainRejected unless ``sl`` is a correctly signed successor of ``prev`` (None:
    the first version). Checks the signature, the version number, the back link, the epoch
    rules (a new epoch starts with a base) and the live chunk list."""
    link = sl.link
    if not sodium.verify(server_pk, CHAIN_DOMAIN + link.head, sl.signature):
        raise ChainRejected(f"version {link.version}: bad server signature")
    if prev is None:
        if link.prev != ZERO_HEAD and link.kind != "base":
            raise ChainRejected("a chain starts with a base")
    else:
        if link.version != prev.version + 1:
            raise ChainRejected(f"version {link.version} does not follow {prev.version}")
        if not sodium.ct_equal(link.prev, prev.head):
            raise ChainRejected(f"version {link.version} does not extend the held head")
        if link.epoch not in (prev.epoch, prev.epoch + 1):
            raise ChainRejected("epochs must follow each other")
    new_epoch = prev is None or link.epoch != prev.epoch
    if new_epoch != (link.kind == "base"):
        raise ChainRejected("a base, and only a base, starts an epoch")
    if link.kind == "base":
        if link.live != (link.chunk,) or link.chunk != 0:
            raise ChainRejected("a base is chunk 0 and the only live chunk")
    else:
        assert prev is not None
        if link.chunk in prev.live or link.chunk <= max(prev.live) or link.live[-1:] != (
                link.chunk,):
            raise ChainRejected("a new chunk must be new and live")
        kept = link.live[:-1]
        if link.kind == "delta" and kept != prev.live:
            raise ChainRejected("a delta keeps every live chunk")
        if link.kind == "compaction" and (not kept or kept[0] != 0 or not set(kept)
                                          <= set(prev.live)):
            raise ChainRejected("a compaction keeps the base and replaces later chunks")


class Witness:
    """An independent log of heads (run by another organisation). It cosigns a version only if
    it extends the last head it cosigned, and keeps every head it cosigned (state file 0600),
    so it refuses to cosign a second head for any version: the fork becomes visible."""

    def __init__(self, sign_sk: bytes, sign_pk: bytes, state_path: str | os.PathLike,
                 server_pk: bytes) -> None:
        self.sk, self.pk = sign_sk, sign_pk
        self.server_pk = server_pk
        self.path = Path(state_path)
        self.heads: dict[int, str] = {}
        self.last: Link | None = None
        if self.path.exists():
            d = json.loads(self.path.read_text())
            self.heads = {int(k): v for k, v in d["heads"].items()}
            self.last = Link.from_dict(d["last"]) if d.get("last") else None

    @classmethod
    def generate(cls, state_path: str | os.PathLike, server_pk: bytes) -> Witness:
        pk, sk = sodium.sign_keypair()
        return cls(sk, pk, state_path, server_pk)

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"heads": self.heads,
                       "last": self.last.to_dict() if self.last else None}, f)
        os.replace(tmp, self.path)

    def cosign(self, sl: SignedLink) -> SignedLink:
        """Add this witness's cosignature to ``sl`` (and return it); raises ForkDetected for a
        second head of a version it already cosigned, ChainRejected for anything that does not
        extend its last head."""
        link = sl.link
        seen = self.heads.get(link.version)
        if seen is not None and seen != link.head.hex():
            raise ForkDetected(link.version, (bytes.fromhex(seen), link.head))
        if seen is None:
            verify_extension(self.server_pk, self.last, sl)
            self.heads[link.version] = link.head.hex()
            self.last = link
            self._save()
        sl.cosignatures[self.pk.hex()] = sodium.sign(
            self.sk, _witness_message(link.version, link.head)).hex()
        return sl
