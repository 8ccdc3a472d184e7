"""The published table: epoch parameters, append-only chunks, and the device's verified view.

An **epoch** has one blinding secret ``alpha`` (public ``L = alpha * G``) and one set of public
parameters (:class:`Params`: key design, threshold, voucher shape). Its table is a list of
**chunks**, each a binary fuse layout (``fuse``) of blinded keys: chunk 0 is the base (the whole
list when the epoch starts), later chunks are monthly deltas of new entries (or a compaction
that merges deltas). A device holds the live chunks and matches against their union: a voucher
key block carries one opening per chunk slot (``Params.chunk_slots``), so the voucher keeps its
size whatever the number of live chunks. Removing entries, or merging everything back into one
chunk, is a new epoch (key rotation): a new ``alpha`` and a new base.

Each chunk file is ``HWPSI-C2 | u32 header length | header JSON | cells`` and its digest is
BLAKE2b over the exact bytes; the commitment chain (``chain``) signs that digest, the digest of
the epoch parameters and the previous version's head. :class:`PublicTable` is what a device
holds: it verifies every step and refuses (``TableRejected``) anything that does not check.
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

from . import sodium
from .chain import ChainRejected, SignedLink, WitnessPolicy, verify_extension
from .fuse import CELL_BYTES, FuseGeometry, key_cells
from .keys import KeyDesign

FORMAT_VERSION = 2
CHUNK_MAGIC = b"HWPSI-C2"
KEY_DOMAIN = b"hashwatch-psi-key-v1"
# Share of synthetic vouchers opening n = 1, 2, ... keys (measured on the edit suite for the
# default design: a real match opens this many keys), so a synthetic voucher's open count
# looks like that of a real match.
DEFAULT_SYNTHETIC_OPEN = [0.93, 0.05, 0.02]
# Chunks a device holds at once (base + deltas) and key-chunk openings spent on deltas: the
# voucher's bytes grow with the slots (16 B per key block each) and the device's CPU with the
# openings (one scalar multiplication each); BENCHMARKS.md measures the choice.
DEFAULT_CHUNK_SLOTS = 2
DEFAULT_DELTA_OPENINGS = 64


class TableRejected(ChainRejected):
    """The table, a chunk or the chain failed verification: the client must not use it."""


@dataclass(frozen=True)
class Params:
    """Everything public about an epoch except the chunks (all of it inside the chain).

    ``chunk_slots``: openings per key block in a voucher (the most chunks an epoch may have
    live); ``delta_openings``: how many key-chunk openings a voucher spends on delta chunks,
    shared among the live deltas, best-ranked keys first (every key opens against the base;
    each opening costs the device a scalar multiplication, so this bounds its CPU)."""

    key_design: KeyDesign
    blind_pub: bytes  # L = alpha * G
    epoch: int = 0
    threshold: int = 30
    dhf_dim: int = 54  # must be >= threshold + synthetic_max
    synthetic_rate: float = 0.01
    synthetic_max: int = 24
    synthetic_open: Sequence[float] = field(default_factory=lambda: list(DEFAULT_SYNTHETIC_OPEN))
    chunk_slots: int = DEFAULT_CHUNK_SLOTS
    delta_openings: int = DEFAULT_DELTA_OPENINGS
    list_label: str = ""
    version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.threshold < 2:
            raise ValueError("threshold must be >= 2")
        if self.dhf_dim < self.threshold + self.synthetic_max:
            raise ValueError("dhf_dim must be >= threshold + synthetic_max")
        if not 1 <= len(self.synthetic_open) <= self.key_design.keys_per_image:
            raise ValueError("synthetic_open needs 1..keys_per_image probabilities")
        if not 1 <= self.chunk_slots <= 16:
            raise ValueError("chunk_slots must be 1-16")
        if self.delta_openings < 0:
            raise ValueError("delta_openings must be >= 0")

    def to_json(self) -> bytes:
        d = {"version": self.version, "epoch": self.epoch,
             "key_design": self.key_design.to_dict(), "blind_pub": self.blind_pub.hex(),
             "threshold": self.threshold, "dhf_dim": self.dhf_dim,
             "synthetic_rate": self.synthetic_rate, "synthetic_max": self.synthetic_max,
             "synthetic_open": list(self.synthetic_open), "chunk_slots": self.chunk_slots,
             "delta_openings": self.delta_openings, "list_label": self.list_label}
        return json.dumps(d, sort_keys=True, separators=(",", ":")).encode()

    @property
    def digest(self) -> bytes:
        return hashlib.blake2b(self.to_json(), digest_size=32, person=b"hw-psi-params-v2").digest()

    @classmethod
    def from_json(cls, raw: bytes) -> Params:
        try:
            d = json.loads(raw)
            if d.get("version") != FORMAT_VERSION:
                raise TableRejected("unsupported table version")
            p = cls(key_design=KeyDesign.from_dict(d["key_design"]),
                    blind_pub=bytes.fromhex(d["blind_pub"]), epoch=int(d["epoch"]),
                    threshold=int(d["threshold"]), dhf_dim=int(d["dhf_dim"]),
                    synthetic_rate=float(d["synthetic_rate"]),
                    synthetic_max=int(d["synthetic_max"]),
                    synthetic_open=[float(x) for x in d["synthetic_open"]],
                    chunk_slots=int(d["chunk_slots"]), delta_openings=int(d["delta_openings"]),
                    list_label=str(d["list_label"]))
        except TableRejected:
            raise
        except (ValueError, KeyError, TypeError) as e:
            raise TableRejected("malformed table parameters") from e
        if not sodium.is_valid_point(p.blind_pub):
            raise TableRejected("invalid public blinding point")
        return p


def chunk_digest(header: bytes, cells: bytes | memoryview) -> bytes:
    h = hashlib.blake2b(digest_size=32, person=b"hw-psi-chunk-v2")
    h.update(struct.pack("<Q", len(header)))
    h.update(header)
    h.update(cells)
    return h.digest()


@dataclass
class Chunk:
    """One published chunk: header (epoch, index, fuse geometry and seed, parameter digest)
    and its cells (``array_length`` x 32 bytes, mapped from the file when loaded)."""

    epoch: int
    index: int
    geometry: FuseGeometry
    fuse_seed: bytes
    params_digest: bytes
    cells: bytes | memoryview

    def header(self) -> bytes:
        d = {"epoch": self.epoch, "index": self.index, "geometry": self.geometry.to_dict(),
             "fuse_seed": self.fuse_seed.hex(), "params_digest": self.params_digest.hex()}
        return json.dumps(d, sort_keys=True, separators=(",", ":")).encode()

    @property
    def digest(self) -> bytes:
        return chunk_digest(self.header(), self.cells)

    @property
    def file_bytes(self) -> int:
        return len(CHUNK_MAGIC) + 4 + len(self.header()) + len(self.cells)

    def cell(self, i: int) -> bytes:
        return bytes(self.cells[CELL_BYTES * i : CELL_BYTES * (i + 1)])

    def decode(self, key: bytes) -> bytes:
        """The sum of the key's 3 cells: alpha * H(key) if the key is in this chunk, else a
        point that tells the device nothing. Raises TableRejected on an invalid cell."""
        a, b, c = key_cells(self.fuse_seed, self.geometry, key)
        try:
            return sodium.point_add(sodium.point_add(self.cell(a), self.cell(b)), self.cell(c))
        except Exception as e:  # libsodium refuses non-canonical encodings
            raise TableRejected("invalid point in the table") from e

    def save(self, path: str | os.PathLike) -> Path:
        p = Path(path)
        header = self.header()
        tmp = p.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(CHUNK_MAGIC + struct.pack("<I", len(header)) + header)
            f.write(self.cells)
        os.replace(tmp, p)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike, *, map_file: bool = True) -> Chunk:
        """Read (or map: cells are then read from the page cache on demand, shared by every
        process using the table) a chunk file. Raises TableRejected if it is not one."""
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:8] != CHUNK_MAGIC:
                raise TableRejected(f"{path}: not a hashwatch PSI chunk")
            (hlen,) = struct.unpack("<I", head[8:12])
            try:
                d = json.loads(f.read(hlen))
                geom = FuseGeometry.from_dict(d["geometry"])
                meta = (int(d["epoch"]), int(d["index"]), bytes.fromhex(d["fuse_seed"]),
                        bytes.fromhex(d["params_digest"]))
            except (ValueError, KeyError, TypeError) as e:
                raise TableRejected(f"{path}: malformed chunk header") from e
            cells: bytes | memoryview
            if map_file and os.fstat(f.fileno()).st_size > 12 + hlen:
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                cells = memoryview(mm)[12 + hlen :]
            else:
                cells = f.read()
        if len(cells) != CELL_BYTES * geom.array_length:
            raise TableRejected(f"{path}: chunk size does not match its geometry")
        return cls(meta[0], meta[1], geom, meta[2], meta[3], cells)


def chunk_name(epoch: int, index: int) -> str:
    return f"chunk-e{epoch:04d}-{index:04d}.bin"


def params_name(epoch: int) -> str:
    return f"params-e{epoch:04d}.json"


CHAIN_FILE = "chain.json"


def load_chain(directory: str | os.PathLike) -> list[SignedLink]:
    p = Path(directory) / CHAIN_FILE
    try:
        raw = json.loads(p.read_text())
        return [SignedLink.from_dict(d) for d in raw["links"]]
    except ChainRejected as e:
        raise TableRejected(f"{p}: {e}") from e
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TableRejected(f"{p}: no readable commitment chain") from e


def save_chain(directory: str | os.PathLike, links: Sequence[SignedLink]) -> None:
    p = Path(directory) / CHAIN_FILE
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps({"links": [sl.to_dict() for sl in links]}, indent=1))
    os.replace(tmp, p)


@dataclass
class PublicTable:
    """What a device holds and matches against: the epoch parameters, the live chunks and the
    verified chain up to ``head``. Build it with :meth:`open` (verifies everything)."""

    params: Params
    chunks: list[Chunk]
    links: list[SignedLink]

    @property
    def head(self) -> SignedLink:
        return self.links[-1]

    @property
    def version(self) -> int:
        return self.head.link.version

    @property
    def epoch(self) -> int:
        return self.params.epoch

    @property
    def entries(self) -> int:
        return sum(c.geometry.n_keys for c in self.chunks)

    def decode(self, key: bytes) -> list[bytes]:
        """One decoded point per live chunk, base first."""
        return [c.decode(key) for c in self.chunks]

    @classmethod
    def open(cls, directory: str | os.PathLike, server_pk: bytes,
             witnesses: WitnessPolicy | None = None, *, map_file: bool = True) -> PublicTable:
        """Verify the whole chain in ``directory`` (signatures, back links, epochs, the
        witness quorum on the head) and load the head's live chunks, checking each against
        its signed digest. Raises TableRejected."""
        links = load_chain(directory)
        if not links:
            raise TableRejected("empty commitment chain")
        prev = None
        try:
            for sl in links:
                verify_extension(server_pk, prev, sl)
                prev = sl.link
            (witnesses or WitnessPolicy()).check(links[-1])
        except ChainRejected as e:
            raise TableRejected(str(e)) from e
        head = links[-1].link
        params = _load_params(Path(directory), head.epoch, head.params_digest)
        chunks = [_load_chunk(Path(directory), head.epoch, i, _link_of(links, head.epoch, i),
                              params, map_file) for i in head.live]
        return cls(params, chunks, links)

    @classmethod
    def load(cls, directory: str | os.PathLike, pinned_public_key: bytes) -> PublicTable:
        """:meth:`open` without witnesses: the chain signed by the pinned server key."""
        return cls.open(directory, pinned_public_key)

    def verify(self, pinned_public_key: bytes) -> None:
        """Check again that every held version is signed by the pinned key and extends the
        one before, and that every live chunk matches its signed digest (TableRejected)."""
        prev = None
        try:
            for sl in self.links:
                verify_extension(pinned_public_key, prev, sl)
                prev = sl.link
        except ChainRejected as e:
            raise TableRejected(str(e)) from e
        if not sodium.ct_equal(self.params.digest, self.head.link.params_digest):
            raise TableRejected("parameters do not match their signed digest")
        for c in self.chunks:
            link = _link_of(self.links, c.epoch, c.index)
            if not sodium.ct_equal(c.digest, link.chunk_digest):
                raise TableRejected(f"chunk {c.index} does not match its signed digest")

    def apply(self, directory: str | os.PathLike, server_pk: bytes, new: Sequence[SignedLink],
              witnesses: WitnessPolicy | None = None, *, map_file: bool = True) -> PublicTable:
        """The table after the versions ``new`` (fetched into ``directory``): each must extend
        the one before it, starting from the held head; the last must carry the witness
        quorum; only the chunks live at the new head that the device does not hold yet are
        read, each checked against the digest its version signed. Nothing changes unless all
        of it checks. Raises TableRejected."""
        links = list(self.links)
        try:
            for sl in new:
                verify_extension(server_pk, links[-1].link, sl)
                if sl.link.kind != "base" and sl.link.params_digest != links[-1].link \
                        .params_digest:
                    raise TableRejected("a delta must keep the epoch's parameters")
                links.append(sl)
            if new:
                (witnesses or WitnessPolicy()).check(links[-1])
        except ChainRejected as e:
            raise TableRejected(str(e)) from e
        head = links[-1].link
        if head.epoch == self.epoch:
            params = self.params
            held = {c.index: c for c in self.chunks}
        else:
            params = _load_params(Path(directory), head.epoch, head.params_digest)
            held = {}
        chunks = [held[i] if i in held else _load_chunk(
            Path(directory), head.epoch, i, _link_of(links, head.epoch, i), params, map_file)
            for i in head.live]
        return PublicTable(params, chunks, links)


def _link_of(links: Sequence[SignedLink], epoch: int, chunk: int):  # type: ignore[no-untyped-def]
    for sl in reversed(links):
        if sl.link.epoch == epoch and sl.link.chunk == chunk:
            return sl.link
    raise TableRejected(f"no link for chunk {chunk} of epoch {epoch}")


def _load_params(directory: Path, epoch: int, digest: bytes) -> Params:
    try:
        raw = (directory / params_name(epoch)).read_bytes()
    except OSError as e:
        raise TableRejected(f"parameters of epoch {epoch} missing") from e
    p = Params.from_json(raw)
    if p.epoch != epoch or not sodium.ct_equal(p.digest, digest):
        raise TableRejected("parameters do not match their signed digest")
    return p


def _load_chunk(directory: Path, epoch: int, index: int, link, params: Params,  # type: ignore[no-untyped-def]
                map_file: bool) -> Chunk:
    path = directory / chunk_name(epoch, index)
    try:
        c = Chunk.load(path, map_file=map_file)
    except OSError as e:
        raise TableRejected(f"chunk {index} of epoch {epoch} missing") from e
    if (c.epoch, c.index) != (epoch, index) or c.params_digest != params.digest:
        raise TableRejected(f"{path}: chunk of another epoch or version")
    if c.file_bytes != link.chunk_bytes or not sodium.ct_equal(c.digest, link.chunk_digest):
        raise TableRejected(f"{path}: chunk does not match its signed digest")
    return c
