"""The edits match-key recall is measured on: the part of hashwatch's edit suite
(``hashwatch.edits``) that a perceptual hash is expected to survive, plus the crops that it
is not, so the table shows both. PIL images in and out, for the private client API."""

from __future__ import annotations

import numpy as np
from PIL import Image

from hashwatch import edits as suite

EDITS: tuple[str, ...] = (
    "jpeg95",
    "jpeg75",
    "jpeg50",
    "jpeg30",
    "resize0.5",
    "gamma2",
    "blur2",
    "noise0.2",
    "grey",
    "contrast",
    "watermark",
    "crop0.05",
    "crop10c",
)


def apply_edit(name: str, im: Image.Image, *, seed: int = 0) -> Image.Image:
    """The edited RGB image (the input is not modified); seeded, so reproducible."""
    if name not in EDITS:
        raise KeyError(f"unknown edit {name!r}")
    out = suite.apply_edit(name, np.asarray(im.convert("RGB")), seed=seed)
    return Image.fromarray(out)
