"""Combined edits: what people do when they re-share, two or three changes at once.

* every flip/turn (the 7 non-identity dihedral transforms) with an offset crop and re-encoding,
  with an uneven coloured border, and with a stretch;
* stretches and shears followed by a crop;
* keystone perspective of several strengths (a photo of a screen);
* 3x3 and 4x4 grids of pictures (the target one cell, cover-cropped like collage apps do);
* picture-in-picture: the picture fitted into 60/45/30% of the frame's width and height, pasted
  onto a generated busy background or a photograph;
* a small picture (30-42% of the screen width) in light and dark chat screenshots, beside
  another picture;
* a mirrored (or flipped, or turned) picture as one cell of a 3x3 grid or a 2x2 collage, or
  fitted into 45/30% of a generated or photographic frame.

Grid cells, photographic backgrounds and the other picture of a screenshot are *fillers*:
pictures the caller passes in (``apply_edit(..., fillers=...)``). The evaluation draws them from
a reserved part of the corpus that is neither known nor used as a distractor query
(:func:`hashwatch.evaluate.split_fillers`), so a match on a filler can never be counted as the
target's match, and every match on another known image is a real false match. Generated
backgrounds are drawn here from the edit's own seeded generator.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from hashwatch.edits.single import (
    EditFn,
    Pixels,
    _arr,
    _border_frame,
    _collage,
    _colour,
    _cover,
    _crop_offset,
    _encode,
    _fit,
    _pil,
    _transpose,
    jpeg,
)

T = Image.Transpose
# The 7 non-identity members of the dihedral group, by the names the suite uses.
ORIENTATIONS: dict[str, Image.Transpose] = {
    "mirror": T.FLIP_LEFT_RIGHT,
    "flip": T.FLIP_TOP_BOTTOM,
    "rot90": T.ROTATE_90,
    "rot180": T.ROTATE_180,
    "rot270": T.ROTATE_270,
    "transpose": T.TRANSPOSE,
    "transverse": T.TRANSVERSE,
}


def chain(*fns: EditFn) -> EditFn:
    """Apply edits in order, all drawing from the same seeded generator (reproducible)."""

    def g(p: Pixels, rng: np.random.Generator, extra: Sequence[Pixels]) -> Pixels:
        for f in fns:
            p = f(p, rng, extra)
        return p

    return g


def stretch(f: float) -> EditFn:
    """Stretch by ``f`` along one axis chosen at random (the other kept)."""

    def g(p: Pixels, rng: np.random.Generator, _: Sequence[Pixels]) -> Pixels:
        h, w = p.shape[:2]
        fx, fy = (f, 1.0) if rng.random() < 0.5 else (1.0, f)
        return _arr(_pil(p).resize((max(8, round(w * fx)), max(8, round(h * fy))),
                                   Image.Resampling.BICUBIC))

    return g


def shear(k: float) -> EditFn:
    """Horizontal or vertical shear by ``k`` (random axis and sign), on an expanded black
    canvas."""

    def g(p: Pixels, rng: np.random.Generator, _: Sequence[Pixels]) -> Pixels:
        h, w = p.shape[:2]
        s = k if rng.random() < 0.5 else -k
        if rng.random() < 0.5:
            m = np.array([[1.0, s, max(0.0, -s) * h], [0.0, 1.0, 0.0]])
            size = (w + round(abs(s) * h), h)
        else:
            m = np.array([[1.0, 0.0, 0.0], [s, 1.0, max(0.0, -s) * w]])
            size = (w, h + round(abs(s) * w))
        return cv2.warpAffine(np.ascontiguousarray(p), m, size, flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))

    return g


def generated_background(rng: np.random.Generator, w: int, h: int) -> Pixels:
    """A busy synthetic scene: a colour gradient, 40-80 random shapes and lines of every size,
    lightly blurred, plus sensor-like noise. Benign by construction."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a, b = rng.uniform(0, 255, 3), rng.uniform(-0.4, 0.4, (2, 3))
    base = a[None, None] + xx[..., None] * b[0] + yy[..., None] * b[1]
    im = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(40, 80))):
        x0, y0 = rng.uniform(-0.1, 1.0) * w, rng.uniform(-0.1, 1.0) * h
        x1, y1 = x0 + rng.uniform(0.02, 0.35) * w, y0 + rng.uniform(0.02, 0.35) * h
        kind = rng.integers(0, 4)
        fill = _colour(rng)
        if kind == 0:
            d.ellipse((x0, y0, x1, y1), fill=fill)
        elif kind == 1:
            d.rectangle((x0, y0, x1, y1), fill=fill)
        elif kind == 2:
            d.line((x0, y0, x1, y1), fill=fill, width=int(rng.integers(1, 8)))
        else:
            pts = [(float(x), float(y)) for x, y in zip(rng.uniform(x0, x1, 3),
                                                        rng.uniform(y0, y1, 3), strict=True)]
            d.polygon(pts, fill=fill)
    im = im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 1.5))))
    out = np.asarray(im, np.float32) + rng.normal(0, 5, (h, w, 1))
    return np.clip(out, 0, 255).astype(np.uint8)


def _frame_size(rng: np.random.Generator) -> tuple[int, int]:
    # landscape 4:3, portrait 3:4 or 16:9, as phones and screens give
    return [(640, 480), (480, 640), (640, 360)][int(rng.integers(0, 3))]


def picture_in_picture(size: float, photo: bool) -> EditFn:
    """The picture fitted into ``size`` of the frame's width and height (aspect kept), at a
    random place on a busy background: generated, or a photograph (the first filler, cover-
    fitted to the frame). A thin white frame half of the time; JPEG q85 as shared."""

    def g(p: Pixels, rng: np.random.Generator, extra: Sequence[Pixels]) -> Pixels:
        W, H = _frame_size(rng)
        if photo:
            canvas = _cover(extra[0], W, H)
        else:
            canvas = Image.fromarray(generated_background(rng, W, H))
        pic = _fit(p, max(8, round(size * W)), max(8, round(size * H)))
        if rng.random() < 0.5:
            t = int(rng.integers(2, 5))
            framed = Image.new("RGB", (pic.size[0] + 2 * t, pic.size[1] + 2 * t), (255, 255, 255))
            framed.paste(pic, (t, t))
            pic = framed
        x = int(rng.integers(0, max(1, W - pic.size[0] + 1)))
        y = int(rng.integers(0, max(1, H - pic.size[1] + 1)))
        canvas.paste(pic, (x, y))
        return _encode(_arr(canvas), "JPEG", quality=85)

    return g


def grid(n: int, cell: int) -> EditFn:
    """An n x n grid of square cells of ``cell`` px: the picture in one random cell, the
    n*n - 1 fillers in the others, each cover-cropped to its cell; gutters of 0, 4 or 8 px in
    white, black or a random colour."""

    def g(p: Pixels, rng: np.random.Generator, extra: Sequence[Pixels]) -> Pixels:
        pics = [p, *extra[: n * n - 1]]
        order = [int(i) for i in rng.permutation(len(pics))]
        gut = int(rng.choice([0, 4, 8]))
        colour = [(255, 255, 255), (0, 0, 0), _colour(rng)][int(rng.integers(0, 3))]
        side = n * cell + (n + 1) * gut
        canvas = Image.new("RGB", (side, side), colour)
        for slot, k in enumerate(order):
            r, c = divmod(slot, n)
            canvas.paste(_cover(pics[k], cell, cell),
                         (gut + c * (cell + gut), gut + r * (cell + gut)))
        return _encode(_arr(canvas), "JPEG", quality=90)

    return g


def perspective(narrow: float) -> EditFn:
    """A photo of a screen: the picture's far side (top, bottom, left or right, at random)
    ``narrow`` of its length shorter than the near one (keystone), corners jittered by ~1%,
    a dark surround of 6% on each side, slight blur, JPEG q85."""

    def g(p: Pixels, rng: np.random.Generator, _: Sequence[Pixels]) -> Pixels:
        h, w = p.shape[:2]
        mx, my = 0.06 * w, 0.06 * h
        W, H = round(w + 2 * mx), round(h + 2 * my)
        quad = np.array([[mx, my], [mx + w, my], [mx + w, my + h], [mx, my + h]], np.float32)
        side = int(rng.integers(0, 4))  # 0 top, 1 right, 2 bottom, 3 left is the far side
        sx, sy = narrow * w / 2, narrow * h / 2
        if side == 0:
            quad[0, 0] += sx
            quad[1, 0] -= sx
        elif side == 2:
            quad[3, 0] += sx
            quad[2, 0] -= sx
        elif side == 3:
            quad[0, 1] += sy
            quad[3, 1] -= sy
        else:
            quad[1, 1] += sy
            quad[2, 1] -= sy
        quad += rng.normal(0, 0.01 * min(w, h), quad.shape).astype(np.float32)
        src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
        m = cv2.getPerspectiveTransform(src, quad)
        shade = rng.uniform(10, 40)
        bg = np.clip(generated_background(rng, W, H).astype(np.float32) * 0.15 + shade, 0, 255)
        out = cv2.warpPerspective(np.ascontiguousarray(p), m, (W, H), dst=bg.astype(np.uint8),
                                  flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT)
        im = _pil(out).filter(ImageFilter.GaussianBlur(0.6))
        return _encode(_arr(im), "JPEG", quality=85)

    return g


def orientation_combos() -> list[tuple[str, str, EditFn]]:
    """(name, family, fn) for every flip/turn with crop, border and stretch."""
    out: list[tuple[str, str, EditFn]] = []
    for o, t in ORIENTATIONS.items():
        turn = _transpose(t)
        # a crop of under 10% of the surface at a random place, re-encoded (the case)
        out.append((f"{o}+crop", "orient-crop", chain(turn, _crop_offset(0.08), jpeg(80))))
        out.append((f"{o}+border", "orient-border", chain(turn, _border_frame)))
        out.append((f"{o}+stretch", "orient-stretch", chain(turn, stretch(1.3))))
    return out


def orientation_part_combos() -> list[tuple[str, EditFn, int, int]]:
    """(name, fn, partners, fillers) for a flipped or turned picture that fills part of the
    frame: mirrored as one cell of a 3x3 grid (fillers in the other cells) and of a 2x2
    collage (three other known pictures, unmirrored), mirrored and fitted into 45% and 30% of
    a generated or photographic frame; a vertical flip at 45% of a generated frame and a
    quarter turn in a 3x3 grid."""
    out: list[tuple[str, EditFn, int, int]] = []
    for o, part, fn, partners, fillers in (
            ("mirror", "grid3x3", grid(3, 200), 0, 8),
            ("mirror", "collage4", _collage(4, 6), 3, 0),
            ("mirror", "pip45-generated", picture_in_picture(0.45, photo=False), 0, 0),
            ("mirror", "pip45-photo", picture_in_picture(0.45, photo=True), 0, 1),
            ("mirror", "pip30-generated", picture_in_picture(0.30, photo=False), 0, 0),
            ("mirror", "pip30-photo", picture_in_picture(0.30, photo=True), 0, 1),
            ("flip", "pip45-generated", picture_in_picture(0.45, photo=False), 0, 0),
            ("rot90", "grid3x3", grid(3, 200), 0, 8)):
        out.append((f"{o}+{part}", chain(_transpose(ORIENTATIONS[o]), fn), partners, fillers))
    return out
