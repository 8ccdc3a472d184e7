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


def query_rectangles(pixels: np.ndarray, boxes: list[tuple[int, int, int, int]] | None = None
                     ) -> list[tuple[int, int, int, int]]:
    """:func:`find_rectangles` run at REGION_SIDE, less those that a box of ``boxes`` (regions
    in ``pixels`` coordinates) already covers (IoU > 0.5), mapped back to ``pixels``
    coordinates with each side snapped to the strongest edge nearby at full size (a box 1%
    off costs PDQ ~30 bits). ``pixels``: RGB (h, w, 3) or grey (h, w)."""
    px = pixels if pixels.ndim == 3 else pixels[..., None]
    p = _work(pixels, REGION_SIDE) if pixels.ndim == 3 else _work_grey(pixels)[..., None]
    fy, fx = pixels.shape[0] / p.shape[0], pixels.shape[1] / p.shape[1]
    out = []
    for y0, y1, x0, x1 in find_rectangles(p):
        box = (round(y0 * fy), round(y1 * fy), round(x0 * fx), round(x1 * fx))
        if all(_iou(box, b) <= RECT_REGION_IOU for b in boxes or []):
            out.append(_snap(px, box, max(2, round(max(fx, fy)) + 1)))
    return out


def _snap(pixels: np.ndarray, box: tuple[int, int, int, int], r: int
          ) -> tuple[int, int, int, int]:
    """``box`` with each side moved (by up to ``r`` px) to where the mean jump across it,
    along the side's length, is largest (sides on the frame's edge stay there), then
    border-trimmed. ``pixels``: (h, w, channels)."""
    h, w = pixels.shape[:2]
    y0, y1, x0, x1 = box
    def best(lines: np.ndarray, at: int, lo: int, hi: int) -> int:
        # lines: the picture's rows (or columns), jump at boundary b is lines[b] - lines[b-1]
        if at <= 0 or at >= hi:
            return at
        cand = range(max(1, at - r), min(hi - 1, at + r) + 1)
        score = [float(np.abs(lines[b] - lines[b - 1]).max(axis=-1).mean()) for b in cand]
        return list(cand)[int(np.argmax(score))] if score else at

    rows = pixels[:, x0:x1].astype(np.float32)  # (h, n, 3)
    cols = pixels[y0:y1].astype(np.float32).transpose(1, 0, 2)
    ny0 = best(rows, y0, 0, h)
    ny1 = best(rows, y1, 0, h)
    nx0 = best(cols, x0, 0, w)
    nx1 = best(cols, x1, 0, w)
    if ny1 - ny0 < 8 or nx1 - nx0 < 8:
        return box
    # the outer edge of a thin frame may have won: trim it again
    ty0, ty1, tx0, tx1 = trim_box(pixels[ny0:ny1, nx0:nx1])
    return ny0 + ty0, ny0 + ty1, nx0 + tx0, nx0 + tx1


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


# -- grid cells -----------------------------------------------------------------------------

MAX_CELLS = 16  # cells of a 4 x 4 grid; a finer grid is not split (its cells are thumbnails)
GRID_MAX_SPLIT = 6  # parts along one side
GRID_LINE_MIN = 0.15  # line contrast every inner line of a grid must reach (see grid_lines)
GRID_LINE_MEAN = 0.2  # ... and their mean
GRID_LINE_WEAK = 0.12  # mean an axis with no split needs when the other one holds a split
GRID_MIN_SIDE = 256  # frames smaller than this (longer side, px) are not split into cells
GRID_SLACK = 0.012  # a line may sit this far (of the side) from its place in an even split


def line_evidence(gray: np.ndarray, axis: int) -> np.ndarray:
    """Per position along ``axis`` (1: columns; entry x is the boundary between columns x and
    x + 1), the fraction of the lines across it where the picture is either cut there (the
    jump between x and x + 1 is at least 6 grey levels and larger than every jump within 3 px
    on either side: two pictures butted together) or flat (a gutter: a jump of at most 2).
    A straight seam or gutter through the whole frame scores near 1; inside a photograph the
    seam term stays near 0.2 and the flat term is rarely high along a whole line."""
    g = gray.astype(np.int16)
    if axis == 0:
        g = g.T
    d = np.abs(np.diff(g, axis=1))
    n = d.shape[1]
    pad = np.pad(d, ((0, 0), (3, 3)))
    near = np.maximum.reduce([pad[:, 3 + k:3 + k + n] for k in (-3, -2, -1, 1, 2, 3)])
    seam = ((d > near) & (d >= 6)).mean(axis=0)
    flat = (d <= 2).mean(axis=0)
    return np.maximum(seam, flat)


def line_contrast(e: np.ndarray) -> np.ndarray:
    """Line evidence above its surroundings: ``e`` minus the larger of its median over 6-24
    positions on either side and its mean at 8 and 16 positions on either side (JPEG's 8-px
    block edges line up along a whole native-size picture and must not pass for seams)."""
    p = np.pad(e, 24, mode="edge")
    w = np.lib.stride_tricks.sliding_window_view(p, 49)  # w[x] = e[x - 24 .. x + 24]
    base = np.median(np.concatenate([w[:, :19], w[:, 30:]], axis=1), axis=1)
    phase = w[:, [8, 16, 32, 40]].mean(axis=1)
    return e - np.maximum(base, phase)


def _split_values(e: np.ndarray, k: int) -> list[float]:
    """Line contrast at the k - 1 inner places of an even split into k parts (best within
    GRID_SLACK of each place)."""
    n = len(e) + 1
    r = max(2, round(GRID_SLACK * n))
    return [float(e[max(0, round(j * n / k) - 1 - r):round(j * n / k) + r].max())
            for j in range(1, k)]


def _split_mean(gray: np.ndarray, axis: int, k: int) -> float:
    return float(np.mean(_split_values(line_contrast(line_evidence(gray, axis)), k)))


def grid_lines(gray: np.ndarray, axis: int) -> int:
    """Into how many equal parts (2..GRID_MAX_SPLIT) straight full-length lines split
    ``gray`` along ``axis``, or 1. A split into k parts holds when at each of its k - 1 inner
    places (within GRID_SLACK of the side, which absorbs gutters) the line contrast
    (:func:`line_contrast` of :func:`line_evidence`) reaches GRID_LINE_MIN and their mean
    GRID_LINE_MEAN; the largest split that holds wins (a 4 x 4 grid also holds as 2 x 2, a
    3 x 3 one not as 6 x 6), a finer one only when its new lines reach half the coarser
    one's mean, another one only with a higher mean. Thresholds from 1,500 corpus photographs
    of 256 px or more (none reaches 0.17 at any split) and the suite's 3 x 3 / 4 x 4 grids
    (BENCHMARKS.md, issue 11)."""
    e = line_contrast(line_evidence(gray, axis))
    if len(e) < 63:
        return 1
    best, best_mean = 1, 0.0
    for k in range(2, GRID_MAX_SPLIT + 1):
        vals = _split_values(e, k)
        mean = float(np.mean(vals))
        if min(vals) < GRID_LINE_MIN or mean < GRID_LINE_MEAN:
            continue
        if best > 1 and k % best == 0:
            # a finer grid: its new lines must carry half the evidence of the coarser one's
            # (straight edges inside the pictures can line up by chance once)
            new = [v for j, v in enumerate(vals, 1) if (j * best) % k]
            if min(new) < 0.5 * best_mean:
                continue
        elif best > 1 and mean <= best_mean:
            continue
        best, best_mean = k, mean
    return best


def find_cells(pixels: np.ndarray, boxes: list[tuple[int, int, int, int]] | None = None
               ) -> list[tuple[int, int, int, int]]:
    """Boxes (y0, y1, x0, x1) of the cells of a grid of pictures: the frame (border-trimmed),
    or else the largest of ``boxes`` (regions found inside a screenshot) covering at least a
    fifth of the frame, split into the equal parts straight full-length seams or gutters cut
    it into (:func:`grid_lines`, at least 2 x 2 and at most MAX_CELLS cells), each cell
    border-trimmed (gutter leftovers). [] when no grid is found. ``pixels``: RGB (h, w, 3) or
    grey (h, w), at about REGION_SIDE. Cost: two passes of differences over the frame."""
    h, w = pixels.shape[:2]
    gray = pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    pixels = pixels if pixels.ndim == 3 else pixels[..., None]  # trim_box wants channels
    frames = [trim_box(pixels)]
    frames += [b for b in (boxes or []) if (b[1] - b[0]) * (b[3] - b[2]) >= 0.2 * h * w]
    for y0, y1, x0, x1 in frames:
        if max(y1 - y0, x1 - x0) < GRID_MIN_SIDE:
            continue
        sub = gray[y0:y1, x0:x1]
        ny, nx = grid_lines(sub, 0), grid_lines(sub, 1)
        # one weak line (two similar pictures side by side): the other axis's finer split
        # is taken when this axis's lines at that split still stand out on average
        k, lo = max(nx, ny), min(nx, ny)
        if k >= 2 and lo != k and k % lo == 0:
            need = GRID_LINE_WEAK if lo == 1 else GRID_LINE_MEAN
            if _split_mean(sub, 0 if ny == lo else 1, k) >= need:
                nx = ny = k
        if nx < 2 or ny < 2 or nx * ny > MAX_CELLS:
            continue
        out = []
        ys = [y0 + round(i * (y1 - y0) / ny) for i in range(ny + 1)]
        xs = [x0 + round(i * (x1 - x0) / nx) for i in range(nx + 1)]
        for a, b in zip(ys[:-1], ys[1:], strict=True):
            for c, d in zip(xs[:-1], xs[1:], strict=True):
                ty0, ty1, tx0, tx1 = trim_box(pixels[a:b, c:d])
                out.append((a + ty0, a + ty1, c + tx0, c + tx1))
        return out
    return []


def query_cells(pixels: np.ndarray, boxes: list[tuple[int, int, int, int]] | None = None
                ) -> list[tuple[int, int, int, int]]:
    """:func:`find_cells` run at REGION_SIDE (``boxes``: regions in ``pixels`` coordinates,
    e.g. from :func:`query_regions`), cells mapped back to ``pixels`` coordinates."""
    p = _work(pixels, REGION_SIDE) if pixels.ndim == 3 else _work_grey(pixels)
    fy, fx = pixels.shape[0] / p.shape[0], pixels.shape[1] / p.shape[1]
    sb = [(round(y0 / fy), round(y1 / fy), round(x0 / fx), round(x1 / fx))
          for y0, y1, x0, x1 in boxes or []]
    return [(round(y0 * fy), round(y1 * fy), round(x0 * fx), round(x1 * fx))
            for y0, y1, x0, x1 in find_cells(p, sb)]


def _work_grey(gray: np.ndarray) -> np.ndarray:
    h, w = gray.shape
    s = REGION_SIDE / max(h, w)
    if s >= 1.0:
        return np.ascontiguousarray(gray)
    return cv2.resize(gray, (max(1, round(w * s)), max(1, round(h * s))),
                      interpolation=cv2.INTER_AREA)


# -- pictures pasted onto a busy background --------------------------------------------------

MAX_RECTS = 2  # pasted-picture rectangles proposed per query (after the regions)
RECT_SIDE_SUPPORT = 0.6  # share of each side's length that must be a straight edge
RECT_MIN_SIDE = 0.15  # of the frame's side, each side of a proposed rectangle ...
RECT_MAX_AREA = 0.8  # ... and at most this share of the frame's area
RECT_LINES = 24  # candidate rows and columns looked at, each way
RECT_REGION_IOU = 0.9  # a rectangle is dropped only as a near copy of a region


def _edge_runs(pixels: np.ndarray, axis: int) -> np.ndarray:
    """Per boundary between lines (axis 0: between rows y and y + 1), per position along it:
    1 where the picture jumps there by at least 8 levels in some colour channel (blue sky on
    green leaves is one grey), more than within 3 lines on either side (a straight edge
    between two pictures, not texture), allowing the edge to wander by one line. Shape
    (h - 1, w) for axis 0."""
    p = np.ascontiguousarray(pixels)
    d = cv2.absdiff(p[1:], p[:-1]) if axis == 0 else cv2.absdiff(p[:, 1:], p[:, :-1])
    if d.ndim == 3:
        c = cv2.split(d)
        d = c[0] if len(c) == 1 else cv2.max(cv2.max(c[0], c[1]), c[2])
    if axis == 1:
        d = np.ascontiguousarray(d.T)
    # d at least its neighbours within 3 lines (the window's max includes d itself)
    near = cv2.dilate(d, np.ones((7, 1), np.uint8), borderType=cv2.BORDER_CONSTANT,
                      borderValue=0)
    e = ((d >= 8) & (d >= near)).astype(np.uint8)
    return cv2.dilate(e, np.ones((3, 1), np.uint8), borderType=cv2.BORDER_CONSTANT,
                      borderValue=0)


def find_rectangles(pixels: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Boxes (y0, y1, x0, x1) of pictures pasted onto a background that is not flat (a photo
    held up in a photo, a picture pasted onto a busy scene): axis-parallel rectangles whose
    four sides are straight edges along at least RECT_SIDE_SUPPORT of their length, each side
    at least RECT_MIN_SIDE of the frame's, at most RECT_MAX_AREA of its area; the best
    supported first (its weakest seen side; the frame's own edges stand in for the sides of a
    picture pasted into a corner, at a small discount; a box needs a seen side each way),
    overlapping ones (IoU > 0.5) dropped, at most MAX_RECTS, border-trimmed (a white frame
    around the picture goes). Candidate sides are the RECT_LINES rows and columns with
    the longest dense straight edge; every side is then measured exactly with prefix sums.
    ``pixels``: RGB (h, w, 3) or grey (h, w, 1) at about REGION_SIDE."""
    h, w = pixels.shape[:2]
    if min(h, w) < 64:
        return []
    # the frame's own edges count as straight edges (a picture pasted into a corner shows two
    # sides): boundary b of the padded arrays lies above row b (0: the top edge, h: bottom)
    eh = np.pad(_edge_runs(pixels, 0), ((1, 1), (0, 0)), constant_values=1)  # (h + 1, w)
    ev = np.pad(_edge_runs(pixels, 1), ((1, 1), (0, 0)), constant_values=1)  # (w + 1, h)
    ph = np.zeros((eh.shape[0], w + 1), np.int32)
    np.cumsum(eh, axis=1, out=ph[:, 1:])
    pv = np.zeros((ev.shape[0], h + 1), np.int32)
    np.cumsum(ev, axis=1, out=pv[:, 1:])

    def lines(p: np.ndarray, length: int) -> np.ndarray:
        lmin = max(8, round(RECT_MIN_SIDE * length))
        dens = (p[:, lmin:] - p[:, :-lmin]).max(axis=1) / lmin
        dens[[0, -1]] = 0.0  # the frame's edges are added below, not counted as candidates
        order = np.argsort(-dens, kind="stable")
        keep: list[int] = []
        for i in order:
            if dens[i] < RECT_SIDE_SUPPORT or len(keep) == RECT_LINES:
                break
            if all(abs(int(i) - j) > 2 for j in keep):
                keep.append(int(i))
        return np.array(sorted({0, len(p) - 1, *keep}), np.int64)

    ys, xs = lines(ph, w), lines(pv, h)
    if len(ys) < 3 or len(xs) < 3:
        return []
    yi, yj = np.triu_indices(len(ys), 1)
    xi, xj = np.triu_indices(len(xs), 1)
    y0, y1 = ys[yi], ys[yj]
    x0, x1 = xs[xi], xs[xj]
    okx = ((x1 - x0) >= RECT_MIN_SIDE * w) & ((x0 > 0) | (x1 < w))  # one inner side at least
    oky = ((y1 - y0) >= RECT_MIN_SIDE * h) & ((y0 > 0) | (y1 < h))
    y0, y1, x0, x1 = y0[oky], y1[oky], x0[okx], x1[okx]
    if not len(y0) or not len(x0):
        return []
    # side supports: top/bottom edges over columns [x0, x1), left/right over rows [y0, y1),
    # each the best of the line and its two neighbours (a candidate line is the best row of
    # its densest stretch, which may sit one row off the box's own side)
    lx = (x1 - x0).astype(np.float64)
    ly = (y1 - y0).astype(np.float64)

    def support(p: np.ndarray, at: np.ndarray, a: np.ndarray, b: np.ndarray, n: int
                ) -> np.ndarray:
        # (len(at), len(a)): mean edge run along line `at` over [a, b); a frame edge (0, n)
        # is only its own line (its padded row of ones must not lend support to a neighbour)
        best = np.zeros((len(at), len(a)))
        for o in (-1, 0, 1):
            t = np.clip(at + o, 0, n)
            v = (p[t[:, None], b[None]] - p[t[:, None], a[None]]) / (b - a)[None]
            if o:
                v[((t == 0) | (t == n)) & (at != t)] = 0.0
            best = np.maximum(best, v)
        return best

    top = support(ph, y0, x0, x1, h)
    bot = support(ph, y1, x0, x1, h)
    left = support(pv, x0, y0, y1, w).T
    right = support(pv, x1, y0, y1, w).T
    # a side on the frame's edge (a picture pasted into a corner) is no evidence either way:
    # the box is rated by its seen sides, less 0.05 per side it borrows from the frame (a
    # picture 9 px below the top is its own box, not the box up to the top)
    top[y0 == 0] = 2.0
    bot[y1 == h] = 2.0
    left[:, x0 == 0] = 2.0
    right[:, x1 == w] = 2.0
    score = np.minimum(np.minimum(top, bot), np.minimum(left, right))
    borrowed = ((y0 == 0).astype(int) + (y1 == h))[:, None] + ((x0 == 0).astype(int)
                                                               + (x1 == w))[None]
    area = ly[:, None] * lx[None]
    score[area > RECT_MAX_AREA * h * w] = 0.0
    cand = np.argwhere(score >= RECT_SIDE_SUPPORT)
    rank = score - 0.05 * borrowed
    cand = cand[np.argsort(-rank[cand[:, 0], cand[:, 1]], kind="stable")]
    out: list[tuple[int, int, int, int]] = []
    for a, b in cand[:200]:
        box = (int(y0[a]), int(y1[a]), int(x0[b]), int(x1[b]))
        if any(_iou(box, o) > 0.5 for o in out):
            continue
        out.append(box)
        if len(out) == MAX_RECTS:
            break
    trimmed = []
    for by0, by1, bx0, bx1 in out:
        ty0, ty1, tx0, tx1 = trim_box(pixels[by0:by1, bx0:bx1])
        trimmed.append((by0 + ty0, by0 + ty1, bx0 + tx0, bx0 + tx1))
    return trimmed


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    iy = max(0, min(a[1], b[1]) - max(a[0], b[0]))
    ix = max(0, min(a[3], b[3]) - max(a[2], b[2]))
    inter = iy * ix
    union = (a[1] - a[0]) * (a[3] - a[2]) + (b[1] - b[0]) * (b[3] - b[2]) - inter
    return inter / union if union else 0.0
