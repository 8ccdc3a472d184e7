"""Client side (the library a messaging app embeds): image -> voucher, no server round trip.

Per account the device holds a secret seed, from which it derives the account key (the secret of
a Shamir sharing of degree t-1), the polynomial, a PRF key for share x-coordinates and the secret
detection matrix. Each image gets exactly one voucher of fixed size. With probability
``synthetic_rate`` (until a secret per-account budget, drawn uniformly in [0, synthetic_max], is
used up) the voucher is synthetic instead: it opens on the server like a match, but carries a
random share, so below the threshold the server cannot count the real matches.
"""

from __future__ import annotations

import json
import os
import random
import secrets
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pdqhash

from . import field as gf
from . import sodium
from .field import ELEM_BYTES, P
from .keys import bits_to_hex, hex_to_bits
from .table import KEY_DOMAIN, PublicTable, TableRejected, slot_positions
from .voucher import (
    AD_DOMAIN,
    MAGIC,
    NONCE_BYTES,
    SLOT_BYTES,
    VKEY_BYTES,
    inner_key,
    slot_secret,
    xor,
)

MIN_QUALITY = 50


@dataclass
class ClientState:
    """The device's secret per account. Persist it (0600); losing it only restarts counting."""

    seed: bytes
    synthetic_sent: int = 0
    # PRF tags of pictures already vouchered: a repeat gets a voucher that cannot match, so the
    # server never sees the same share twice from this device (which would mark it as real).
    sent: set[str] = field(default_factory=set)

    @classmethod
    def new(cls) -> ClientState:
        return cls(secrets.token_bytes(32))

    def to_json(self) -> str:
        return json.dumps({"seed": self.seed.hex(), "synthetic_sent": self.synthetic_sent,
                           "sent": sorted(self.sent)})

    @classmethod
    def from_json(cls, raw: str) -> ClientState:
        d = json.loads(raw)
        return cls(bytes.fromhex(d["seed"]), int(d["synthetic_sent"]), set(d.get("sent", [])))

    def save(self, path: str | os.PathLike) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> ClientState:
        return cls.from_json(Path(path).read_text())


def _elem(seed: bytes, label: bytes) -> int:
    return gf.from_hash(sodium.kdf(b"hw-psi-client-v1", seed + label, 32))


class VoucherClient:
    """The device side: one voucher per image, no server round trip. Built on a server's
    :class:`~hashwatch.private.table.PublicTable` verified against ``pinned_public_key``
    (raises ``TableRejected`` otherwise, or when its threshold is below ``min_threshold``),
    with the account's :class:`ClientState`. ``voucher_for_hash(pdq_hex, quality=...)`` and
    ``voucher_for_pixels(rgb)`` return the voucher bytes (a fixed size per table)."""

    def __init__(self, table: PublicTable, state: ClientState, pinned_public_key: bytes, *,
                 min_threshold: int = 2) -> None:
        table.verify(pinned_public_key)  # raises TableRejected
        if table.params.threshold < min_threshold:
            # the threshold is signed and public, but a client may also insist on a floor
            raise TableRejected(f"threshold {table.params.threshold} below {min_threshold}")
        self.table = table
        self.params = table.params
        self.state = state
        self._rng = random.SystemRandom()

    # -- per-account secrets, derived from the seed ------------------------------------------
    @cached_property
    def _poly(self) -> list[int]:
        t = self.params.threshold
        return [_elem(self.state.seed, b"poly" + i.to_bytes(2, "big")) for i in range(t)]

    @cached_property
    def account_key(self) -> bytes:
        return account_key_from_secret(self._poly[0])

    @cached_property
    def _fkey(self) -> bytes:
        return sodium.kdf(b"hw-psi-client-v1", self.state.seed + b"fkey", 32)

    @cached_property
    def _matrix(self) -> list[list[int]]:
        t, d = self.params.threshold, self.params.dhf_dim
        return [[_elem(self.state.seed, b"dhf" + r.to_bytes(2, "big") + c.to_bytes(2, "big"))
                 for c in range(t - 1)] for r in range(d)]

    @cached_property
    def synthetic_budget(self) -> int:
        raw = sodium.kdf(b"hw-psi-client-v1", self.state.seed + b"budget", 8)
        return int.from_bytes(raw, "big") % (self.params.synthetic_max + 1)

    # -- vouchers ----------------------------------------------------------------------------
    def _want_synthetic(self) -> bool:
        if self.state.synthetic_sent >= self.synthetic_budget:
            return False
        return self._rng.random() < self.params.synthetic_rate

    def voucher_for_hash(self, pdq_hex: str, coeffs: np.ndarray | None = None, *,
                         quality: int = 100, image_id: bytes | None = None,
                         synthetic: bool | None = None) -> bytes:
        """One voucher for one image. ``synthetic=None`` lets the client decide (normal use);
        tests may force it."""
        image_id = image_id if image_id is not None else secrets.token_bytes(16)
        if len(image_id) != 16:
            raise ValueError("image_id must be 16 bytes")
        if synthetic is None:
            synthetic = self._want_synthetic()
        if synthetic:
            self.state.synthetic_sent += 1
            return self._synthetic()
        design = self.params.key_design
        bits = hex_to_bits(pdq_hex)
        tag = sodium.prf(self._fkey, b"sent" + bytes.fromhex(pdq_hex), 12).hex()
        repeat = tag in self.state.sent
        self.state.sent.add(tag)
        if quality < MIN_QUALITY or repeat:
            # PDQ discards low-quality hashes, and a repeat must not show up twice: send a
            # voucher that cannot match, same shape.
            keys = [os.urandom(16) for _ in range(design.keys_per_image)]
        else:
            keys = design.client_keys(bits, coeffs)
        return self._real(keys, bytes.fromhex(pdq_hex), image_id)

    def voucher_for_pixels(self, pixels: np.ndarray, image_id: bytes | None = None) -> bytes:
        hx, coeffs, quality = pdq_with_coeffs(pixels)
        return self.voucher_for_hash(hx, coeffs, quality=quality, image_id=image_id)

    def _real(self, keys: list[bytes], pdq: bytes, image_id: bytes) -> bytes:
        p = self.params
        nonce = os.urandom(NONCE_BYTES)
        vkey = os.urandom(VKEY_BYTES)
        order = list(range(len(keys)))
        self._rng.shuffle(order)  # the server must not learn which key (table, probe) opened
        blocks = []
        for i in order:
            h = sodium.hash_to_point(KEY_DOMAIN, keys[i])
            beta, gamma = sodium.random_scalar(), sodium.random_scalar()
            q = sodium.point_add(sodium.scalar_mult(beta, h), sodium.scalar_mult_base(gamma))
            gl = sodium.scalar_mult(gamma, p.blind_pub)
            block = [q]
            for s in slot_positions(p.cuckoo_seed, keys[i], p.n_slots):
                shared = sodium.point_add(sodium.scalar_mult(beta, self.table.point(s)), gl)
                tag, pad = slot_secret(shared, q, nonce)
                block.append(tag + xor(pad, vkey))
            blocks.append(b"".join(block))
        # share x from the image hash: the same picture vouchered twice yields the same share
        x = gf.from_hash(sodium.prf(self._fkey, pdq, 32)) or 1
        y = gf.poly_eval(self._poly, x)
        vec = gf.dhf_vector(self._matrix, x)
        adct = sodium.aead_encrypt(self.account_key, pdq + image_id, AD_DOMAIN)
        plain = (gf.to_bytes(x) + gf.to_bytes(y)
                 + b"".join(gf.to_bytes(v) for v in vec) + adct)
        return self._assemble(nonce, blocks, vkey, plain)

    def _synthetic(self) -> bytes:
        p = self.params
        k = p.key_design.keys_per_image
        nonce = os.urandom(NONCE_BYTES)
        vkey = os.urandom(VKEY_BYTES)
        n_open = self._rng.choices(range(1, len(p.synthetic_open) + 1), p.synthetic_open)[0]
        opened = set(self._rng.sample(range(k), n_open))
        blocks = []
        for i in range(k):
            if i in opened:
                # Q = gamma*G: the server's alpha*Q equals gamma*L, which the client knows.
                gamma = sodium.random_scalar()
                q = sodium.scalar_mult_base(gamma)
                tag, pad = slot_secret(sodium.scalar_mult(gamma, p.blind_pub), q, nonce)
                slots = [os.urandom(SLOT_BYTES) for _ in range(3)]
                slots[self._rng.randrange(3)] = tag + xor(pad, vkey)
                blocks.append(q + b"".join(slots))
            else:
                blocks.append(sodium.random_point() + os.urandom(3 * SLOT_BYTES))
        rand = [secrets.randbelow(P - 1) + 1 for _ in range(2 + p.dhf_dim)]
        plain = b"".join(gf.to_bytes(v) for v in rand) + os.urandom(
            sodium.AEAD_NONCE_BYTES + 48 + sodium.AEAD_TAG_BYTES)
        return self._assemble(nonce, blocks, vkey, plain)

    @staticmethod
    def _assemble(nonce: bytes, blocks: list[bytes], vkey: bytes, plain: bytes) -> bytes:
        header = MAGIC + nonce
        # zero nonce: the inner key is fresh for this voucher and used once
        inner = sodium.aead_encrypt(inner_key(vkey), plain, header,
                                    nonce=bytes(sodium.AEAD_NONCE_BYTES))
        return header + b"".join(blocks) + inner


def account_key_from_secret(secret: int) -> bytes:
    return sodium.kdf(b"hw-psi-adkey-v1", secret.to_bytes(ELEM_BYTES, "big"), 32)


def pdq_with_coeffs(pixels: np.ndarray) -> tuple[str, np.ndarray, int]:
    """PDQ hex, the 256 real-valued coefficients (for probes) and quality."""
    coeffs, quality = pdqhash.compute_float(np.ascontiguousarray(pixels, dtype=np.uint8))
    bits = (coeffs > np.median(coeffs)).astype(np.uint8)
    return bits_to_hex(bits), np.asarray(coeffs, dtype=np.float64), int(quality)
