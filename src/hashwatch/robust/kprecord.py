"""The keypoint index's verification records: one known image's stored keypoints as the
bytes kept on disk and read back for verification (record format 2: 3-byte positions,
descriptors cut to their first bytes; format 1 still read)."""

from __future__ import annotations

import numpy as np

from hashwatch.robust.local import LocalFeatures

# -- verification records -------------------------------------------------------------------

# Record format 2 (issue 10's 4 KB per image on disk): positions packed in 3 bytes and each
# descriptor cut to its first ``desc_bytes`` bytes. ORB's 256 tests come in the order of
# Rublee et al.'s greedy learning (ICCV 2011, section 4.3: each next test the one of highest
# variance least correlated with those taken; OpenCV's ``bit_pattern_31_`` keeps that order,
# test i in byte i // 8), so a prefix keeps the most informative, least redundant tests.
# Format 1 (magic HWKV: uint16 positions in 1/8 px, 32-byte descriptors) is still read, so
# saved study indexes stay usable; the product rebuilds an index of that format from the
# database's stored keypoints (KeypointFeed.open), so its records get the format's savings.
FORMAT = 2
_VERIFY_MAGIC = b"HWK2"
_VERIFY_MAGIC_1 = b"HWKV"
_HEAD = 12  # magic, n, w, h (uint16), position scale exponent (int8), descriptor bytes (uint8)
_XY_BITS = 12  # each coordinate in 12 bits, x and y packed little-endian into 3 bytes


def _xy_exponent(size: tuple[int, int]) -> int:
    """Positions are stored in units of 2^-e px, e the largest <= 3 (1/8 px, the precision
    format 1 had) whose largest coordinate still fits in 12 bits."""
    top = max(1, int(size[0]), int(size[1]))
    e = 3
    while e > -8 and top * 2.0 ** e > (1 << _XY_BITS) - 1:
        e -= 1
    return e


def verify_record_bytes(n: int, desc_bytes: int) -> int:
    """Bytes of one record of ``n`` keypoints: header + n x (3 + ``desc_bytes``)."""
    return _HEAD + n * (3 + desc_bytes)


def encode_verify(f: LocalFeatures, desc_bytes: int = 32) -> bytes:
    """Record of one keypoint set (at most 65,535 keypoints): magic ``HWK2``, n, w, h
    (uint16), the position scale exponent e (int8: positions in 2^-e px, see
    :func:`_xy_exponent`), ``desc_bytes`` (uint8, 1-32), then per keypoint x and y in 12
    bits each (3 bytes, little-endian, x in the low bits), then the first ``desc_bytes``
    bytes of each ORB descriptor (the first 8 ``desc_bytes`` of ORB's tests, Rublee et al.
    2011's learned order). :func:`verify_record_bytes` bytes. Raises ValueError on
    ``desc_bytes`` outside 1-32 or a size beyond uint16."""
    if not 1 <= desc_bytes <= 32:
        raise ValueError(f"desc_bytes must be 1-32, not {desc_bytes}")
    w, h = int(f.size[0]), int(f.size[1])
    if not (0 <= w <= 65535 and 0 <= h <= 65535) or len(f.desc) > 65535:
        raise ValueError("keypoint set too large for a verification record")
    n = len(f.desc)
    e = _xy_exponent((w, h))
    top = (1 << _XY_BITS) - 1
    q = np.clip(np.round(np.asarray(f.xy, np.float64).reshape(n, 2) * 2.0 ** e), 0, top)
    v = q[:, 0].astype(np.uint32) | (q[:, 1].astype(np.uint32) << _XY_BITS)
    packed = np.stack([v & 0xFF, (v >> 8) & 0xFF, v >> 16], axis=1).astype(np.uint8)
    head = _VERIFY_MAGIC + np.array([n, w, h], "<u2").tobytes() + \
        np.array([e], np.int8).tobytes() + bytes([desc_bytes])
    desc = np.ascontiguousarray(np.asarray(f.desc, np.uint8).reshape(n, 32)[:, :desc_bytes])
    return head + packed.tobytes() + desc.tobytes()


def decode_verify(buf: memoryview | bytes) -> LocalFeatures:
    """Inverse of :func:`encode_verify`: positions (n, 2) float32 in px (to 2^-e px),
    descriptors (n, 32) uint8 with the bytes the record did not keep set to 0, and
    ``extra["desc_bytes"]`` the bytes it kept (the verification compares those only:
    :func:`hashwatch.robust.verify.candidate_pairs`). Raises ValueError on a buffer that is
    not a whole format-2 record."""
    b = bytes(buf[:_HEAD])
    if b[:4] == _VERIFY_MAGIC_1:
        return _decode_verify_1(buf)
    if len(b) < _HEAD or b[:4] != _VERIFY_MAGIC:
        raise ValueError("not a keypoint verification record")
    n, w, h = (int(v) for v in np.frombuffer(b, "<u2", 3, 4))
    e = int(np.frombuffer(b, np.int8, 1, 10)[0])
    nb = b[11]
    if not 1 <= nb <= 32 or len(buf) < verify_record_bytes(n, nb):
        raise ValueError("truncated or corrupt keypoint verification record")
    p = np.frombuffer(buf, np.uint8, 3 * n, _HEAD).reshape(n, 3).astype(np.uint32)
    v = p[:, 0] | (p[:, 1] << 8) | (p[:, 2] << 16)
    top = (1 << _XY_BITS) - 1
    xy = np.stack([v & top, v >> _XY_BITS], axis=1).astype(np.float32) / np.float32(2.0 ** e)
    desc = np.zeros((n, 32), np.uint8)
    desc[:, :nb] = np.frombuffer(buf, np.uint8, nb * n, _HEAD + 3 * n).reshape(n, nb)
    return LocalFeatures(xy, desc, (w, h), {"desc_bytes": nb} if nb < 32 else {})


def _decode_verify_1(buf: memoryview | bytes) -> LocalFeatures:
    """A format-1 record: magic, n, w, h (uint16), positions (uint16 pairs in 1/8 px),
    32-byte descriptors; 10 + 36 n bytes."""
    b = bytes(buf[:10])
    if len(b) < 10:
        raise ValueError("truncated keypoint verification record")
    n, w, h = (int(v) for v in np.frombuffer(b, "<u2", 3, 4))
    if len(buf) < 10 + 36 * n:
        raise ValueError("truncated or corrupt keypoint verification record")
    xy = np.frombuffer(buf, "<u2", 2 * n, 10).reshape(n, 2).astype(np.float32) / 8
    desc = np.frombuffer(buf, np.uint8, 32 * n, 10 + 4 * n).reshape(n, 32).copy()
    return LocalFeatures(xy, desc, (w, h))
