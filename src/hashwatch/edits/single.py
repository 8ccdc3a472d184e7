"""Single edits of the suite (one change each) and the drawing helpers combined edits reuse.

These cover Thorn's perception benchmark set (watermark, blur, vignette, gamma, JPEG, pad,
crop, noise, rotate 4 degrees, resize 0.5), Copydays-style levels (JPEG quality 75/50/30/10/3,
centred crops removing 10-80% of the surface), and the re-sharing edits PDQ is blind to: mirror,
90/180/270 turns, small rotations, borders and letterboxes, captions, chat-app screenshots,
collages, aspect-ratio and format changes.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

Pixels = np.ndarray  # (h, w, 3) uint8 RGB
EditFn = Callable[[Pixels, np.random.Generator, Sequence[Pixels]], Pixels]

_WORDS = (
    "hey", "look", "at", "this", "lol", "ok", "see", "you", "tomorrow", "where", "are", "you",
    "sent", "a", "photo", "nice", "one", "haha", "that", "is", "amazing", "call", "me", "later",
    "did", "you", "get", "it", "yes", "no", "maybe", "tonight", "at", "eight",
)


def _pil(p: Pixels) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(p, dtype=np.uint8), "RGB")


def _arr(im: Image.Image) -> Pixels:
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(8, int(size)))


def _sentence(rng: np.random.Generator, n: int) -> str:
    return " ".join(str(w) for w in rng.choice(_WORDS, size=n))


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, size=3))  # type: ignore[return-value]


# --- codecs -------------------------------------------------------------------------------


def _encode(p: Pixels, fmt: str, **kw: object) -> Pixels:
    buf = io.BytesIO()
    im = _pil(p)
    if fmt == "GIF":
        im = im.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    im.save(buf, format=fmt, **kw)
    buf.seek(0)
    return _arr(Image.open(buf))


def jpeg(q: int) -> EditFn:
    return lambda p, rng, _: _encode(p, "JPEG", quality=q)


# --- photometric ----------------------------------------------------------------------------


def _blur(radius: float) -> EditFn:
    return lambda p, rng, _: _arr(_pil(p).filter(ImageFilter.GaussianBlur(radius)))


def _gamma(g: float) -> EditFn:
    lut = np.clip(255.0 * (np.arange(256) / 255.0) ** (1.0 / g), 0, 255).astype(np.uint8)
    return lambda p, rng, _: lut[p]


def _noise(scale: float) -> EditFn:
    def f(p: Pixels, rng: np.random.Generator, _: Sequence[Pixels]) -> Pixels:
        n = rng.normal(0.0, scale * 255.0, size=p.shape)
        return np.clip(p.astype(np.float32) + n, 0, 255).astype(np.uint8)

    return f


def _vignette(strength: float) -> EditFn:
    def f(p: Pixels, rng: np.random.Generator, _: Sequence[Pixels]) -> Pixels:
        h, w = p.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r = np.sqrt(((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2) / np.sqrt(2)
        m = 1.0 - strength * r**2
        return np.clip(p * m[..., None], 0, 255).astype(np.uint8)

    return f


def _grey(p: Pixels, rng: np.random.Generator, _: Sequence[Pixels]) -> Pixels:
    return _arr(_pil(p).convert("L"))


def _contrast(p: Pixels, rng: np.random.Generator, _: Sequence[Pixels]) -> Pixels:
    x = p.astype(np.float32)
    return np.clip((x - 128.0) * 1.5 + 128.0 + 20.0, 0, 255).astype(np.uint8)


def _watermark(p: Pixels, rng: np.random.Generator, _: Sequence[Pixels]) -> Pixels:
    # Semi-transparent text stamp at a random spot, like a site's logo.
    im = _pil(p).convert("RGBA")
    h, w = p.shape[:2]
    layer = Image.new("RGBA", im.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    size = max(10, h // 8)
    text = "© sharesite.example"
    font = _font(size)
    tw = d.textlength(text, font=font)
    x = int(rng.integers(0, max(1, int(w - tw))))
    y = int(rng.integers(0, max(1, h - size - 2)))
    d.text((x, y), text, fill=(255, 255, 255, 140), font=font, stroke_width=1,
           stroke_fill=(0, 0, 0, 90))
    return _arr(Image.alpha_composite(im, layer))


def _caption_overlay(p: Pixels, rng: np.random.Generator, _: Sequence[Pixels]) -> Pixels:
    # Meme-style white text with black outline at top and bottom of the picture.
    im = _pil(p)
    h, w = p.shape[:2]
    d = ImageDraw.Draw(im)
    size = max(10, h // 10)
    font = _font(size)
    for y in (int(h * 0.03), int(h * 0.97) - size):
        text = _sentence(rng, 3).upper()
        tw = d.textlength(text, font=font)
        d.text((max(0, (w - tw) / 2), y), text, fill=(255, 255, 255), font=font,
               stroke_width=max(1, size // 12), stroke_fill=(0, 0, 0))
    return _arr(im)


def _caption_bar(p: Pixels, rng: np.random.Generator, _: Sequence[Pixels]) -> Pixels:
    # Caption in a white bar above the picture (the picture itself is untouched).
    h, w = p.shape[:2]
    bar = max(16, int(h * 0.18))
    canvas = Image.new("RGB", (w, h + bar), (255, 255, 255))
    canvas.paste(_pil(p), (0, bar))
    d = ImageDraw.Draw(canvas)
    font = _font(bar * 0.35)
    d.text((int(w * 0.04), int(bar * 0.3)), _sentence(rng, 5), fill=(0, 0, 0), font=font)
    return _arr(canvas)


# --- geometry -------------------------------------------------------------------------------


def _resize(f: float) -> EditFn:
    def g(p: Pixels, rng: np.random.Generator, _: Sequence[Pixels]) -> Pixels:
        h, w = p.shape[:2]
        return _arr(_pil(p).resize((max(8, round(w * f)), max(8, round(h * f))),
                                   Image.Resampling.LANCZOS))

    return g


def _aspect(fx: float, fy: float) -> EditFn:
    def g(p: Pixels, rng: np.random.Generator, _: Sequence[Pixels]) -> Pixels:
        h, w = p.shape[:2]
        return _arr(_pil(p).resize((max(8, round(w * fx)), max(8, round(h * fy))),
                                   Image.Resampling.BICUBIC))

    return g


def _rotate(deg: float, expand: bool = False) -> EditFn:
    # Same canvas, black corners (what a phone "straighten" without auto-crop gives).
    return lambda p, rng, _: _arr(_pil(p).rotate(deg, resample=Image.Resampling.BICUBIC,
                                                 expand=expand, fillcolor=(0, 0, 0)))


def _transpose(t: Image.Transpose) -> EditFn:
    return lambda p, rng, _: _arr(_pil(p).transpose(t))


def _crop_centre(area_removed: float) -> EditFn:
    """Copydays-style crop: keep a centred window with the aspect ratio, `area_removed` gone."""

    def g(p: Pixels, rng: np.random.Generator, _: Sequence[Pixels]) -> Pixels:
        h, w = p.shape[:2]
        s = np.sqrt(1.0 - area_removed)
        ch, cw = max(8, round(h * s)), max(8, round(w * s))
        y, x = (h - ch) // 2, (w - cw) // 2
        return p[y:y + ch, x:x + cw].copy()

    return g


def _crop_sides(frac: float) -> EditFn:
    """Thorn-style crop: `frac` of each dimension removed from every side."""

    def g(p: Pixels, rng: np.random.Generator, _: Sequence[Pixels]) -> Pixels:
        h, w = p.shape[:2]
        dy, dx = round(h * frac), round(w * frac)
        return p[dy:h - dy, dx:w - dx].copy()

    return g


def _crop_offset(area_removed: float) -> EditFn:
    """Crop at a random position: a window of (1-area) of the surface, aspect kept, placed
    uniformly at random (so it can hug one corner or one side)."""

    def g(p: Pixels, rng: np.random.Generator, _: Sequence[Pixels]) -> Pixels:
        h, w = p.shape[:2]
        s = np.sqrt(1.0 - area_removed)
        ch, cw = max(8, round(h * s)), max(8, round(w * s))
        y = int(rng.integers(0, h - ch + 1))
        x = int(rng.integers(0, w - cw + 1))
        return p[y:y + ch, x:x + cw].copy()

    return g


def _crop_one_side(frac: float) -> EditFn:
    """Remove `frac` of the picture from one random side (a typical "trim the bottom")."""

    def g(p: Pixels, rng: np.random.Generator, _: Sequence[Pixels]) -> Pixels:
        h, w = p.shape[:2]
        side = int(rng.integers(0, 4))
        dy, dx = round(h * frac), round(w * frac)
        return [p[dy:], p[:h - dy], p[:, dx:], p[:, :w - dx]][side].copy()

    return g


def _pad(frac: float, colour: str) -> EditFn:
    """Uniform border of `frac` of each dimension on every side."""

    def g(p: Pixels, rng: np.random.Generator, _: Sequence[Pixels]) -> Pixels:
        h, w = p.shape[:2]
        c = {"black": (0, 0, 0), "white": (255, 255, 255)}.get(colour) or _colour(rng)
        dy, dx = max(1, round(h * frac)), max(1, round(w * frac))
        out = np.empty((h + 2 * dy, w + 2 * dx, 3), np.uint8)
        out[:] = c
        out[dy:dy + h, dx:dx + w] = p
        return out

    return g


def _letterbox(target_aspect: float) -> EditFn:
    """Fit into a canvas of the target aspect (w/h) with black bars, like a video frame."""

    def g(p: Pixels, rng: np.random.Generator, _: Sequence[Pixels]) -> Pixels:
        h, w = p.shape[:2]
        if w / h < target_aspect:
            cw, ch = round(h * target_aspect), h
        else:
            cw, ch = w, round(w / target_aspect)
        out = np.zeros((ch, cw, 3), np.uint8)
        y, x = (ch - h) // 2, (cw - w) // 2
        out[y:y + h, x:x + w] = p
        return out

    return g


def _border_frame(p: Pixels, rng: np.random.Generator, _: Sequence[Pixels]) -> Pixels:
    """Uneven border: different widths per side, random colour, plus a thin inner line."""
    h, w = p.shape[:2]
    c = _colour(rng)
    t, b, lf, r = (round(d * f) for d, f in zip((h, h, w, w), rng.uniform(0.03, 0.15, 4),
                                                strict=True))
    out = np.empty((h + t + b + 4, w + lf + r + 4, 3), np.uint8)
    out[:] = c
    out[t:t + h + 4, lf:lf + w + 4] = 255 - np.array(c, np.uint8)
    out[t + 2:t + 2 + h, lf + 2:lf + 2 + w] = p
    return out


# --- composites -----------------------------------------------------------------------------


def _fit(p: Pixels, max_w: int, max_h: int) -> Image.Image:
    h, w = p.shape[:2]
    s = min(max_w / w, max_h / h)
    return _pil(p).resize((max(8, round(w * s)), max(8, round(h * s))), Image.Resampling.LANCZOS)


def _cover(p: Pixels, cw: int, ch: int) -> Image.Image:
    """Cover-fit: scale so a cw x ch cell is filled, then centre-crop the overflow (what collage
    apps and wallpaper fills do)."""
    h, w = p.shape[:2]
    s = max(cw / w, ch / h)
    im = _pil(p).resize((max(cw, round(w * s)), max(ch, round(h * s))), Image.Resampling.LANCZOS)
    x0, y0 = (im.size[0] - cw) // 2, (im.size[1] - ch) // 2
    return im.crop((x0, y0, x0 + cw, y0 + ch))


def _screenshot(dark: bool, width: tuple[float, float] = (0.68, 0.8), others: int = 0) -> EditFn:
    """A chat-app screen (status bar, header, text bubbles, input bar) with the picture shown in
    a message bubble (``width``: its share of the screen width, drawn uniformly), then saved as
    JPEG as phones do when re-sharing a screenshot. ``others``: that many other pictures (the
    edit's partners or fillers) are shown in incoming bubbles above it."""

    def g(p: Pixels, rng: np.random.Generator, extra: Sequence[Pixels]) -> Pixels:
        W, H = 540, 960
        bg = (17, 27, 33) if dark else (236, 229, 221)
        bar = (31, 44, 52) if dark else (7, 94, 84)
        bubble_in = (32, 44, 51) if dark else (255, 255, 255)
        bubble_out = (0, 92, 75) if dark else (220, 248, 198)
        text_c = (233, 237, 239) if dark else (17, 17, 17)
        im = Image.new("RGB", (W, H), bg)
        d = ImageDraw.Draw(im)
        small, mid = _font(18), _font(24)
        d.rectangle((0, 0, W, 36), fill=bar)
        d.text((12, 8), f"12:{int(rng.integers(0, 60)):02d}", fill=(255, 255, 255), font=small)
        d.text((W - 80, 8), "82%", fill=(255, 255, 255), font=small)
        d.rectangle((0, 36, W, 110), fill=bar)
        d.ellipse((14, 50, 60, 96), fill=(180, 180, 190))
        d.text((74, 58), "Alex " + str(int(rng.integers(10, 99))), fill=(255, 255, 255), font=mid)
        y = 124
        for _i in range(int(rng.integers(1, 3))):
            txt = _sentence(rng, int(rng.integers(3, 6)))
            tw = d.textlength(txt, font=small)
            d.rounded_rectangle((14, y, 34 + tw, y + 40), 10, fill=bubble_in)
            d.text((24, y + 10), txt, fill=text_c, font=small)
            y += 52
        for q in extra[:others]:
            # an incoming picture bubble on the left, the same size class as the target
            oth = _fit(q, int(W * rng.uniform(*width)), 260)
            d.rounded_rectangle((14, y, 14 + oth.size[0] + 12, y + oth.size[1] + 12), 12,
                                fill=bubble_in)
            im.paste(oth, (20, y + 6))
            y += oth.size[1] + 24
        # Picture bubble on the right (by default about 70-80% of the screen width).
        max_w = int(W * rng.uniform(*width))
        pic = _fit(p, max_w, H - y - 200)
        pw, ph = pic.size
        x0 = W - 14 - pw - 12
        d.rounded_rectangle((x0, y, x0 + pw + 12, y + ph + 40), 12, fill=bubble_out)
        im.paste(pic, (x0 + 6, y + 6))
        d.text((x0 + pw - 50, y + ph + 14), "12:41", fill=text_c, font=_font(14))
        y += ph + 52
        if y < H - 140:
            txt = _sentence(rng, 4)
            tw = d.textlength(txt, font=small)
            d.rounded_rectangle((14, y, 34 + tw, y + 40), 10, fill=bubble_in)
            d.text((24, y + 10), txt, fill=text_c, font=small)
        d.rectangle((0, H - 64, W, H), fill=bg)
        d.rounded_rectangle((10, H - 56, W - 70, H - 10), 22, fill=bubble_in)
        d.text((30, H - 44), "Message", fill=(140, 140, 140), font=mid)
        d.ellipse((W - 58, H - 56, W - 12, H - 10), fill=bar)
        return _encode(_arr(im), "JPEG", quality=int(rng.integers(70, 90)))

    return g


def _collage(n: int, gutter: int) -> EditFn:
    """n pictures (the target first, then partners) in a row (n=2) or 2x2 grid (n=4), each cell
    filled (centre-cropped to the cell, as collage apps do), target cell at a random slot."""

    def g(p: Pixels, rng: np.random.Generator, partners: Sequence[Pixels]) -> Pixels:
        pics = [p, *partners[: n - 1]]
        order = list(rng.permutation(len(pics)))
        if n == 2:
            cols, rows, cw, ch = 2, 1, 320, 400
        else:
            cols, rows, cw, ch = 2, 2, 300, 300
        W, H = cols * cw + (cols + 1) * gutter, rows * ch + (rows + 1) * gutter
        canvas = Image.new("RGB", (W, H), (255, 255, 255))
        for slot, k in enumerate(order):
            im = _cover(pics[k], cw, ch)
            r, c = divmod(slot, cols)
            canvas.paste(im, (gutter + c * (cw + gutter), gutter + r * (ch + gutter)))
        return _arr(canvas)

    return g


def _side_by_side(p: Pixels, rng: np.random.Generator, partners: Sequence[Pixels]) -> Pixels:
    """Two whole pictures next to each other at the same height, no gap, no crop."""
    q = partners[0]
    H = 360
    a = _fit(p, 10_000, H)
    b = _fit(q, 10_000, H)
    pieces = [a, b] if rng.random() < 0.5 else [b, a]
    canvas = Image.new("RGB", (sum(x.size[0] for x in pieces), H), (0, 0, 0))
    x = 0
    for im in pieces:
        canvas.paste(im, (x, (H - im.size[1]) // 2))
        x += im.size[0]
    return _arr(canvas)
