"""The few libsodium primitives private matching needs, through pysodium.

pysodium is a maintained binding over the system libsodium (it covers ristretto255, which PyNaCl
does not). Everything crypto goes through this module so the binding can be swapped in one place.
Measured: a ctypes layer of our own is no faster (the ristretto decode dominates each call).
"""

from __future__ import annotations

import hashlib
import hmac
import os

import pysodium as _s

POINT_BYTES = 32
SCALAR_BYTES = 32
AEAD_KEY_BYTES = 32
AEAD_NONCE_BYTES = 24
AEAD_TAG_BYTES = 16
SIGN_PK_BYTES = 32
SIGN_SK_BYTES = 64
SIGNATURE_BYTES = 64
_ZERO_NONCE = bytes(AEAD_NONCE_BYTES)


class CryptoError(Exception):
    """Decryption or verification failed (never says why: no oracle)."""


def random_bytes(n: int) -> bytes:
    return os.urandom(n)


def hash_to_point(domain: bytes, data: bytes) -> bytes:
    """Map bytes to a ristretto255 point (Elligator via crypto_core_ristretto255_from_hash)."""
    return _s.crypto_core_ristretto255_from_hash(hashlib.sha512(domain + b"\x00" + data).digest())


def random_point() -> bytes:
    return _s.crypto_core_ristretto255_random()


def random_scalar() -> bytes:
    return _s.crypto_core_ristretto255_scalar_random()


def scalar_reduce(wide: bytes) -> bytes:
    """A 64-byte string reduced modulo the group order: a uniform scalar from a hash/KDF."""
    return _s.crypto_core_ristretto255_scalar_reduce(wide)


def scalar_mult(scalar: bytes, point: bytes) -> bytes:
    # pysodium raises on the identity result, which only a malicious input can produce.
    try:
        return _s.crypto_scalarmult_ristretto255(scalar, point)
    except ValueError as e:
        raise CryptoError("invalid point") from e


def scalar_mult_base(scalar: bytes) -> bytes:
    return _s.crypto_scalarmult_ristretto255_base(scalar)


def point_add(p: bytes, q: bytes) -> bytes:
    return _s.crypto_core_ristretto255_add(p, q)


def point_sub(p: bytes, q: bytes) -> bytes:
    return _s.crypto_core_ristretto255_sub(p, q)


def is_valid_point(p: bytes) -> bool:
    return len(p) == POINT_BYTES and bool(_s.crypto_core_ristretto255_is_valid_point(p))


def kdf(domain: bytes, data: bytes, n: int = 32) -> bytes:
    """BLAKE2b keyed derivation, domain-separated."""
    return hashlib.blake2b(data, digest_size=n, person=domain[:16].ljust(16, b"\x00")).digest()


def prf(key: bytes, data: bytes, n: int = 32) -> bytes:
    return hashlib.blake2b(data, digest_size=n, key=key).digest()


def aead_encrypt(key: bytes, plaintext: bytes, ad: bytes = b"",
                 nonce: bytes | None = None) -> bytes:
    """XChaCha20-Poly1305. ``nonce=None`` draws a random nonce and prepends it.

    A caller may pass the zero nonce only with a key used exactly once (fresh per message)."""
    if nonce is None:
        n = os.urandom(AEAD_NONCE_BYTES)
        return n + _s.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, n, key)
    return _s.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, nonce, key)


def aead_decrypt(key: bytes, ciphertext: bytes, ad: bytes = b"",
                 nonce: bytes | None = None) -> bytes:
    try:
        if nonce is None:
            n, c = ciphertext[:AEAD_NONCE_BYTES], ciphertext[AEAD_NONCE_BYTES:]
            return _s.crypto_aead_xchacha20poly1305_ietf_decrypt(c, ad, n, key)
        return _s.crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, ad, nonce, key)
    except Exception as e:  # pysodium raises ValueError on a bad tag
        raise CryptoError("decryption failed") from e


def wrap_once(key: bytes, plaintext: bytes) -> bytes:
    """AEAD with the zero nonce, for keys derived fresh for this one message."""
    return aead_encrypt(key, plaintext, nonce=_ZERO_NONCE)


def unwrap_once(key: bytes, ciphertext: bytes) -> bytes:
    return aead_decrypt(key, ciphertext, nonce=_ZERO_NONCE)


def sign_keypair(seed: bytes | None = None) -> tuple[bytes, bytes]:
    """Ed25519 (public key, secret key)."""
    if seed is None:
        return _s.crypto_sign_keypair()
    return _s.crypto_sign_seed_keypair(seed)


def sign(sk: bytes, message: bytes) -> bytes:
    return _s.crypto_sign_detached(message, sk)


def verify(pk: bytes, message: bytes, signature: bytes) -> bool:
    try:
        _s.crypto_sign_verify_detached(signature, message, pk)
        return True
    except Exception:
        return False


def ct_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)
