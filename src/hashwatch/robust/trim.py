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
    g = pixels.astype(np.int16)
    h, w = g.shape[:2]

    def run(lines: np.ndarray) -> int:
        # lines: (n, L, 3) from the edge inwards. A border line is near-uniform: at most
        # `spill` of its pixels leave the line's own median colour (room for JPEG ringing, a
        # timestamp, a logo; the colour may change from line to line, e.g. a bubble inside an
        # app background). Looked at in small chunks: most pictures have no border at all.
        k, step = 0, 4
        while k < len(lines):
            chunk = lines[k:k + step]
            ref = np.median(chunk, axis=1, keepdims=True)
            dev = np.abs(chunk - ref).max(axis=2)  # (c, L)
            bad = (dev > tol).mean(axis=1) > spill
            if bad.any():
                k += int(np.argmax(bad))
                break
            k += len(chunk)
            step = min(64, step * 2)
        return k + 1 if k > 0 else 0

    mh, mw = int(h * max_frac), int(w * max_frac)
    if mh < 1 or mw < 1:
        return 0, h, 0, w
    top = run(g[:mh])
    bottom = run(g[::-1][:mh])
    left = run(g[:, :mw].transpose(1, 0, 2))
    right = run(g[:, ::-1][:, :mw].transpose(1, 0, 2))
    y0, y1, x0, x1 = top, h - bottom, left, w - right
    if y1 - y0 < 8 or x1 - x0 < 8:
        return 0, h, 0, w
    return y0, y1, x0, x1
