"""Small pixel helpers shared by the views, regions and scene check (checked input, working
size, PDQ as bytes, rotation, centred crop, popcount table)."""

from __future__ import annotations

import math

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
