"""The published table: its format, public parameters, signed commitment and the server secret.

For every list entry the server derives the match keys (``keys.KeyDesign``), places each
distinct key in a cuckoo table (3 hash functions, load <= 0.8), and publishes at the key's slot
the blinded point alpha * H(key) (ristretto255, alpha the server's secret scalar). Empty slots get
uniformly random points, indistinguishable from blinded ones. The commitment is a BLAKE2b digest
of the exact published bytes, signed with the server's Ed25519 key: a client recomputes the digest
over the table it received and checks the signature against the pinned public key, so every
device provably uses the same table (publish the digest, e.g. in a transparency log).
The build itself (streaming, resumable) is ``hashwatch.private.build``.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import sodium
from .keys import KeyDesign

FORMAT_VERSION = 1
TABLE_MAGIC = b"HWPSI-T1"
KEY_DOMAIN = b"hashwatch-psi-key-v1"
COMMIT_DOMAIN = b"hashwatch-psi-commit-v1"
N_HASHES = 3
# Share of synthetic vouchers opening n = 1..tables keys; measured on the edit suite for the
# default design (real matching vouchers open this many keys), so the open count of a synthetic
# voucher looks like that of a real match.
DEFAULT_SYNTHETIC_OPEN = [0.043, 0.042, 0.042, 0.047, 0.049, 0.048, 0.069, 0.66]


class TableRejected(Exception):
    """The table or its commitment failed verification: the client must not use it."""


@dataclass(frozen=True)
class Params:
    """Everything public a client needs besides the points (all of it inside the commitment)."""

    key_design: KeyDesign
    n_slots: int
    cuckoo_seed: bytes
    blind_pub: bytes  # L = alpha * G
    threshold: int = 30
    dhf_dim: int = 56  # must be >= threshold + synthetic_max
    synthetic_rate: float = 0.01
    synthetic_max: int = 24
    synthetic_open: Sequence[float] = field(default_factory=lambda: list(DEFAULT_SYNTHETIC_OPEN))
    list_label: str = ""
    version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.threshold < 2:
            raise ValueError("threshold must be >= 2")
        if self.dhf_dim < self.threshold + self.synthetic_max:
            raise ValueError("dhf_dim must be >= threshold + synthetic_max")
        if len(self.synthetic_open) != self.key_design.tables:
            raise ValueError("synthetic_open needs one probability per table")

    def to_json(self) -> bytes:
        d = {
            "version": self.version,
            "key_design": self.key_design.to_dict(),
            "n_slots": self.n_slots,
            "n_hashes": N_HASHES,
            "cuckoo_seed": self.cuckoo_seed.hex(),
            "blind_pub": self.blind_pub.hex(),
            "threshold": self.threshold,
            "dhf_dim": self.dhf_dim,
            "synthetic_rate": self.synthetic_rate,
            "synthetic_max": self.synthetic_max,
            "synthetic_open": list(self.synthetic_open),
            "list_label": self.list_label,
        }
        return json.dumps(d, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Params:
        d = json.loads(raw)
        if d.get("version") != FORMAT_VERSION or d.get("n_hashes") != N_HASHES:
            raise TableRejected("unsupported table version")
        return cls(
            key_design=KeyDesign(**d["key_design"]),
            n_slots=int(d["n_slots"]),
            cuckoo_seed=bytes.fromhex(d["cuckoo_seed"]),
            blind_pub=bytes.fromhex(d["blind_pub"]),
            threshold=int(d["threshold"]),
            dhf_dim=int(d["dhf_dim"]),
            synthetic_rate=float(d["synthetic_rate"]),
            synthetic_max=int(d["synthetic_max"]),
            synthetic_open=[float(x) for x in d["synthetic_open"]],
            list_label=str(d["list_label"]),
        )


def slot_positions(cuckoo_seed: bytes, key: bytes, n_slots: int) -> tuple[int, int, int]:
    h = hashlib.blake2b(key, digest_size=24, key=cuckoo_seed).digest()
    return tuple(int.from_bytes(h[8 * i : 8 * i + 8], "little") % n_slots for i in range(3))  # type: ignore[return-value]


def table_digest(header: bytes, points: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=32, person=b"hw-psi-table-v1")
    h.update(struct.pack("<Q", len(header)))
    h.update(header)
    h.update(points)
    return h.digest()


@dataclass(frozen=True)
class Commitment:
    digest: bytes
    signature: bytes
    public_key: bytes

    def to_json(self) -> str:
        return json.dumps(
            {"digest": self.digest.hex(), "signature": self.signature.hex(),
             "public_key": self.public_key.hex()}, indent=1)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Commitment:
        try:
            d = json.loads(raw)
            return cls(bytes.fromhex(d["digest"]), bytes.fromhex(d["signature"]),
                       bytes.fromhex(d["public_key"]))
        except (ValueError, KeyError, TypeError) as e:
            raise TableRejected("malformed commitment") from e


@dataclass
class PublicTable:
    """What the server publishes to every client: parameters, points, commitment."""

    params: Params
    points: bytes  # n_slots * 32, slot order
    commitment: Commitment

    def point(self, slot: int) -> bytes:
        return self.points[32 * slot : 32 * slot + 32]

    def verify(self, pinned_public_key: bytes) -> None:
        """Raise TableRejected unless the commitment matches these exact bytes and is signed by
        the pinned server key."""
        if len(self.points) != 32 * self.params.n_slots:
            raise TableRejected("table size does not match its parameters")
        if not sodium.ct_equal(self.commitment.public_key, pinned_public_key):
            raise TableRejected("commitment signed by an unexpected key")
        digest = table_digest(self.params.to_json(), self.points)
        if not sodium.ct_equal(digest, self.commitment.digest):
            raise TableRejected("table does not match its commitment digest")
        if not sodium.verify(pinned_public_key, COMMIT_DOMAIN + digest, self.commitment.signature):
            raise TableRejected("bad commitment signature")
        if not sodium.is_valid_point(self.params.blind_pub):
            raise TableRejected("invalid public blinding point")

    def save(self, directory: str | os.PathLike) -> tuple[Path, Path]:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        header = self.params.to_json()
        tpath, cpath = d / "table.bin", d / "commitment.json"
        with open(tpath, "wb") as f:
            f.write(TABLE_MAGIC + struct.pack("<I", len(header)) + header)
            f.write(self.points)
        cpath.write_text(self.commitment.to_json())
        return tpath, cpath

    @classmethod
    def load(cls, directory: str | os.PathLike, pinned_public_key: bytes | None = None, *,
             map_file: bool = False) -> PublicTable:
        """Load and, when a pinned key is given, verify (raises TableRejected).

        ``map_file`` maps the points instead of reading them (a 20M table is 6.4 GB): slots are
        then read from the page cache on demand, shared by every process using the table."""
        d = Path(directory)
        path = d / "table.bin"
        with open(path, "rb") as f:
            head = f.read(12)
            if head[:8] != TABLE_MAGIC or len(head) < 12:
                raise TableRejected("not a hashwatch PSI table")
            (hlen,) = struct.unpack("<I", head[8:12])
            hjson = f.read(hlen)
            try:
                params = Params.from_json(hjson)
            except (ValueError, KeyError, TypeError) as e:
                raise TableRejected("malformed table parameters") from e
            points: bytes | memoryview
            if map_file:
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                points = memoryview(mm)[12 + hlen :]
            else:
                points = f.read()
        t = cls(params, points, Commitment.from_json((d / "commitment.json").read_text()))
        if pinned_public_key is not None:
            t.verify(pinned_public_key)
        return t


@dataclass
class ServerSecret:
    """Kept by the server only (file mode 0600): blinding scalar, signing key, the list itself."""

    alpha: bytes
    sign_sk: bytes
    sign_pk: bytes
    entry_ids: list[str]
    entry_hashes: np.ndarray  # (n, 32) uint8, PDQ as big-endian bytes of the hex

    def save(self, path: str | os.PathLike) -> None:
        p = Path(path)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, alpha=np.frombuffer(self.alpha, np.uint8),
                     sign_sk=np.frombuffer(self.sign_sk, np.uint8),
                     sign_pk=np.frombuffer(self.sign_pk, np.uint8),
                     entry_ids=np.asarray(self.entry_ids, dtype=str),
                     entry_hashes=self.entry_hashes)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ServerSecret:
        with np.load(path, allow_pickle=False) as z:
            return cls(z["alpha"].tobytes(), z["sign_sk"].tobytes(), z["sign_pk"].tobytes(),
                       [str(x) for x in z["entry_ids"]], z["entry_hashes"].copy())
