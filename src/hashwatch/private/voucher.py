"""Voucher wire format (fixed size for given table parameters) and shared derivations.

    magic "HWV1" | nonce 16 | K key blocks | inner AEAD
    key block  = Q (32) | 3 x (tag 8 | wrapped voucher key 16)      (one entry per cuckoo slot)
    inner      = XChaCha20-Poly1305 under KDF(voucher key), zero nonce (that key is used once)
    inner text = x 16 | share y 16 | detection vector D x 16 | adct 88
    adct       = nonce 24 | XChaCha20-Poly1305(account key, PDQ 32 | image id 16) (72)

Opening a key block: the server computes S = alpha * Q and derives (tag, pad) = KDF(S, Q, nonce);
a slot whose tag equals it yields the voucher key = pad XOR wrapped key. Only a client whose key
was in the table (S = beta * alpha * H(key) + gamma * alpha * G) or a synthetic voucher
(Q = gamma * G, S = gamma * L) produces such a slot.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import sodium
from .field import ELEM_BYTES
from .table import N_HASHES, Params

MAGIC = b"HWV1"
NONCE_BYTES = 16
TAG_BYTES = 8
VKEY_BYTES = 16
SLOT_BYTES = TAG_BYTES + VKEY_BYTES
BLOCK_BYTES = sodium.POINT_BYTES + N_HASHES * SLOT_BYTES
PAYLOAD_BYTES = 32 + 16  # PDQ hash + image id
ADCT_BYTES = sodium.AEAD_NONCE_BYTES + PAYLOAD_BYTES + sodium.AEAD_TAG_BYTES
AD_DOMAIN = b"hw-psi-adct-v1"


def inner_plain_bytes(params: Params) -> int:
    return 2 * ELEM_BYTES + params.dhf_dim * ELEM_BYTES + ADCT_BYTES


def voucher_bytes(params: Params) -> int:
    k = params.key_design.keys_per_image
    return (len(MAGIC) + NONCE_BYTES + k * BLOCK_BYTES + inner_plain_bytes(params)
            + sodium.AEAD_TAG_BYTES)


def slot_secret(s_point: bytes, q_point: bytes, nonce: bytes) -> tuple[bytes, bytes]:
    """(tag, pad) derived from the shared point S."""
    out = sodium.kdf(b"hw-psi-slot-v1", s_point + q_point + nonce, TAG_BYTES + VKEY_BYTES)
    return out[:TAG_BYTES], out[TAG_BYTES:]


def inner_key(vkey: bytes) -> bytes:
    return sodium.kdf(b"hw-psi-inner-v1", vkey, sodium.AEAD_KEY_BYTES)


def xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


@dataclass(frozen=True)
class ParsedVoucher:
    nonce: bytes
    blocks: list[tuple[bytes, list[tuple[bytes, bytes]]]]  # (Q, [(tag, wrapped)] * 3)
    inner: bytes

    @property
    def header(self) -> bytes:
        return MAGIC + self.nonce


class MalformedVoucher(ValueError):
    pass


def parse(params: Params, raw: bytes) -> ParsedVoucher:
    if len(raw) != voucher_bytes(params) or raw[:4] != MAGIC:
        raise MalformedVoucher("wrong size or magic")
    nonce = raw[4 : 4 + NONCE_BYTES]
    off = 4 + NONCE_BYTES
    blocks = []
    for _ in range(params.key_design.keys_per_image):
        q = raw[off : off + 32]
        off += 32
        slots = []
        for _ in range(N_HASHES):
            slots.append((raw[off : off + TAG_BYTES], raw[off + TAG_BYTES : off + SLOT_BYTES]))
            off += SLOT_BYTES
        blocks.append((q, slots))
    return ParsedVoucher(nonce, blocks, raw[off:])
