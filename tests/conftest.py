"""Shared fixtures: the benign image corpus and small generated images of every format."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# the local Ray cluster fixture (one per session: a process can join only one cluster)
pytest_plugins = ["ray_cluster"]


def _find_corpus() -> Path:
    env = os.environ.get("HASHWATCH_CORPUS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "corpus"


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """../shared/corpus (or $HASHWATCH_CORPUS). Missing: fail under CI=true, else skip."""
    d = _find_corpus()
    if not d.is_dir():
        msg = f"benign image corpus not found at {d} (set HASHWATCH_CORPUS to its folder)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return d


def make_picture(width: int = 160, height: int = 120, seed: int = 0) -> np.ndarray:
    """A deterministic RGB picture with structure at several scales (PDQ quality 100) and no
    symmetry, so that orientation and flips are detectable."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 128 + 100 * np.sin(x / width * 6.0 + seed) * np.cos(y / height * 3.0)
    g = 128 + 90 * np.cos((x + 2 * y) / (width + height) * 9.0)
    b = 255 * (x / width) * (1 - y / height)
    img = np.stack([r, g, b], axis=2)
    # A bright block in the top-left quadrant breaks every symmetry.
    img[height // 8 : height // 3, width // 10 : width // 3] = (250, 240, 30)
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def png_bytes(
    width: int, height: int, raw_rows: bytes, *, bit_depth: int = 8, colour_type: int = 2
) -> bytes:
    """A minimal PNG writer: lets tests write 16-bit RGB and lying headers (bombs)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw_rows))
        + chunk(b"IEND", b"")
    )


def _save(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="session")
def tmp_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small images of every supported format and awkward mode, written once per session.

    Keys: jpeg, png, gif (2-frame animation: first frame is the picture), webp, webp_lossless,
    bmp, tiff, heic, png_rgba, png_la, png_palette, png_palette_transparent, png_1bit, png_l,
    png_i16, png_rgb48, tiff_i16, jpeg_cmyk, tiff_cmyk, jpeg_grey. ``picture.npy`` holds the
    source pixels (``tmp_images["source"]``).
    """
    d = tmp_path_factory.mktemp("images")
    pic = make_picture()
    rgb = Image.fromarray(pic)
    out: dict[str, bytes] = {
        "jpeg": _save(rgb, "JPEG", quality=95),
        "png": _save(rgb, "PNG"),
        "webp": _save(rgb, "WEBP", quality=95),
        "webp_lossless": _save(rgb, "WEBP", lossless=True),
        "bmp": _save(rgb, "BMP"),
        "tiff": _save(rgb, "TIFF"),
        "jpeg_grey": _save(rgb.convert("L"), "JPEG", quality=95),
        "jpeg_cmyk": _save(rgb.convert("CMYK"), "JPEG", quality=95),
        "tiff_cmyk": _save(rgb.convert("CMYK"), "TIFF"),
        "png_l": _save(rgb.convert("L"), "PNG"),
        "png_1bit": _save(rgb.convert("1"), "PNG"),
        "png_palette": _save(rgb.quantize(64), "PNG"),
    }
    # GIF: two frames; the second is inverted so "first frame" is checkable.
    frames = [rgb.quantize(256), Image.fromarray(255 - pic).quantize(256)]
    out["gif"] = _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    # Alpha: the hidden colour under alpha 0 must survive (alpha is ignored, not composited).
    alpha = np.full(pic.shape[:2], 255, np.uint8)
    alpha[:, : pic.shape[1] // 2] = 0
    out["png_rgba"] = _save(Image.fromarray(np.dstack([pic, alpha]), "RGBA"), "PNG")
    grey = np.asarray(rgb.convert("L"))
    out["png_la"] = _save(Image.fromarray(np.dstack([grey, alpha]), "LA"), "PNG")
    pal = rgb.quantize(64)
    pal.info["transparency"] = 0
    out["png_palette_transparent"] = _save(pal, "PNG", transparency=0)
    # 16-bit: grey I;16 (PNG and TIFF) and 48-bit RGB PNG, top byte = the 8-bit picture.
    g16 = grey.astype(np.uint16) * 257
    out["png_i16"] = _save(Image.fromarray(g16), "PNG")
    out["tiff_i16"] = _save(Image.fromarray(g16), "TIFF")
    rgb16 = pic.astype(np.uint16) * 257
    rows = b"".join(b"\x00" + rgb16[i].astype(">u2").tobytes() for i in range(pic.shape[0]))
    out["png_rgb48"] = png_bytes(pic.shape[1], pic.shape[0], rows, bit_depth=16, colour_type=2)
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
        out["heic"] = _save(rgb, "HEIF", quality=95)
    except (ImportError, KeyError, OSError, RuntimeError):  # no HEVC encoder in this build
        pass
    paths: dict[str, Path] = {}
    for name, data in out.items():
        p = d / f"{name}.img"
        p.write_bytes(data)
        paths[name] = p
    np.save(d / "picture.npy", pic)
    paths["source"] = d / "picture.npy"
    return paths
