"""Generated, benign moving pictures for the media tests: synthetic pictures (colour waves +
ellipses), animated GIF / WebP / APNG, and MPEG-4 / H.264 videos written with PyAV (with a
display-matrix rotation patched in as phones write it)."""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import av
import numpy as np
from PIL import Image, ImageDraw


def synth(w: int = 384, h: int = 256, seed: int = 7) -> Image.Image:
    """A deterministic picture with enough structure for PDQ (quality 100)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    img = np.zeros((h, w, 3))
    for c in range(3):
        for _ in range(6):
            fx, fy, ph = rng.uniform(1, 6), rng.uniform(1, 6), rng.uniform(0, 6.3)
            img[..., c] += np.sin(2 * np.pi * (fx * x + fy * y) + ph)
    img = (img - img.min()) / (img.max() - img.min()) * 255
    im = Image.fromarray(img.astype(np.uint8), "RGB")
    d = ImageDraw.Draw(im)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, w - 60)), int(rng.integers(0, h - 60))
        d.ellipse([x0, y0, x0 + int(rng.integers(20, 90)), y0 + int(rng.integers(20, 90))],
                  fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return im


def animation(path: Path | IO[bytes], frames: Sequence[Image.Image], durations: Sequence[int],
              fmt: str) -> Path | IO[bytes]:
    """Save an animated GIF, WEBP or PNG (APNG)."""
    kw: dict[str, object] = {"save_all": True, "append_images": list(frames[1:]),
                             "duration": list(durations), "loop": 0}
    if fmt == "WEBP":
        kw["quality"] = 90
    frames[0].save(path, fmt, **kw)
    return path


def write_video(path: Path, frame_at: Callable[[int], Image.Image], n: int, *, fps: int = 10,
                codec: str = "mpeg4", bit_rate: int = 2_000_000) -> Path:
    """Encode ``n`` frames (``frame_at(i)``, all the same size) at ``fps``."""
    first = frame_at(0)
    c = av.open(str(path), "w")
    s = c.add_stream(codec, rate=fps)
    s.width, s.height = first.size
    s.pix_fmt = "yuv420p"
    s.bit_rate = bit_rate
    for i in range(n):
        im = first if i == 0 else frame_at(i)
        f = av.VideoFrame.from_ndarray(np.asarray(im.convert("RGB")), format="rgb24")
        f.pts = i
        for p in s.encode(f):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    return path


def still_video(path: Path, img: Image.Image, seconds: int = 3, fps: int = 10) -> Path:
    return write_video(path, lambda i: img, seconds * fps, fps=fps)


def set_rotation_90(path: Path) -> Path:
    """Write a display matrix into the first track header ('tkhd') that turns the stored
    pixels 90 degrees clockwise for display, as a phone (or ffmpeg's rotate=90) does."""
    b = bytearray(path.read_bytes())
    i = b.find(b"tkhd")
    ver = b[i + 4]
    off = i + 8 + (32 if ver == 1 else 20) + 8 + 8
    h = struct.unpack(">I", b[off + 40:off + 44])[0] >> 16
    one = 0x10000
    b[off:off + 36] = struct.pack(">9I", 0, one, 0, (-one) & 0xFFFFFFFF, 0, 0, h << 16, 0,
                                  0x40000000)
    path.write_bytes(bytes(b))
    return path


def boxed(img: Image.Image, aspect: float, colour: tuple[int, int, int] = (0, 0, 0)
          ) -> Image.Image:
    """``img`` centred on a canvas of width/height ``aspect`` (letterbox or pillarbox bars)."""
    w, h = img.size
    if w / h < aspect:
        cw, ch = round(h * aspect), h
    else:
        cw, ch = w, round(w / aspect)
    cw += cw % 2
    ch += ch % 2
    canvas = Image.new("RGB", (cw, ch), colour)
    canvas.paste(img, ((cw - w) // 2, (ch - h) // 2))
    return canvas


def scenes(seed: int, seconds: int, fps: int = 10, size: tuple[int, int] = (320, 240)
           ) -> Callable[[int], Image.Image]:
    """A clip with a new synthetic scene every second, fading slightly within it (a slide
    show: a sampling phase that differs between two copies lands on the same scene)."""
    w, h = size
    cache: dict[int, Image.Image] = {}

    def frame_at(i: int) -> Image.Image:
        sc = i // fps
        if sc not in cache:
            cache[sc] = synth(w, h, seed=seed * 1000 + sc)
        fade = 1.0 - 0.02 * (i % fps)
        return Image.eval(cache[sc], lambda v: int(v * fade))

    return frame_at
