"""Picture regions inside screenshots and collages (query side of the hash and local tiers)."""

from __future__ import annotations

import cv2
import numpy as np

from hashwatch.robust._pixels import _work
from hashwatch.robust.trim import trim_box

REGION_SIDE = 512  # regions are found at this size: a box 1% off already costs PDQ ~30 bits


MAX_REGIONS = 6


def query_regions(pixels: np.ndarray) -> list[tuple[int, int, int, int]]:
    """:func:`find_regions` run at REGION_SIDE, boxes mapped back to ``pixels`` coordinates."""
    p = _work(pixels, REGION_SIDE)
    fy, fx = pixels.shape[0] / p.shape[0], pixels.shape[1] / p.shape[1]
    return [(round(y0 * fy), round(y1 * fy), round(x0 * fx), round(x1 * fx))
            for y0, y1, x0, x1 in find_regions(p)]


def _seam(gray: np.ndarray, axis: int) -> int | None:
    """Index of a straight full-length seam (two pictures butted together) along ``axis``
    (1: a vertical seam at column x), or None."""
    d = np.abs(np.diff(gray.astype(np.int16), axis=axis))  # differences across the seam
    prof = np.median(d, axis=1 - axis) if axis == 1 else np.median(d, axis=1)
    n = prof.shape[0]
    lo, hi = int(n * 0.15), int(n * 0.85)
    if hi <= lo:
        return None
    inner = prof[lo:hi]
    k = int(np.argmax(inner))
    base = float(np.median(prof)) + 1.0
    x = lo + k
    # a seam is a sharp, isolated, full-length jump: most rows jump there, neighbours do not
    frac = float(((d[:, x] if axis == 1 else d[x, :]) > 12).mean())
    near = max(float(prof[max(0, x - 2)]), float(prof[min(n - 1, x + 2)])) + 1.0
    if inner[k] >= max(12.0, 6.0 * base) and frac >= 0.6 and inner[k] >= 4.0 * near:
        return x + 1
    return None


def _ui_mask(pixels: np.ndarray) -> np.ndarray:
    """Pixels of the few dominant flat colours (app background, bubbles, bars, gutters)."""
    q = (pixels >> 3).astype(np.int32)
    key = (q[..., 0] << 10) | (q[..., 1] << 5) | q[..., 2]
    counts = np.bincount(key.ravel(), minlength=1 << 15)
    top = np.flatnonzero(counts >= 0.005 * key.size)
    g = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    flat = cv2.morphologyEx(g, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) <= 6
    mask = np.zeros(key.shape, np.uint8)
    for k in top[np.argsort(-counts[top])][:8]:
        c = np.array([(k >> 10) & 31, (k >> 5) & 31, k & 31]) * 8 + 4
        m = cv2.inRange(pixels, np.clip(c - 8, 0, 255).astype(np.uint8),
                        np.clip(c + 8, 0, 255).astype(np.uint8))
        # A UI colour is flat where it occurs; a photo's common colour (sky, skin) is not.
        sel = m > 0
        if flat[sel].mean() >= 0.85:
            mask |= m
    return mask > 0


def _blobs(pixels: np.ndarray, min_area: float) -> list[tuple[int, int, int, int]]:
    """Large, solid, not-too-thin blobs of non-UI pixels (see :func:`find_regions`)."""
    h, w = pixels.shape[:2]
    content = (~_ui_mask(pixels)).astype(np.uint8)
    k = max(3, (min(h, w) // 80) | 1)
    content = cv2.morphologyEx(content, cv2.MORPH_OPEN, np.ones((k, k), np.uint8))
    content = cv2.morphologyEx(content, cv2.MORPH_CLOSE, np.ones((k, k), np.uint8))
    n, _lab, stats, _ = cv2.connectedComponentsWithStats(content, connectivity=4)
    boxes: list[tuple[int, int, int, int]] = []
    for i in range(1, n):
        x, y, bw, bh, area = (int(v) for v in stats[i])
        if bw * bh < min_area * h * w or min(bw, bh) < 16:
            continue
        if area < 0.6 * bw * bh or max(bw / bh, bh / bw) > 4.0:
            continue
        boxes.append((y, y + bh, x, x + bw))
    return boxes


def find_regions(pixels: np.ndarray, *, min_area: float = 0.04) -> list[tuple[int, int, int, int]]:
    """Boxes (y0, y1, x0, x1) of picture-like rectangles inside a screenshot or collage.

    Pixels of the dominant flat colours (UI background, bubbles, bars, gutters) are taken out;
    what is left is opened (drops text strokes) and closed into blobs; each large, solid,
    not-too-thin blob is a candidate. A blob holding pictures butted together is also split at
    straight seams; each box is then border-trimmed.
    """
    h, w = pixels.shape[:2]
    gray = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    boxes = _blobs(pixels, min_area)
    out: list[tuple[int, int, int, int]] = []
    stack = [(b, 0) for b in boxes]
    while stack and len(out) < 4 * MAX_REGIONS:
        (y0, y1, x0, x1), depth = stack.pop()
        ty0, ty1, tx0, tx1 = trim_box(pixels[y0:y1, x0:x1])
        out.append((y0 + ty0, y0 + ty1, x0 + tx0, x0 + tx1))
        if depth >= 2:
            continue
        sub = gray[y0:y1, x0:x1]
        cut = _seam(sub, 1)
        if cut is not None:
            stack += [((y0, y1, x0, x0 + cut), depth + 1), ((y0, y1, x0 + cut, x1), depth + 1)]
        cut = _seam(sub, 0)
        if cut is not None:
            stack += [((y0, y0 + cut, x0, x1), depth + 1), ((y0 + cut, y1, x0, x1), depth + 1)]
    # The whole image is not a region (it is hashed anyway); largest first, no duplicates.
    out = [b for b in out if (b[1] - b[0]) * (b[3] - b[2]) < 0.9 * h * w
           and (b[1] - b[0]) >= 16 and (b[3] - b[2]) >= 16]
    out = sorted(set(out), key=lambda b: -(b[1] - b[0]) * (b[3] - b[2]))
    return out[:MAX_REGIONS]


MAX_LEAVES = 16  # cells of a 4 x 4 grid
LEAF_MIN_AREA = 0.015  # of the frame: cells of grids up to about 6 x 6


def find_leaves(pixels: np.ndarray) -> list[tuple[int, int, int, int]]:
    """The smallest pictures of a grid or collage: blobs (:func:`find_regions`) split at
    straight seams again and again (up to 4 levels) until no seam is left, each leaf
    border-trimmed; at most MAX_LEAVES, largest first. The keypoint tier's small-picture pass
    gives each its own budget (:func:`hashwatch.robust.local.query_local`)."""
    h, w = pixels.shape[:2]
    gray = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    stack = [(b, 0) for b in _blobs(pixels, LEAF_MIN_AREA)]
    out: list[tuple[int, int, int, int]] = []
    while stack and len(out) < 4 * MAX_LEAVES:
        (y0, y1, x0, x1), depth = stack.pop()
        if (y1 - y0) < 32 or (x1 - x0) < 32:
            continue
        sub = gray[y0:y1, x0:x1]
        cx = _seam(sub, 1) if depth < 4 else None
        cy = _seam(sub, 0) if depth < 4 else None
        if cx is not None:
            stack += [((y0, y1, x0, x0 + cx), depth + 1), ((y0, y1, x0 + cx, x1), depth + 1)]
        elif cy is not None:
            stack += [((y0, y0 + cy, x0, x1), depth + 1), ((y0 + cy, y1, x0, x1), depth + 1)]
        else:
            ty0, ty1, tx0, tx1 = trim_box(pixels[y0:y1, x0:x1])
            out.append((y0 + ty0, y0 + ty1, x0 + tx0, x0 + tx1))
    out = [b for b in out if (b[1] - b[0]) * (b[3] - b[2]) < 0.9 * h * w
           and (b[1] - b[0]) * (b[3] - b[2]) >= LEAF_MIN_AREA * h * w]
    out = sorted(set(out), key=lambda b: -(b[1] - b[0]) * (b[3] - b[2]))
    return out[:MAX_LEAVES]


def query_leaves(pixels: np.ndarray) -> list[tuple[int, int, int, int]]:
    """:func:`find_leaves` run at REGION_SIDE, boxes mapped back to ``pixels`` coordinates."""
    p = _work(pixels, REGION_SIDE)
    fy, fx = pixels.shape[0] / p.shape[0], pixels.shape[1] / p.shape[1]
    return [(round(y0 * fy), round(y1 * fy), round(x0 * fx), round(x1 * fx))
            for y0, y1, x0, x1 in find_leaves(p)]
