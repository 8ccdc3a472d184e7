"""Client side (the library a messaging app embeds): image -> voucher, no server round trip.

Per account the device holds a secret seed, from which it derives the account key (the secret of
a Shamir sharing of degree t-1), the polynomial, a PRF key for share x-coordinates and the secret
detection matrix. Each image gets exactly one voucher of fixed size. With probability
``synthetic_rate`` (until a secret per-account budget, drawn uniformly in [0, synthetic_max], is
used up) the voucher is synthetic instead: it opens on the server like a match, but carries a
random share, so below the threshold the server cannot count the real matches.

Keys come from the picture's views (``views``: the 8 flips/turns, and the border-trimmed
picture when there is a border), so a mirrored, turned or bordered copy of a listed picture
opens too. The protocol is Apple's (Bhowmick, Boneh, Myers, Talwar, Tarbe, "The Apple PSI
System", 2021; Apple, "CSAM Detection Technical Summary", 2021) with one change: gamma is drawn
once per voucher instead of once per key. Per voucher, random gamma, Gamma = gamma * G and
gamma * L; per key, random beta, Q = beta * H(key) + Gamma, and per table chunk S = beta * P +
gamma * L, where P is the chunk's decoded point for the key. This saves a fixed-base and a
variable-base scalar multiplication per key; docs/private-matching.md ("Why one gamma per
voucher is enough") gives the security argument.
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

from . import field as gf
from . import sodium
from .field import ELEM_BYTES, P
from .keys import KEY_BYTES, hex_to_bits
from .table import KEY_DOMAIN, PublicTable, TableRejected
from .views import DIHEDRAL, MIN_QUALITY, View, client_views
from .voucher import (
    AD_DOMAIN,
    MAGIC,
    N_VIEWS,
    NONCE_BYTES,
    VKEY_BYTES,
    inner_key,
    key_check,
    slot_pad,
    xor,
)

VIEW_NAMES = tuple("full" + d for d in DIHEDRAL) + tuple("trim" + d for d in DIHEDRAL)


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
    """Vouchers for one account against a verified table (:meth:`PublicTable.open` checks the
    chain, the witnesses and every chunk). ``min_threshold``: refuse a table whose signed
    threshold is below this floor."""

    def __init__(self, table: PublicTable, state: ClientState,
                 pinned_public_key: bytes | None = None, *, min_threshold: int = 2) -> None:
        if pinned_public_key is not None:
            table.verify(pinned_public_key)  # raises TableRejected
        if table.params.threshold < min_threshold:
            # the threshold is signed and public, but a client may also insist on a floor
            raise TableRejected(f"threshold {table.params.threshold} below {min_threshold}")
        if len(table.chunks) > table.params.chunk_slots:
            raise TableRejected("more live chunks than voucher slots")
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

    def voucher_for_views(self, views: list[View], *, image_id: bytes | None = None,
                          synthetic: bool | None = None) -> bytes:
        """One voucher for one picture, from its views (:func:`views.client_views`; empty for
        a picture too flat for PDQ). ``synthetic=None`` lets the client decide (normal use);
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
        hashes = {v.name: v.pdq for v in views}
        ident = hashes.get("full") or (views[0].pdq if views else secrets.token_bytes(32))
        tag = sodium.prf(self._fkey, b"sent" + ident, 12).hex()
        repeat = tag in self.state.sent
        self.state.sent.add(tag)
        if not views or repeat:
            # nothing PDQ can match on, or a repeat that must not show up twice: a voucher
            # that cannot open, same shape.
            keys = [os.urandom(KEY_BYTES) for _ in range(design.keys_per_image)]
        else:
            keys = design.client_keys(views)
        mask = 0
        blob = bytearray()
        for i, name in enumerate(VIEW_NAMES):
            if name in hashes:
                mask |= 1 << i
            blob += hashes.get(name, bytes(32))
        payload = image_id + mask.to_bytes(2, "big") + bytes(blob)
        return self._real(keys, ident, payload)

    def voucher_for_hash(self, pdq_hex: str, coeffs: np.ndarray | None = None, *,
                         quality: int = 100, image_id: bytes | None = None,
                         synthetic: bool | None = None) -> bytes:
        """A voucher from a PDQ hash alone (the ``full`` view only: no flips or borders), with
        its 256 real coefficients if known (they rank the probes; without them all bits count
        as equally likely to flip). Quality < 50: a voucher that cannot match."""
        bits = hex_to_bits(pdq_hex)
        if coeffs is None:
            view = View.from_hash("full", bits, quality)
        else:
            view = View("full", np.asarray(coeffs, dtype=np.float64), quality)
            if not np.array_equal(view.bits, bits):
                raise ValueError("coefficients do not give this hash")
        views = [view] if quality >= MIN_QUALITY else []
        return self.voucher_for_views(views, image_id=image_id, synthetic=synthetic)

    def voucher_for_pixels(self, pixels: np.ndarray, image_id: bytes | None = None) -> bytes:
        """A decoded (h, w, 3) uint8 RGB picture -> its voucher."""
        return self.voucher_for_views(client_views(pixels), image_id=image_id)

    def _slots(self, key: bytes, rank: int, q: bytes, beta: bytes, gl: bytes, nonce: bytes,
               vkey: bytes) -> list[bytes]:
        """One wrapped voucher key per live chunk this key probes (every key probes the base;
        the ``delta_openings`` are shared out among the live deltas, best keys first), random
        slots to fill up, shuffled."""
        p = self.params
        slots = []
        per_delta = p.delta_openings // max(1, len(self.table.chunks) - 1)
        for c, chunk in enumerate(self.table.chunks):
            if c > 0 and rank >= per_delta:
                break
            shared = sodium.point_add(sodium.scalar_mult(beta, chunk.decode(key)), gl)
            slots.append(xor(slot_pad(shared, q, nonce), vkey))
        slots += [os.urandom(VKEY_BYTES) for _ in range(p.chunk_slots - len(slots))]
        self._rng.shuffle(slots)
        return slots

    def _real(self, keys: list[bytes], ident: bytes, payload: bytes) -> bytes:
        p = self.params
        nonce = os.urandom(NONCE_BYTES)
        vkey = os.urandom(VKEY_BYTES)
        blocks = []
        # one gamma per voucher (Gamma = gamma * G in every Q, gamma * L in every S): each Q
        # still carries its own beta, which hides H(key) and makes every S that does not open
        # unknowable without gamma (docs/private-matching.md)
        gamma = sodium.random_scalar()
        big_gamma = sodium.scalar_mult_base(gamma)
        gl = sodium.scalar_mult(gamma, p.blind_pub)
        for rank, key in enumerate(keys):
            h = sodium.hash_to_point(KEY_DOMAIN, key)
            beta = sodium.random_scalar()
            q = sodium.point_add(sodium.scalar_mult(beta, h), big_gamma)
            blocks.append(q + b"".join(self._slots(key, rank, q, beta, gl, nonce, vkey)))
        # the server must not learn which key (view, probe) opened
        self._rng.shuffle(blocks)
        # share x from the picture's hash: the same picture vouchered twice yields one share
        x = gf.from_hash(sodium.prf(self._fkey, ident, 32)) or 1
        y = gf.poly_eval(self._poly, x)
        vec = gf.dhf_vector(self._matrix, x)
        adct = sodium.aead_encrypt(self.account_key, payload, AD_DOMAIN)
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
            slots = [os.urandom(VKEY_BYTES) for _ in range(p.chunk_slots)]
            if i in opened:
                # Q = gamma*G: the server's alpha*Q equals gamma*L, which the client knows.
                gamma = sodium.random_scalar()
                q = sodium.scalar_mult_base(gamma)
                pad = slot_pad(sodium.scalar_mult(gamma, p.blind_pub), q, nonce)
                slots[self._rng.randrange(p.chunk_slots)] = xor(pad, vkey)
            else:
                q = sodium.random_point()
            blocks.append(q + b"".join(slots))
        rand = [secrets.randbelow(P - 1) + 1 for _ in range(2 + p.dhf_dim)]
        plain = b"".join(gf.to_bytes(v) for v in rand) + os.urandom(
            sodium.AEAD_NONCE_BYTES + 18 + N_VIEWS * 32 + sodium.AEAD_TAG_BYTES)
        return self._assemble(nonce, blocks, vkey, plain)

    def _assemble(self, nonce: bytes, blocks: list[bytes], vkey: bytes, plain: bytes) -> bytes:
        header = MAGIC + self.params.epoch.to_bytes(4, "big") + nonce + key_check(vkey)
        # zero nonce: the inner key is fresh for this voucher and used once
        inner = sodium.aead_encrypt(inner_key(vkey), plain, header,
                                    nonce=bytes(sodium.AEAD_NONCE_BYTES))
        return header + b"".join(blocks) + inner


def account_key_from_secret(secret: int) -> bytes:
    return sodium.kdf(b"hw-psi-adkey-v1", secret.to_bytes(ELEM_BYTES, "big"), 32)
