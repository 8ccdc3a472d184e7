"""Voucher wire format (fixed size for given epoch parameters) and shared derivations.

    header     = magic "HWV2" | epoch u32 | nonce 16 | key check 8
    key block  = Q (32) | chunk_slots x wrapped voucher key (16)   (slots shuffled per block)
    inner      = XChaCha20-Poly1305 under KDF(voucher key), zero nonce (that key is used once),
                 the header as associated data
    inner text = x 16 | share y 16 | detection vector D x 16 | adct
    adct       = nonce 24 | XChaCha20-Poly1305(account key, payload) (tag 16)
    payload    = image id 16 | view mask u16 | 16 view PDQ hashes x 32 (absent views: zeros)

Opening a key block (after Apple's PSI, Bhowmick et al. 2021, with one opening per table chunk
instead of one per cuckoo position): the server computes S = alpha * Q and the pad
KDF(S, Q, nonce); a slot XOR the pad is the voucher key exactly when its KDF starts with the
key check. Only a client whose key was in a chunk (then S = beta * alpha * H(key) + gamma *
alpha * G) or a synthetic voucher (Q = gamma * G, S = gamma * L) produces such a slot. The key
check costs 8 bytes per voucher instead of a tag per slot.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import sodium
from .field import ELEM_BYTES
from .table import Params

MAGIC = b"HWV2"
NONCE_BYTES = 16
CHECK_BYTES = 8
VKEY_BYTES = 16
HEADER_BYTES = len(MAGIC) + 4 + NONCE_BYTES + CHECK_BYTES
N_VIEWS = 16
PAYLOAD_BYTES = 16 + 2 + N_VIEWS * 32  # image id, view mask, view hashes
ADCT_BYTES = sodium.AEAD_NONCE_BYTES + PAYLOAD_BYTES + sodium.AEAD_TAG_BYTES
AD_DOMAIN = b"hw-psi-adct-v2"


def block_bytes(params: Params) -> int:
    return sodium.POINT_BYTES + params.chunk_slots * VKEY_BYTES


def inner_plain_bytes(params: Params) -> int:
    return 2 * ELEM_BYTES + params.dhf_dim * ELEM_BYTES + ADCT_BYTES


def voucher_bytes(params: Params) -> int:
    return (HEADER_BYTES + params.key_design.keys_per_image * block_bytes(params)
            + inner_plain_bytes(params) + sodium.AEAD_TAG_BYTES)


def slot_pad(s_point: bytes, q_point: bytes, nonce: bytes) -> bytes:
    """The pad a slot's voucher key is XORed with, derived from the shared point S."""
    return sodium.kdf(b"hw-psi-slot-v2", s_point + q_point + nonce, VKEY_BYTES)


def key_check(vkey: bytes) -> bytes:
    return sodium.kdf(b"hw-psi-kcheck-v2", vkey, CHECK_BYTES)


def inner_key(vkey: bytes) -> bytes:
    return sodium.kdf(b"hw-psi-inner-v2", vkey, sodium.AEAD_KEY_BYTES)


def xor(a: bytes, b: bytes) -> bytes:
    if len(a) != len(b):
        raise ValueError("xor of strings of different lengths")
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(len(a), "little")


@dataclass(frozen=True)
class ParsedVoucher:
    epoch: int
    nonce: bytes
    check: bytes
    blocks: list[tuple[bytes, list[bytes]]]  # (Q, [wrapped key] * chunk_slots)
    inner: bytes

    @property
    def header(self) -> bytes:
        return MAGIC + self.epoch.to_bytes(4, "big") + self.nonce + self.check


class MalformedVoucher(ValueError):
    pass


def voucher_epoch(raw: bytes) -> int:
    """The epoch a voucher was made for (raises MalformedVoucher)."""
    if len(raw) < HEADER_BYTES or raw[:4] != MAGIC:
        raise MalformedVoucher("not a voucher")
    return int.from_bytes(raw[4:8], "big")


def parse(params: Params, raw: bytes) -> ParsedVoucher:
    if len(raw) != voucher_bytes(params) or raw[:4] != MAGIC:
        raise MalformedVoucher("wrong size or magic")
    epoch = int.from_bytes(raw[4:8], "big")
    if epoch != params.epoch:
        raise MalformedVoucher("voucher of another epoch")
    off = 8
    nonce = raw[off : off + NONCE_BYTES]
    off += NONCE_BYTES
    check = raw[off : off + CHECK_BYTES]
    off += CHECK_BYTES
    blocks = []
    for _ in range(params.key_design.keys_per_image):
        q = raw[off : off + 32]
        off += 32
        slots = []
        for _ in range(params.chunk_slots):
            slots.append(raw[off : off + VKEY_BYTES])
            off += VKEY_BYTES
        blocks.append((q, slots))
    return ParsedVoucher(epoch, nonce, check, blocks, raw[off:])
