from __future__ import annotations

import io
import os
import resource
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from conftest import make_picture, png_bytes
from hashwatch.decode import (
    REASONS,
    DecodedImage,
    DecodeError,
    ImageTooLargeError,
    NotAnImageError,
    TruncatedImageError,
    UnsupportedImageError,
    decode_for_pdq,
    decode_image,
)


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.fixture(scope="module")
def source(tmp_images: dict[str, Path]) -> np.ndarray:
    return np.load(tmp_images["source"])


# --------------------------------------------------------------------------- formats & modes

LOSSLESS = ["png", "bmp", "tiff", "webp_lossless", "png_rgba", "png_rgb48"]
LOSSY = {"jpeg": 4.0, "webp": 5.0, "heic": 6.0, "gif": 8.0}
FORMAT_NAME = {
    "jpeg": "JPEG",
    "png": "PNG",
    "gif": "GIF",
    "webp": "WEBP",
    "webp_lossless": "WEBP",
    "bmp": "BMP",
    "tiff": "TIFF",
    "heic": "HEIF",
}


@pytest.mark.parametrize("name", LOSSLESS)
def test_lossless_formats_give_the_exact_pixels(
    name: str, tmp_images: dict[str, Path], source: np.ndarray
) -> None:
    img = decode_image(tmp_images[name])
    assert isinstance(img, DecodedImage)
    assert img.pixels.dtype == np.uint8 and img.pixels.shape == source.shape
    assert img.pixels.flags.c_contiguous
    assert (img.width, img.height) == (source.shape[1], source.shape[0])
    # RGBA: alpha ignored, so even the fully transparent half keeps its colours.
    np.testing.assert_array_equal(img.pixels, source)


@pytest.mark.parametrize("name", sorted(LOSSY))
def test_lossy_formats_are_close(name: str, tmp_images: dict[str, Path], source: np.ndarray):
    if name not in tmp_images:
        pytest.skip(f"{name}: this pillow-heif build cannot encode")
    img = decode_image(tmp_images[name])
    assert img.pixels.shape == source.shape
    assert mad(img.pixels, source) < LOSSY[name]
    if name in FORMAT_NAME:
        assert img.format == FORMAT_NAME[name]


def test_gif_uses_first_frame(tmp_images: dict[str, Path], source: np.ndarray) -> None:
    img = decode_image(tmp_images["gif"])
    assert mad(img.pixels, source) < 8  # the second frame is the negative: MAD would be ~100


@pytest.mark.parametrize(
    "name", ["png_l", "jpeg_grey", "png_la", "png_i16", "tiff_i16", "png_1bit"]
)
def test_greyscale_modes(name: str, tmp_images: dict[str, Path], source: np.ndarray) -> None:
    grey = np.asarray(Image.fromarray(source).convert("L"))
    img = decode_image(tmp_images[name])
    assert img.pixels.shape == source.shape
    # grey in, grey out: all three channels equal
    assert (img.pixels[..., 0] == img.pixels[..., 1]).all()
    assert (img.pixels[..., 1] == img.pixels[..., 2]).all()
    tolerance = {"jpeg_grey": 3.0, "png_1bit": 130.0}.get(name, 0.0)
    if name == "png_1bit":
        assert set(np.unique(img.pixels)) <= {0, 255}
    else:
        assert mad(img.pixels[..., 0], grey) <= tolerance


@pytest.mark.parametrize("name", ["jpeg_cmyk", "tiff_cmyk"])
def test_cmyk(name: str, tmp_images: dict[str, Path], source: np.ndarray) -> None:
    img = decode_image(tmp_images[name])
    want = np.asarray(Image.fromarray(source).convert("CMYK").convert("RGB"))
    assert mad(img.pixels, want) < 4


@pytest.mark.parametrize("name", ["png_palette", "png_palette_transparent"])
def test_palette_gives_palette_colours(name: str, tmp_images: dict[str, Path]) -> None:
    img = decode_image(tmp_images[name])
    with Image.open(tmp_images[name]) as im:
        assert im.mode == "P"
        want = np.asarray(im.convert("RGB"))  # transparency ignored: the stored colours
    np.testing.assert_array_equal(img.pixels, want)


def test_heic_decodes(tmp_images: dict[str, Path]) -> None:
    if "heic" not in tmp_images:
        pytest.skip("this pillow-heif build cannot encode HEIC")
    data = tmp_images["heic"].read_bytes()
    assert data[4:8] == b"ftyp"
    img = decode_image(data)
    assert img.format == "HEIF" and img.pixels.shape == (120, 160, 3)


def test_bytes_and_path_agree(tmp_images: dict[str, Path]) -> None:
    a = decode_image(tmp_images["jpeg"])
    b = decode_image(tmp_images["jpeg"].read_bytes())
    c = decode_image(str(tmp_images["jpeg"]))
    np.testing.assert_array_equal(a.pixels, b.pixels)
    np.testing.assert_array_equal(a.pixels, c.pixels)


# --------------------------------------------------------------------------- orientation


def _unorient(upright: Image.Image, orientation: int) -> Image.Image:
    """The stored image that a viewer shows as ``upright`` under this EXIF orientation."""
    t = Image.Transpose
    inverse = {
        1: None,
        2: t.FLIP_LEFT_RIGHT,
        3: t.ROTATE_180,
        4: t.FLIP_TOP_BOTTOM,
        5: t.TRANSPOSE,
        6: t.ROTATE_90,  # shown after a 90-degree clockwise turn
        7: t.TRANSVERSE,
        8: t.ROTATE_270,
    }[orientation]
    return upright if inverse is None else upright.transpose(inverse)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation(orientation: int, tmp_path: Path) -> None:
    upright = Image.fromarray(make_picture(96, 64, seed=3))
    stored = _unorient(upright, orientation)
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = tmp_path / f"o{orientation}.png"
    stored.save(p, "PNG", exif=exif.tobytes())
    img = decode_image(p)
    np.testing.assert_array_equal(img.pixels, np.asarray(upright))
    assert (img.width, img.height) == upright.size
    # And Pillow's own reference transpose agrees.
    with Image.open(p) as im:
        np.testing.assert_array_equal(img.pixels, np.asarray(ImageOps.exif_transpose(im)))


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_on_reduced_jpeg(orientation: int, tmp_path: Path) -> None:
    upright = Image.fromarray(make_picture(1200, 800, seed=4))
    stored = _unorient(upright, orientation)
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = tmp_path / "o.jpg"
    stored.save(p, "JPEG", quality=95, exif=exif.tobytes())
    img = decode_image(p, max_side=400)
    assert (img.width, img.height) == (1200, 800)
    assert img.pixels.shape == (200, 300, 3)  # 1/4 DCT scale, upright
    small = np.asarray(upright.reduce(4))
    assert mad(img.pixels, small) < 6


# --------------------------------------------------------------------------- reduced decode


def test_reduced_jpeg_uses_dct_scaling(tmp_path: Path) -> None:
    p = tmp_path / "big.jpg"
    Image.fromarray(make_picture(2016, 1512)).save(p, "JPEG", quality=90)
    img = decode_image(p, max_side=512)
    assert (img.width, img.height) == (2016, 1512)
    assert img.pixels.shape == (378, 504, 3)  # 1/4: the least reduction fitting in 512
    full = decode_image(p, max_side=None)
    assert full.pixels.shape == (1512, 2016, 3)


def test_reduced_png_is_box_reduced(tmp_path: Path) -> None:
    pic = make_picture(1100, 700)
    p = tmp_path / "big.png"
    Image.fromarray(pic).save(p)
    img = decode_image(p, max_side=512)
    assert img.pixels.shape == (234, 367, 3)  # ceil(1100/3), ceil(700/3)
    np.testing.assert_array_equal(img.pixels, np.asarray(Image.fromarray(pic).reduce(3)))


def test_small_images_are_not_reduced(tmp_images: dict[str, Path]) -> None:
    assert decode_image(tmp_images["jpeg"], max_side=512).pixels.shape == (120, 160, 3)


# --------------------------------------------------------------------------- bad inputs


def _check_error(exc: DecodeError, reason: str) -> None:
    assert exc.reason == reason and reason in REASONS
    assert str(exc).startswith(f"{reason}: ") and len(exc.message) > 5


@pytest.mark.parametrize("name", ["jpeg", "png", "gif", "tiff", "webp"])
def test_truncated(name: str, tmp_images: dict[str, Path]) -> None:
    data = tmp_images[name].read_bytes()
    with pytest.raises(TruncatedImageError) as ei:
        decode_image(data[: len(data) // 3])  # GIF: inside the first frame
    _check_error(ei.value, "truncated")


def test_truncated_header(tmp_images: dict[str, Path]) -> None:
    with pytest.raises(TruncatedImageError) as ei:
        decode_image(tmp_images["png"].read_bytes()[:20])
    _check_error(ei.value, "truncated")


@pytest.mark.parametrize(
    "data",
    [b"", os.urandom(4096), b"hello, this is a text file\n" * 50, b"%PDF-1.4\n" + b"x" * 100],
    ids=["empty", "random", "text", "pdf"],
)
def test_not_an_image(data: bytes) -> None:
    with pytest.raises(NotAnImageError) as ei:
        decode_image(data)
    _check_error(ei.value, "not_an_image")


def test_bomb_png_is_refused_before_allocation() -> None:
    # 50000x50000 RGB would need 7.5 GB; the file is a few hundred bytes.
    bomb = png_bytes(50_000, 50_000, b"\x00" * 10)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageTooLargeError) as ei:
        decode_image(bomb)
    _check_error(ei.value, "too_large")
    assert "2500000000" in ei.value.message  # says how large
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kb < 50_000


def test_pixel_limit_is_configurable(tmp_images: dict[str, Path]) -> None:
    with pytest.raises(ImageTooLargeError):
        decode_image(tmp_images["png"], max_pixels=160 * 120 - 1)
    assert decode_image(tmp_images["png"], max_pixels=160 * 120).width == 160


def test_file_size_limit(tmp_images: dict[str, Path]) -> None:
    size = tmp_images["png"].stat().st_size
    for src in (tmp_images["png"], tmp_images["png"].read_bytes()):
        with pytest.raises(ImageTooLargeError) as ei:
            decode_image(src, max_bytes=size - 1)
        _check_error(ei.value, "too_large")
    assert decode_image(tmp_images["png"], max_bytes=size).width == 160


@pytest.mark.parametrize("fmt", ["PPM", "TGA", "ICO", "PCX"])
def test_unsupported_pillow_formats(fmt: str) -> None:
    buf = io.BytesIO()
    Image.fromarray(make_picture(32, 32)).save(buf, fmt)
    with pytest.raises(UnsupportedImageError) as ei:
        decode_image(buf.getvalue())
    _check_error(ei.value, "unsupported")
    assert fmt in ei.value.message


@pytest.mark.parametrize(
    "head", [b"8BPS\x00\x01", b"\xff\x0a\xfa", b"\x00\x00\x00\x0cJXL \r\n\x87\n"]
)
def test_unsupported_image_types_by_magic(head: bytes) -> None:
    with pytest.raises(UnsupportedImageError) as ei:
        decode_image(head + b"\x00" * 200)
    _check_error(ei.value, "unsupported")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        decode_image(tmp_path / "nope.jpg")
    with pytest.raises(IsADirectoryError):
        decode_image(tmp_path)


def test_bad_max_side(tmp_images: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="max_side"):
        decode_image(tmp_images["png"], max_side=0)


@pytest.mark.filterwarnings("ignore")  # Pillow warns about some corrupt TIFF tags
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(min_size=0, max_size=2048))
def test_arbitrary_bytes_only_raise_decode_errors(data: bytes) -> None:
    try:
        img = decode_image(data)
    except DecodeError as exc:
        assert exc.reason in REASONS
    else:
        assert img.pixels.ndim == 3


_SEEDS: dict[str, bytes] = {}


def _seed(fmt: str) -> bytes:
    if fmt not in _SEEDS:
        buf = io.BytesIO()
        Image.fromarray(make_picture(48, 32, seed=9)).save(buf, fmt)
        _SEEDS[fmt] = buf.getvalue()
    return _SEEDS[fmt]


@pytest.mark.filterwarnings("ignore")
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fmt=st.sampled_from(["JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP"]),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
    cut=st.integers(0, 10**6),
)
def test_corrupted_images_only_raise_decode_errors(
    fmt: str, edits: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(_seed(fmt))
    for pos, val in edits:
        data[pos % len(data)] = val
    data = data[: max(1, cut % (len(data) + 1))]
    try:
        img = decode_image(bytes(data))
    except DecodeError as exc:
        assert exc.reason in REASONS
    else:
        assert img.pixels.dtype == np.uint8 and img.pixels.shape[2] == 3


# --------------------------------------------------------------------------- decode_for_pdq


def test_decode_for_pdq_small_images_stay_rgb(tmp_images: dict[str, Path]) -> None:
    data = tmp_images["png"].read_bytes()
    img = decode_for_pdq(data)
    np.testing.assert_array_equal(img.pixels, decode_image(data).pixels)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_decode_for_pdq_large_images_give_luma(fmt: str, tmp_path: Path) -> None:
    pic = make_picture(1100, 700, seed=6)
    p = tmp_path / "big.img"
    Image.fromarray(pic).save(p, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    img = decode_for_pdq(p.read_bytes(), max_side=512)
    rgb = decode_image(p, max_side=512)
    assert img.pixels.ndim == 2 and img.pixels.shape == rgb.pixels.shape[:2]
    assert (img.width, img.height) == (1100, 700)
    want = np.asarray(Image.fromarray(rgb.pixels).convert("L"))
    np.testing.assert_array_equal(img.pixels, want)


def test_decode_for_pdq_orientation_on_luma(tmp_path: Path) -> None:
    upright = Image.fromarray(make_picture(600, 400, seed=8))
    exif = Image.Exif()
    exif[0x0112] = 6
    p = tmp_path / "o.png"
    _unorient(upright, 6).save(p, "PNG", exif=exif.tobytes())
    img = decode_for_pdq(p.read_bytes(), max_side=None)
    assert img.pixels.shape == (400, 600) and (img.width, img.height) == (600, 400)
    np.testing.assert_array_equal(img.pixels, np.asarray(upright.convert("L")))


def test_reduction_keeps_short_side(tmp_path: Path) -> None:
    """A panorama strip is not squeezed to a few pixels across (PDQ samples 64 per axis)."""
    p = tmp_path / "strip.png"
    Image.fromarray(make_picture(6000, 300)).save(p)
    img = decode_image(p, max_side=512)
    assert img.pixels.shape == (150, 3000, 3)  # factor 2 (300 // 128), not 12
    p2 = tmp_path / "thin.jpg"
    Image.fromarray(make_picture(5000, 40)).save(p2, quality=90)
    assert decode_image(p2, max_side=512).pixels.shape == (40, 5000, 3)
