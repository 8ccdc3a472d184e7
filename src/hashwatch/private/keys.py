"""Match keys: exact keys derived from a PDQ hash so that edited copies still share one.

The PSI protocol can only test exact membership, while PDQ matches within a Hamming distance.
Design (bit-sampling LSH with client-side multi-probe):

* ``tables`` keys per hash; key i hashes (i, the ``bits`` PDQ bits at positions S_i), with the
  position sets S_i drawn from a public seed. The server puts the ``tables`` keys of every list
  entry in its table.
* The client also has PDQ's real-valued coefficients: bits whose coefficient lies closest to the
  median are the ones an edit flips. For each table it sends the plain key plus ``probes`` keys
  with one of the least reliable sampled bits flipped (multi-probe LSH). This buys recall without
  growing the server table, at the price of more slots per voucher.

Two hashes at distance d share key i with probability ~ (1 - d/256)^bits for independent bits;
edits flip unreliable bits first, which the probes cover. Measured figures are in the benchmark.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np

PDQ_BITS = 256
KEY_BYTES = 16


def hex_to_bits(hex64: str) -> np.ndarray:
    """PDQ hex -> uint8[256] in ``pdqhash.compute`` vector order.

    Same convention as ``hashwatch.signals.pdq``: hex is ``np.packbits`` of that vector."""
    if len(hex64) != 64:
        raise ValueError("not a 64-hex-digit PDQ hash")
    try:
        raw = bytes.fromhex(hex64)
    except ValueError as e:
        raise ValueError("not a 64-hex-digit PDQ hash") from e
    return np.unpackbits(np.frombuffer(raw, dtype=np.uint8))


def bits_to_hex(bits: np.ndarray) -> str:
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex()


def hamming_hex(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


@dataclass(frozen=True)
class KeyDesign:
    tables: int = 8
    bits: int = 48
    probe_bits: int = 4
    pairs: bool = True
    seed: int = 20210729

    def __post_init__(self) -> None:
        if not (1 <= self.tables <= 255 and 1 <= self.bits <= PDQ_BITS
                and 0 <= self.probe_bits <= self.bits):
            raise ValueError("bad key design")

    def to_dict(self) -> dict[str, int | bool]:
        return asdict(self)

    @cached_property
    def positions(self) -> np.ndarray:
        """(tables, bits) bit positions, public, fixed by the seed."""
        rng = np.random.default_rng(self.seed)
        return np.stack([rng.choice(PDQ_BITS, self.bits, replace=False)
                         for _ in range(self.tables)])

    @property
    def probes_per_table(self) -> int:
        u = self.probe_bits
        return u + (u * (u - 1) // 2 if self.pairs else 0)

    @property
    def keys_per_image(self) -> int:
        return self.tables * (1 + self.probes_per_table)

    def _key_packed(self, prefix: bytes, packed: bytes) -> bytes:
        h = hashlib.blake2b(prefix + packed, digest_size=KEY_BYTES, person=b"hw-mkey-v1")
        return h.digest()

    def _key(self, table: int, sampled: np.ndarray) -> bytes:
        return self._key_packed(bytes([table]), np.packbits(sampled).tobytes())

    def server_keys(self, hex64: str) -> list[bytes]:
        """The keys a list entry contributes to the table (one per LSH table)."""
        bits = hex_to_bits(hex64)
        return [self._key(i, bits[self.positions[i]]) for i in range(self.tables)]

    def client_keys(self, bits: np.ndarray, coeffs: np.ndarray | None) -> list[bytes]:
        """Exactly ``keys_per_image`` keys, table by table: the plain key, then the keys with
        one (then two, if ``pairs``) of the ``probe_bits`` least reliable sampled bits flipped.

        Without coefficients (hash known as hex only) the probe slots get random keys, so the
        voucher has the same shape either way."""
        keys: list[bytes] = []
        u = self.probe_bits
        flips = [(j,) for j in range(u)]
        if self.pairs:
            flips += list(itertools.combinations(range(u), 2))
        margin = None
        if coeffs is not None:
            c = np.asarray(coeffs, dtype=np.float64)
            margin = np.abs(c - np.median(c))
        for i in range(self.tables):
            pos = self.positions[i]
            sampled = np.asarray(bits, dtype=np.uint8)[pos]
            keys.append(self._key(i, sampled))
            if margin is None:
                keys.extend(os.urandom(KEY_BYTES) for _ in flips)
                continue
            weakest = np.argsort(margin[pos], kind="stable")[:u]
            for f in flips:
                probe = sampled.copy()
                probe[weakest[list(f)]] ^= 1
                keys.append(self._key(i, probe))
        return keys


DEFAULT_DESIGN = KeyDesign()
