"""PDQ perceptual hash (Meta's reference C++ through ``pdqhash``), hex-encoded.

Hex layout is the reference one (``Hash256::format`` / threatexchange): 64 hex characters,
most significant bit of the 256-bit hash first, which is ``np.packbits`` of the vector that
``pdqhash.compute`` returns.

Two ways to hash:

* :func:`pdq_hash` / :func:`pdq_dihedral`: the reference algorithm on exactly the pixels
  given (bit-identical to ``pdqhash.compute`` on the same array).
* :func:`pdq_hash_fast` / :func:`pdq_dihedral_fast`: the hash of the *full-resolution*
  image, estimated from a reduced decode. The reference first turns the image into a
  64x64 luma buffer (two passes of box filters sized from the full image, then point
  sampling); that stage is linear, so its weights are computed once per image size and
  applied to the reduced pixels as two small matrix products (each reduced pixel standing
  for the block of full-resolution pixels it averages). The 64x64 buffer then goes through
  the reference DCT/median code via ``pdqhash`` (a 64x64 input is not filtered again).
  This costs about a millisecond and lands within a few bits of the full-resolution
  reference hash (benchmarks/fastpath_distance.py), whereas hashing the reduced pixels
  directly is 7-20 bits away because PDQ's filter is sized from the image dimensions.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pdqhash

from hashwatch.signals.base import HexSignalType

__all__ = [
    "EXACT_MAX_PIXELS",
    "DIHEDRAL_NAMES",
    "PDQ",
    "PDQ_MIN_QUALITY",
    "PDQ_THRESHOLD",
    "bits_to_hex",
    "hamming_hex",
    "hex_to_bits",
    "pdq_dihedral",
    "pdq_dihedral_coefficients",
    "pdq_dihedral_fast",
    "pdq_hash",
    "pdq_hash_fast",
]

PDQ_THRESHOLD = 31  # Meta's recommended match distance
PDQ_MIN_QUALITY = 50  # Meta: hashes below this quality are too flat to match on

PDQ = HexSignalType(
    "pdq",
    n_bytes=32,
    threshold=PDQ_THRESHOLD,
    metric="hamming",
    min_quality=PDQ_MIN_QUALITY,
    description="PDQ 256-bit perceptual hash (Meta)",
)

# Order of pdqhash.compute_dihedral's output (and of pdq_dihedral's list).
DIHEDRAL_NAMES = (
    "original",
    "rotate90",
    "rotate180",
    "rotate270",
    "flip_vertical",
    "flip_horizontal",
    "rotate90_flip_vertical",
    "rotate90_flip_horizontal",
)


def _check(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim != 3 or pixels.shape[2] < 3 or pixels.dtype != np.uint8:
        raise ValueError(f"expected an (h, w, 3) uint8 array, got {pixels.shape} {pixels.dtype}")
    if pixels.shape[0] < 1 or pixels.shape[1] < 1:
        raise ValueError("empty image")
    # pdqhash reads the buffer directly: it must be C-contiguous.
    return np.ascontiguousarray(pixels)


def bits_to_hex(vector: np.ndarray) -> str:
    return np.packbits(np.asarray(vector, dtype=np.uint8)).tobytes().hex()


def hex_to_bits(value: str) -> np.ndarray:
    return np.unpackbits(np.frombuffer(bytes.fromhex(value), dtype=np.uint8))


def pdq_hash(pixels: np.ndarray) -> tuple[str, int]:
    """PDQ of an RGB uint8 array: (64-char lower-case hex, quality 0-100)."""
    vector, quality = pdqhash.compute(_check(pixels))
    return bits_to_hex(vector), int(quality)


def pdq_dihedral(pixels: np.ndarray) -> tuple[list[str], int]:
    """The 8 dihedral PDQ variants in :data:`DIHEDRAL_NAMES` order, and the quality."""
    vectors, quality = pdqhash.compute_dihedral(_check(pixels))
    return [bits_to_hex(v) for v in vectors], int(quality)


def hamming_hex(a: str, b: str) -> int:
    """Bit distance between two equal-length hex hashes."""
    if len(a) != len(b):
        raise ValueError(f"hashes differ in length ({len(a)} vs {len(b)})")
    return (int(a, 16) ^ int(b, 16)).bit_count()


# ---------------------------------------------------------------------------------------------
# full-resolution estimate from reduced pixels


def _jarosz_window(n: int) -> int:
    # computeJaroszFilterWindowSize(n, 64) in the reference
    return (n + 2 * 64 - 1) // (2 * 64)


def _box_transpose(v: np.ndarray, window: int) -> np.ndarray:
    """Apply the transpose of the reference 1-D box filter (box1DFloat) to rows of ``v``.

    box1DFloat: out[j] = mean(in[lo_j : hi_j]), lo_j = j - (w - h), hi_j = j + h, clipped,
    h = (w + 2) // 2. Transposed: x receives v[j] / (hi_j - lo_j) from every j whose window
    holds x; both window ends grow with j, so those j form a range and prefix sums do it.
    """
    n = v.shape[1]
    half = (window + 2) // 2
    j = np.arange(n)
    lo = np.clip(j - (window - half), 0, n)
    hi = np.clip(j + half, 0, n)
    prefix = np.zeros((v.shape[0], n + 1))
    np.cumsum(v / (hi - lo), axis=1, out=prefix[:, 1:])
    first = np.searchsorted(hi, j, side="right")  # first window ending after x
    stop = np.searchsorted(lo, j, side="right")  # first window starting after x
    return prefix[:, stop] - prefix[:, first]


@lru_cache(maxsize=256)
def _axis_weights(full: int, reduced: int) -> tuple[np.ndarray, np.ndarray]:
    """Weights taking ``reduced`` pixels (each averaging a 1/reduced share of an axis of
    ``full`` pixels) to the reference's 64 filtered samples along that axis.

    Returned banded, as (index, weight) arrays of shape (64, K): sample i is
    ``sum_k weight[i, k] * x[index[i, k]]``. Each sample only sees about 1/32 of the axis, so
    this is ~30x less work than a dense product, and it avoids BLAS, whose thread pool makes
    such small products 50x slower on a busy machine.
    """
    window = _jarosz_window(full)
    centres = ((np.arange(64) + 0.5) * full / 64).astype(np.int64)  # decimateFloat
    onehot = np.zeros((64, full))
    onehot[np.arange(64), np.minimum(centres, full - 1)] = 1.0
    # Reference per axis: sample(box(box(x))); as weights over x: box^T box^T onehot.
    m = _box_transpose(_box_transpose(onehot, window), window)
    # Integrate the full-resolution weights over each reduced pixel's span.
    cum = np.concatenate([np.zeros((64, 1)), np.cumsum(m, axis=1)], axis=1)
    edges = np.arange(reduced + 1) * (full / reduced)
    idx = np.minimum(np.floor(edges).astype(np.int64), full - 1)
    dense = np.diff(cum[:, idx] + (cum[:, idx + 1] - cum[:, idx]) * (edges - idx), axis=1)
    dense[np.abs(dense) < 1e-9] = 0.0  # cumsum round-off outside the band
    nz = dense != 0
    first = nz.argmax(axis=1)
    last = reduced - 1 - nz[:, ::-1].argmax(axis=1)
    k = int((last - first).max()) + 1
    index = first[:, None] + np.arange(k)[None, :]
    inside = index <= last[:, None]
    index = np.minimum(index, reduced - 1)
    weight = np.where(inside, np.take_along_axis(dense, index, axis=1), 0.0)
    return index, weight.astype(np.float32)


def _luma(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 2:  # already luma (decode_for_pdq)
        return pixels
    # Pillow's RGB->L integer formula (0.299/0.587/0.114 in 16-bit fixed point, rounded),
    # so that RGB input and decode_for_pdq's luma input give identical hashes:
    # (19595 R + 38470 G + 7471 B + 0x8000) >> 16. In float32 through OpenCV (half the
    # time of four uint32 passes): every product and sum is an integer below 2^24, so exact
    # in any order, and the scaling by 2^-16 is exact too (all 2^24 colours checked). OpenCV
    # imported here: the library face does not load it for plain PDQ (issue 14).
    import cv2

    acc = cv2.transform(np.ascontiguousarray(pixels[:, :, :3]).astype(np.float32), _LUMA_W)
    return ((acc + 32768.0) * (1.0 / 65536.0)).astype(np.uint8)


_LUMA_W = np.array([[19595.0, 38470.0, 7471.0]], np.float32)


def _luma64(pixels: np.ndarray, full_height: int, full_width: int) -> np.ndarray:
    h, w = pixels.shape[:2]
    luma = _luma(pixels)
    ri, rw = _axis_weights(full_height, h)
    ci, cw = _axis_weights(full_width, w)
    rows = np.einsum("ik,ikw->iw", rw, luma[ri].astype(np.float32, copy=False))  # (64, w)
    buf = np.einsum("jk,ijk->ij", cw, rows[:, ci])  # (64, 64)
    grey = np.clip(np.rint(buf), 0, 255).astype(np.uint8)
    # A 64x64 input passes the reference filter unchanged (window 1, identity sampling).
    return np.repeat(grey[:, :, None], 3, axis=2)


# Full-size images up to this many pixels get the reference hash itself: it is as cheap as
# the estimate there (about 1 ms) and bit-identical.
EXACT_MAX_PIXELS = 256 * 256


def _as_rgb(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 2 and pixels.dtype == np.uint8:
        return np.repeat(pixels[:, :, None], 3, axis=2)
    return _check(pixels)


def _check_any(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 2 and pixels.dtype == np.uint8 and min(pixels.shape) >= 1:
        return pixels
    return _check(pixels)


def _fast_ok(pixels: np.ndarray, full_height: int, full_width: int) -> bool:
    h, w = pixels.shape[:2]
    if full_height < 1 or full_width < 1 or h > full_height or w > full_width:
        raise ValueError(f"pixels {w}x{h} cannot be a reduction of {full_width}x{full_height}")
    return not ((h, w) == (full_height, full_width) and h * w <= EXACT_MAX_PIXELS)


def pdq_hash_fast(pixels: np.ndarray, full_height: int, full_width: int) -> tuple[str, int]:
    """Estimate the reference PDQ of the ``full_height x full_width`` image from ``pixels``
    (the same picture, reduced or not; (h, w, 3) RGB or (h, w) luma). Small full-size
    images (<= EXACT_MAX_PIXELS) get :func:`pdq_hash` itself, bit-identical to the
    reference."""
    pixels = _check_any(pixels)
    if not _fast_ok(pixels, full_height, full_width):
        return pdq_hash(_as_rgb(pixels))
    return pdq_hash(_luma64(pixels, full_height, full_width))


def pdq_dihedral_fast(
    pixels: np.ndarray, full_height: int, full_width: int
) -> tuple[list[str], int]:
    """The 8 dihedral variants, estimated as in :func:`pdq_hash_fast`."""
    pixels = _check_any(pixels)
    if not _fast_ok(pixels, full_height, full_width):
        return pdq_dihedral(_as_rgb(pixels))
    return pdq_dihedral(_luma64(pixels, full_height, full_width))


def pdq_dihedral_coefficients(pixels: np.ndarray) -> tuple[list[np.ndarray], int]:
    """PDQ of each of the 8 dihedral transforms of the picture, as the reference computes it on
    the transformed pixels: 8 float64 arrays (256,) of DCT coefficients (the hash is
    ``coefficients > median``), in :data:`DIHEDRAL_NAMES` order (original, then np.rot90 by
    1, 2, 3 quarter turns, vertical flip, horizontal flip, transpose, anti-transpose), and the
    quality of the original.

    ``pdqhash.compute_dihedral`` derives the variants from one DCT, which is exact for the
    transposes but 10-20 bits off for mirrored pictures: the reference's box filter and
    point sampling are not mirror-symmetric. Here the 64x64 luma buffer of each transform is
    built with the same banded weights as :func:`pdq_hash_fast` (a transpose of the picture
    transposes its buffer; a mirror reverses the weights along that axis), then hashed by the
    reference code: 2 passes over the pixels for all 8 (~1 ms for 768x512) instead of 8 full
    PDQ runs, within a few bits of the reference on the transformed pixels (tests).
    Raises ValueError for anything but (h, w, 3) uint8 or (h, w) uint8 luma."""
    luma = _luma(_check_any(pixels))
    h, w = luma.shape
    ri, rw = _axis_weights(h, h)
    ci, cw = _axis_weights(w, w)
    bufs = {}
    for vflip, rows_src in ((False, ri), (True, h - 1 - ri)):
        rows = np.einsum("ik,ikw->iw", rw, luma[rows_src].astype(np.float32, copy=False))
        for hflip, cols_src in ((False, ci), (True, w - 1 - ci)):
            buf = np.einsum("jk,ijk->ij", cw, rows[:, cols_src])
            bufs[vflip, hflip] = np.clip(np.rint(buf), 0, 255).astype(np.uint8)
    order = (bufs[False, False], bufs[False, True].T, bufs[True, True], bufs[True, False].T,
             bufs[True, False], bufs[False, True], bufs[False, False].T, bufs[True, True].T)
    out, quality = [], 0
    for i, g in enumerate(order):
        c, q = pdqhash.compute_float(np.repeat(np.ascontiguousarray(g)[:, :, None], 3, axis=2))
        out.append(np.asarray(c, dtype=np.float64))
        if i == 0:
            quality = int(q)
    return out, quality
