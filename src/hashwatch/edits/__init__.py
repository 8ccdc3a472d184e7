"""Seeded, reproducible image edits for robustness evaluation.

The suite covers Thorn's perception benchmark set (watermark, blur, vignette, gamma, JPEG, pad,
crop, noise, rotate 4 degrees, resize 0.5), Copydays-style levels (JPEG quality 75/50/30/10/3,
centred crops removing 10-80% of the surface), the re-sharing edits PDQ is blind to (mirror,
90/180/270 turns, small rotations, borders and letterboxes, captions, chat-app screenshots,
collages, aspect-ratio and format changes; :mod:`hashwatch.edits.single`), and those edits in
combination (flips/turns with crops, borders and stretches, stretched and sheared crops,
perspective, 3x3/4x4 grids, picture-in-picture, small pictures in screenshots;
:mod:`hashwatch.edits.combined`).

Every edit is a pure function of (pixels, rng, others); `apply_edit` derives the rng from
(seed, key, edit name) so the same call always gives the same pixels. ``others`` are the edit's
partners (other known images, e.g. the other half of a collage) followed by its fillers
(pictures from outside the known and distractor sets: grid cells, photographic backgrounds).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from hashwatch.edits import combined as C
from hashwatch.edits.single import (
    EditFn,
    Pixels,
    _aspect,
    _blur,
    _border_frame,
    _caption_bar,
    _caption_overlay,
    _collage,
    _contrast,
    _crop_centre,
    _crop_offset,
    _crop_one_side,
    _crop_sides,
    _encode,
    _gamma,
    _grey,
    _letterbox,
    _noise,
    _pad,
    _resize,
    _rotate,
    _screenshot,
    _side_by_side,
    _transpose,
    _vignette,
    _watermark,
    jpeg,
)

__all__ = ["COMBINED_EDITS", "EDITS", "Edit", "Pixels", "apply_edit", "edit_names", "edit_rng",
           "expand_edits"]


@dataclass(frozen=True)
class Edit:
    """One named edit. `family` groups edits in reports; `partners` = other known pictures it
    shows (hitting them is no false match); `fillers` = pictures from outside the known and
    distractor sets it shows (grid cells, backgrounds)."""

    name: str
    family: str
    fn: EditFn
    partners: int = 0
    fillers: int = 0


def _build() -> dict[str, Edit]:
    T = Image.Transpose
    e: list[Edit] = [
        # Thorn perception benchmark set.
        Edit("watermark", "thorn", _watermark),
        Edit("blur2", "thorn", _blur(2.0)),
        Edit("vignette", "thorn", _vignette(0.6)),
        Edit("gamma2", "thorn", _gamma(2.0)),
        Edit("jpeg95", "thorn", jpeg(95)),
        Edit("pad0.2", "thorn", _pad(0.2, "random")),
        Edit("crop0.05", "thorn", _crop_sides(0.05)),
        Edit("noise0.2", "thorn", _noise(0.2)),
        Edit("rotate4", "thorn", _rotate(4.0)),
        Edit("resize0.5", "thorn", _resize(0.5)),
        # Copydays-style JPEG and centred crops (percent of surface removed).
        *[Edit(f"jpeg{q}", "copydays-jpeg", jpeg(q)) for q in (75, 50, 30, 10, 3)],
        *[Edit(f"crop{a}c", "copydays-crop", _crop_centre(a / 100))
          for a in (10, 15, 20, 30, 40, 50, 60, 70, 80)],
        # Off-centre crops (random position) and one-side trims.
        *[Edit(f"crop{a}o", "crop-offset", _crop_offset(a / 100)) for a in (5, 10, 20, 25)],
        *[Edit(f"trim{a}side", "crop-offset", _crop_one_side(a / 100)) for a in (10, 20)],
        # Orientation.
        Edit("mirror", "orientation", _transpose(T.FLIP_LEFT_RIGHT)),
        Edit("flip", "orientation", _transpose(T.FLIP_TOP_BOTTOM)),
        Edit("rot90", "orientation", _transpose(T.ROTATE_90)),
        Edit("rot180", "orientation", _transpose(T.ROTATE_180)),
        Edit("rot270", "orientation", _transpose(T.ROTATE_270)),
        Edit("rotate-2", "small-rotation", _rotate(-2.0)),
        Edit("rotate5", "small-rotation", _rotate(5.0)),
        Edit("rotate-5x", "small-rotation", _rotate(-5.0, expand=True)),
        # Borders.
        Edit("border-black5", "border", _pad(0.05, "black")),
        Edit("border-white10", "border", _pad(0.10, "white")),
        Edit("border-colour25", "border", _pad(0.25, "random")),
        Edit("border-frame", "border", _border_frame),
        Edit("letterbox16:9", "border", _letterbox(16 / 9)),
        Edit("letterbox9:16", "border", _letterbox(9 / 16)),
        # Text.
        Edit("caption-overlay", "caption", _caption_overlay),
        Edit("caption-bar", "caption", _caption_bar),
        # Composites.
        Edit("screenshot-light", "screenshot", _screenshot(False)),
        Edit("screenshot-dark", "screenshot", _screenshot(True)),
        Edit("collage2-gutter", "collage", _collage(2, 8), partners=1),
        Edit("side-by-side", "collage", _side_by_side, partners=1),
        Edit("collage4", "collage", _collage(4, 6), partners=3),
        # Photometric extras and scale/aspect/format.
        Edit("grey", "colour", _grey),
        Edit("contrast", "colour", _contrast),
        Edit("resize0.25", "scale", _resize(0.25)),
        Edit("upscale2", "scale", _resize(2.0)),
        Edit("aspect1.3w", "aspect", _aspect(1.3, 1.0)),
        Edit("aspect0.75h", "aspect", _aspect(1.0, 0.75)),
        Edit("webp80", "format", lambda p, rng, _: _encode(p, "WEBP", quality=80)),
        Edit("png", "format", lambda p, rng, _: _encode(p, "PNG")),
        Edit("gif256", "format", lambda p, rng, _: _encode(p, "GIF")),
    ]
    e += _combined()
    return {x.name: x for x in e}


def _combined() -> list[Edit]:
    """Edits in combination (issue 11); fillers come from outside the known and distractor
    sets (see :mod:`hashwatch.edits.combined`)."""
    e = [Edit(n, f, fn) for n, f, fn in C.orientation_combos()]
    e += [
        Edit("stretch1.5+crop10", "stretch-crop", C.chain(C.stretch(1.5), _crop_offset(0.10),
                                                          jpeg(85))),
        Edit("stretch1.25+crop25", "stretch-crop", C.chain(C.stretch(1.25), _crop_offset(0.25),
                                                           jpeg(85))),
        Edit("shear0.2+crop10", "stretch-crop", C.chain(C.shear(0.2), _crop_offset(0.10),
                                                        jpeg(85))),
        *[Edit(f"perspective{k}", "perspective", C.perspective(k / 100)) for k in (6, 12, 20)],
        Edit("grid3x3", "grid", C.grid(3, 200), fillers=8),
        Edit("grid4x4", "grid", C.grid(4, 160), fillers=15),
    ]
    for size in (60, 45, 30):
        e.append(Edit(f"pip{size}-generated", "picture-in-picture",
                      C.picture_in_picture(size / 100, photo=False)))
        e.append(Edit(f"pip{size}-photo", "picture-in-picture",
                      C.picture_in_picture(size / 100, photo=True), fillers=1))
    for dark in (False, True):
        e.append(Edit(f"screenshot-small-{'dark' if dark else 'light'}", "screenshot-small",
                      _screenshot(dark, width=(0.3, 0.42), others=1), fillers=1))
    # a flipped or turned picture that fills part of the frame (issue 11: a mirrored cell or
    # pasted picture was never found); appended last, so the edits above keep their partners
    # and fillers (drawn by the edit's place in the suite)
    e += [Edit(n, "orient-part", fn, partners=p, fillers=f)
          for n, fn, p, f in C.orientation_part_combos()]
    return e


EDITS: dict[str, Edit] = _build()
COMBINED_EDITS: frozenset[str] = frozenset(e.name for e in _combined())


def expand_edits(spec: str) -> list[str]:
    """Edit names from a comma-separated list of edit names, family names, ``single`` (the
    one-change edits) or ``combined`` (the edits in combination); KeyError names the unknown."""
    out: list[str] = []
    for item in (x.strip() for x in spec.split(",")):
        if not item:
            continue
        if item == "combined":
            names = [n for n in EDITS if n in COMBINED_EDITS]
        elif item == "single":
            names = [n for n in EDITS if n not in COMBINED_EDITS]
        elif item in EDITS:
            names = [item]
        else:
            names = edit_names([item])
            if not names:
                raise KeyError(item)
        out += [n for n in names if n not in out]
    return out


def edit_names(families: Sequence[str] | None = None) -> list[str]:
    """All edit names (optionally only these families), in suite order."""
    return [n for n, e in EDITS.items() if families is None or e.family in families]


def edit_rng(seed: int, key: int, name: str) -> np.random.Generator:
    """The generator an edit of image `key` uses: a pure function of (seed, key, name)."""
    return np.random.default_rng([seed & 0xFFFFFFFF, key & 0xFFFFFFFF, zlib.crc32(name.encode())])


def apply_edit(name: str, pixels: Pixels, *, seed: int = 0, key: int = 0,
               partners: Sequence[Pixels] = (), fillers: Sequence[Pixels] = ()) -> Pixels:
    """Apply edit `name` to an RGB uint8 image; same (seed, key, name, inputs) -> same output.

    Raises ValueError for a malformed image or too few partners/fillers, KeyError for an
    unknown edit."""
    edit = EDITS[name]
    for q in (pixels, *partners, *fillers):
        if q.ndim != 3 or q.shape[2] != 3 or q.dtype != np.uint8:
            raise ValueError("pixels must be an (h, w, 3) uint8 array")
    if len(partners) < edit.partners:
        raise ValueError(f"edit {name!r} needs {edit.partners} partner picture(s)")
    if len(fillers) < edit.fillers:
        raise ValueError(f"edit {name!r} needs {edit.fillers} filler picture(s)")
    others = [*partners[: edit.partners], *fillers[: edit.fillers]]
    out = edit.fn(pixels, edit_rng(seed, key, name), others)
    return np.ascontiguousarray(out, dtype=np.uint8)
