"""Border trimming: the picture inside uniform borders, letterbox bars or an app background."""

from __future__ import annotations

import numpy as np


def trim_box(pixels: np.ndarray, *, tol: float = 12.0, spill: float = 0.12,
             max_frac: float = 0.45) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the picture inside uniform borders/letterbox bars.

    A border row/column is one whose pixels stay within ``tol`` of the line's median colour,
    allowing ``spill`` of them to differ; JPEG ringing at the edge of the picture is absorbed by
    trimming one more pixel. Never trims more than ``max_frac`` of a side.
    """
    h, w = pixels.shape[:2]

    def bad_lines(chunk: np.ndarray) -> np.ndarray:
        # chunk: (..., c, L, 3), lines from the edge inwards -> (..., c) whether each line is
        # not a border line: more than `spill` of its pixels leave the line's own median
        # colour by more than `tol` (room for JPEG ringing, a timestamp, a logo; the colour
        # may change from line to line, e.g. a bubble inside an app background)
        # the median along each line as np.median has it (the mean of the two middle values
        # for an even length), from one partial sort: np.median's own checks cost more here
        n = chunk.shape[-2]
        mid = np.partition(chunk, (n - 1) // 2 if n % 2 else (n // 2 - 1, n // 2), axis=-2)
        ref = (mid[..., (n - 1) // 2:(n - 1) // 2 + 1, :].astype(np.float64)
               + mid[..., n // 2:n // 2 + 1, :]) / 2.0
        d = np.abs(chunk - ref)
        dev = d[..., 0]
        for c in range(1, d.shape[-1]):  # the max over channels (a reduction over a length-3
            dev = np.maximum(dev, d[..., c])  # axis is numpy's slow path)
        return (dev > tol).mean(axis=-1) > spill

    def run(lines: np.ndarray, first: np.ndarray) -> int:
        # lines: (n, L, 3) from the edge inwards; first: bad_lines of its first chunk (4
        # lines), computed for two sides at once: most pictures have no border at all, and
        # then that chunk's first line is the answer. Looked at in chunks doubling from 4.
        k, step = 0, 4
        while k < len(lines):
            chunk = lines[k:k + step]
            bad = first if k == 0 else bad_lines(chunk)
            if bad.any():
                k += int(np.argmax(bad))
                break
            k += len(chunk)
            step = min(64, step * 2)
        return k + 1 if k > 0 else 0

    mh, mw = int(h * max_frac), int(w * max_frac)
    if mh < 1 or mw < 1:
        return 0, h, 0, w
    rows = pixels[:mh], pixels[::-1][:mh]
    cols = pixels[:, :mw].transpose(1, 0, 2), pixels[:, ::-1][:, :mw].transpose(1, 0, 2)
    tb = bad_lines(np.stack([rows[0][:4], rows[1][:4]]))
    lr = bad_lines(np.stack([cols[0][:4], cols[1][:4]]))
    top, bottom = run(rows[0], tb[0]), run(rows[1], tb[1])
    left, right = run(cols[0], lr[0]), run(cols[1], lr[1])
    y0, y1, x0, x1 = top, h - bottom, left, w - right
    if y1 - y0 < 8 or x1 - x0 < 8:
        return 0, h, 0, w
    return y0, y1, x0, x1
