"""Cryptographic digests (MD5, SHA-1, SHA-256) of file bytes, computed in one pass."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import BinaryIO

from hashwatch.signals.base import HexSignalType

__all__ = [
    "BUFFER_SIZE",
    "MD5",
    "SHA1",
    "SHA256",
    "CryptoHashes",
    "hash_bytes",
    "hash_path",
    "hash_stream",
]

BUFFER_SIZE = 1 << 20  # 1 MiB reads: few syscalls, and hashlib drops the GIL on big updates

MD5 = HexSignalType("md5", n_bytes=16, threshold=0, metric="exact", description="MD5 of the file")
SHA1 = HexSignalType(
    "sha1", n_bytes=20, threshold=0, metric="exact", description="SHA-1 of the file"
)
SHA256 = HexSignalType(
    "sha256", n_bytes=32, threshold=0, metric="exact", description="SHA-256 of the file"
)


@dataclass(frozen=True, slots=True)
class CryptoHashes:
    md5: str
    sha1: str
    sha256: str
    size: int


def _new() -> tuple[hashlib._Hash, hashlib._Hash, hashlib._Hash]:
    # usedforsecurity=False: MD5/SHA-1 identify files here; keeps FIPS builds working.
    return (
        hashlib.md5(usedforsecurity=False),
        hashlib.sha1(usedforsecurity=False),
        hashlib.sha256(),
    )


def hash_bytes(data: bytes | bytearray | memoryview) -> CryptoHashes:
    """Digests of bytes already in memory (the file was read once for decoding too)."""
    m, s1, s2 = _new()
    m.update(data)
    s1.update(data)
    s2.update(data)
    return CryptoHashes(m.hexdigest(), s1.hexdigest(), s2.hexdigest(), len(data))


def hash_stream(fh: BinaryIO, *, buffer_size: int = BUFFER_SIZE) -> CryptoHashes:
    """Digests of a stream, read once in ``buffer_size`` chunks feeding all three hashes."""
    m, s1, s2 = _new()
    buf = bytearray(buffer_size)
    view = memoryview(buf)
    size = 0
    readinto = getattr(fh, "readinto", None)
    while True:
        if readinto is not None:
            n = readinto(buf)
            if not n:
                break
            chunk = view[:n]
        else:
            data = fh.read(buffer_size)
            if not data:
                break
            n = len(data)
            chunk = memoryview(data)
        m.update(chunk)
        s1.update(chunk)
        s2.update(chunk)
        size += n
    return CryptoHashes(m.hexdigest(), s1.hexdigest(), s2.hexdigest(), size)


def hash_path(path: str | os.PathLike[str], *, buffer_size: int = BUFFER_SIZE) -> CryptoHashes:
    """Digests of a file of any size, streamed (constant memory)."""
    with open(path, "rb", buffering=0) as fh:
        return hash_stream(fh, buffer_size=buffer_size)
