"""Small pixel helpers shared by the views, regions and scene check (checked input, working
size, PDQ as bytes, rotation, centred crop, popcount table)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import cv2
import numpy as np
import pdqhash

WORK_SIDE = 256  # hashes are computed at most at this size: PDQ itself looks at 64x64


def _check(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim != 3 or pixels.shape[2] < 3 or pixels.dtype != np.uint8:
        raise ValueError("pixels must be an (h, w, 3) uint8 array")
    if pixels.shape[0] < 1 or pixels.shape[1] < 1:
        raise ValueError("empty image")
    return np.ascontiguousarray(pixels[..., :3])


def _work(pixels: np.ndarray, side: int = WORK_SIDE) -> np.ndarray:
    p = _check(pixels)
    h, w = p.shape[:2]
    s = side / max(h, w)
    if s < 1.0:
        p = cv2.resize(p, (max(1, round(w * s)), max(1, round(h * s))),
                       interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(p)


def _pdq(p: np.ndarray) -> tuple[bytes, int]:
    vec, q = pdqhash.compute(np.ascontiguousarray(p))
    return np.packbits(vec.astype(np.uint8)).tobytes(), int(q)


def _luma_f32(p: np.ndarray) -> np.ndarray:
    """The float luma ``pdqhash.compute`` makes of RGB pixels (h, w, 3) uint8, the same
    operations in the same order (float64 sum, then float32), so that a crop of it is the luma
    that ``pdqhash`` would compute for the same crop of ``p``."""
    return (p[:, :, 0] * 0.299 + p[:, :, 1] * 0.587 + p[:, :, 2] * 0.114).astype(np.float32)


@lru_cache(maxsize=1024)
def _pdq_weights(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The PDQ reference's 64 samples along an axis of ``n`` pixels as banded weights: sample
    i = sum_k weight[i, k] * x[index[i, k]], both (64, K). The reference filters the axis twice
    with a box of ``window`` = ceil(n / 128) pixels (box1DFloat: out[j] = mean(x[lo_j:hi_j]),
    lo_j = j - (window - half), hi_j = j + half, clipped to the axis, half = (window + 2) // 2)
    and then takes pixel c_i = int((i + 0.5) * n / 64) (decimateFloat), so sample i averages
    the boxes of the j in c_i's box, each weighted 1 / its length. Same weights as
    :func:`hashwatch.signals.pdq._axis_weights` (n, n), built directly from the two boxes
    (~30 us instead of ~1 ms: a known picture's views have sizes of their own)."""
    window = (n + 2 * 64 - 1) // (2 * 64)
    half = (window + 2) // 2
    j = np.arange(n)
    lo = np.clip(j - (window - half), 0, n)
    hi = np.clip(j + half, 0, n)
    c = np.minimum(((np.arange(64) + 0.5) * n / 64).astype(np.int64), n - 1)
    # first box: the j in [lo[c], hi[c]); second: each j's x in [lo[j], hi[j])
    jj = lo[c][:, None] + np.arange(window)[None, :]  # (64, window)
    jin = jj < hi[c][:, None]
    jj = np.minimum(jj, n - 1)
    base = lo[jj[:, 0]]  # first x any of them reaches
    k = 2 * window + 1
    x = base[:, None] + np.arange(k)[None, :]  # (64, K)
    inside = (x[:, None, :] >= lo[jj][:, :, None]) & (x[:, None, :] < hi[jj][:, :, None])
    share = np.where(jin, 1.0 / (hi[jj] - lo[jj]), 0.0) / (hi[c] - lo[c])[:, None]
    weight = (inside * share[:, :, None]).sum(axis=1)
    return np.minimum(x, n - 1), np.where(x < n, weight, 0.0).astype(np.float32)


# The reference's DCT matrix (pdqhashing.cpp, dct64To16: row i is the (i+1)-th cosine, the DC
# term skipped), in float64 for the product below.
_DCT16 = np.sqrt(2.0 / 64.0) * np.cos(
    (np.pi / 2 / 64.0) * np.arange(1, 17)[:, None] * (2 * np.arange(64)[None, :] + 1))
_F100, _F255 = np.float32(100.0), np.float32(255.0)


def _pdq_luma(luma: np.ndarray) -> tuple[bytes, int]:
    """PDQ (32 bytes, quality) of a picture given as its float luma (h, w) (:func:`_luma_f32`,
    or any 2-D crop of it): what :func:`_pdq` returns for the same pixels, computed without
    filtering every pixel. The reference (Meta's pdqhashing.cpp: two x/y passes of Jarosz box
    filters, then 64x64 point samples, a 16x16 DCT, bits above the median, a gradient quality)
    is linear up to the samples, so the 64x64 samples are taken directly as banded weighted
    sums of the luma (:func:`_pdq_weights`): ~0.1 ms instead of ~0.3 for a 256 x 171 view.
    The samples then differ from the reference's only by float rounding (1e-6 relative), so
    a bit differs only where two DCT coefficients lie within that of the median: 7 of 38,255
    views of the corpus (plain, bordered, at 1/3 size) differ, by 2 bits or one quality step
    (BENCHMARKS.md, "Adding 250,000 known images"; tests/test_known_add.py holds it to
    ``pdqhash``). Under 64 px a side the samples repeat pixels and equal coefficients tie:
    use the reference there (:func:`hashwatch.robust.views.known_extra_views` does). Raises
    ValueError for an empty or non-2-D array."""
    return _pdq_lumas([luma])[0]


def _pdq_lumas(lumas: Sequence[np.ndarray]) -> list[tuple[bytes, int]]:
    """:func:`_pdq_luma` of several pictures: each one's 64x64 samples, then the quality, DCT
    and median of all of them at once (a known image's views: one numpy call per step instead
    of one per view). Raises ValueError for an empty or non-2-D array."""
    bufs = np.empty((len(lumas), 64, 64), np.float32)
    for b, luma in zip(bufs, lumas, strict=True):
        if luma.ndim != 2 or luma.shape[0] < 1 or luma.shape[1] < 1:
            raise ValueError("luma must be a non-empty (h, w) array")
        ri, rw = _pdq_weights(luma.shape[0])
        ci, cw = _pdq_weights(luma.shape[1])
        rows = np.einsum("ik,ikw->iw", rw, luma[ri])  # (64, w)
        b[...] = np.einsum("jk,ijk->ij", cw, rows[:, ci])  # (64, 64), float32
    # computePDQImageDomainQualityMetric: int(((u - v) * 100) / 255) in float, summed, / 90
    dv = ((bufs[:, :-1] - bufs[:, 1:]) * _F100 / _F255).astype(np.int32)
    dh = ((bufs[:, :, :-1] - bufs[:, :, 1:]) * _F100 / _F255).astype(np.int32)
    grad = np.abs(dv).sum(axis=(1, 2)) + np.abs(dh).sum(axis=(1, 2))
    coef = np.matmul(np.matmul(_DCT16, bufs.astype(np.float64)), _DCT16.T).reshape(-1, 256)
    # pdqBuffer16x16ToBits: bit i*16+j set when above the median (torben: the 128th
    # smallest of 256); pdqhash's vector, and so its bytes, runs from bit 255 down
    median = np.partition(coef, 127, axis=1)[:, 127:128]
    codes = np.packbits((coef > median)[:, ::-1], axis=1)
    return [(c.tobytes(), min(100, int(g) // 90)) for c, g in zip(codes, grad, strict=True)]


_DIHEDRAL = ("", ":rot90", ":rot180", ":rot270", ":flipv", ":fliph", ":rot90flipv",
             ":rot90fliph")


def _pdq_dihedral(p: np.ndarray) -> tuple[list[bytes], int]:
    vecs, q = pdqhash.compute_dihedral(np.ascontiguousarray(p))
    return [np.packbits(v.astype(np.uint8)).tobytes() for v in vecs], int(q)


def _rotate(p: np.ndarray, deg: float) -> np.ndarray:
    h, w = p.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), deg, 1.0)
    return cv2.warpAffine(p, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def _rotate_expand(p: np.ndarray, deg: float) -> np.ndarray:
    """``p`` turned by ``deg`` on a canvas grown to hold all of it (black corners)."""
    h, w = p.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), deg, 1.0)
    c, s = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(h * s + w * c + 0.5), int(h * c + w * s + 0.5)
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    return cv2.warpAffine(p, m, (nw, nh), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT)


def _inner_scale(h: int, w: int, deg: float) -> float:
    """Largest centred, aspect-kept share of each side of an ``h`` x ``w`` picture turned by
    ``deg`` on its own canvas that holds no corner of the canvas (what survives turning back)."""
    t = math.radians(abs(deg))
    c, s = math.cos(t), math.sin(t)
    return min(w / (w * c + h * s), h / (w * s + h * c))


def _square(p: np.ndarray) -> np.ndarray:
    """The largest centred square of ``p``."""
    h, w = p.shape[:2]
    side = min(h, w)
    y, x = (h - side) // 2, (w - side) // 2
    return p[y:y + side, x:x + side]


def _centre(p: np.ndarray, s: float) -> np.ndarray:
    h, w = p.shape[:2]
    ch, cw = max(8, round(h * s)), max(8, round(w * s))
    y, x = (h - ch) // 2, (w - cw) // 2
    return p[y:y + ch, x:x + cw]


_POPCOUNT = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1)
