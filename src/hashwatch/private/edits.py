"""Edit suite used to measure match-key recall: common, benign transformations of an image."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def _jpeg(q: int) -> Callable[[Image.Image], Image.Image]:
    def f(im: Image.Image) -> Image.Image:
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=q)
        buf.seek(0)
        return Image.open(buf).convert("RGB")

    return f


def _resize(scale: float) -> Callable[[Image.Image], Image.Image]:
    def f(im: Image.Image) -> Image.Image:
        w, h = im.size
        return im.resize((max(1, int(w * scale)), max(1, int(h * scale))), Image.BILINEAR)

    return f


def _gamma(g: float) -> Callable[[Image.Image], Image.Image]:
    def f(im: Image.Image) -> Image.Image:
        a = np.asarray(im, dtype=np.float32) / 255.0
        return Image.fromarray(np.clip(255.0 * a**g + 0.5, 0, 255).astype(np.uint8))

    return f


def _blur(r: float) -> Callable[[Image.Image], Image.Image]:
    return lambda im: im.filter(ImageFilter.GaussianBlur(r))


def _noise(sigma: float) -> Callable[[Image.Image], Image.Image]:
    def f(im: Image.Image) -> Image.Image:
        # Seeded from the image size so the suite is reproducible.
        rng = np.random.default_rng(im.size[0] * 7919 + im.size[1])
        a = np.asarray(im, dtype=np.float32) + rng.normal(0, sigma, (im.size[1], im.size[0], 3))
        return Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8))

    return f


def _crop(frac: float) -> Callable[[Image.Image], Image.Image]:
    def f(im: Image.Image) -> Image.Image:
        w, h = im.size
        dx, dy = int(w * frac / 2), int(h * frac / 2)
        return im.crop((dx, dy, w - dx, h - dy))

    return f


def _watermark(im: Image.Image) -> Image.Image:
    out = im.copy()
    d = ImageDraw.Draw(out)
    w, h = out.size
    # Caption text in the lower third, as a messaging app or meme generator would add.
    for i, y in enumerate(range(int(h * 0.7), int(h * 0.9), max(8, h // 20))):
        d.text((w // 10, y), f"(c) hashwatch sample {i}", fill=(255, 255, 255))
    return out


EDITS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "jpeg_q90": _jpeg(90),
    "jpeg_q70": _jpeg(70),
    "jpeg_q50": _jpeg(50),
    "jpeg_q30": _jpeg(30),
    "resize_0.5": _resize(0.5),
    "gamma_0.7": _gamma(0.7),
    "gamma_1.4": _gamma(1.4),
    "blur_r1.5": _blur(1.5),
    "noise_s8": _noise(8.0),
    "crop_5pct": _crop(0.05),
    "crop_10pct": _crop(0.10),
    "watermark": _watermark,
}


def apply_edit(name: str, im: Image.Image) -> Image.Image:
    """Return the edited RGB image (the input is not modified)."""
    return EDITS[name](im.convert("RGB"))
