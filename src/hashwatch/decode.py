"""Decode image bytes into an RGB array ready for hashing, safely and fast.

Choices (documented here because every hash depends on them):

* :func:`decode_image` returns ``(h, w, 3)`` uint8 RGB, C-contiguous, EXIF orientation
  applied. :func:`decode_for_pdq` (what hash_file uses) returns the same, or for larger
  images only its 8-bit luma ``(h, w)``; both lead to the same PDQ.
* Alpha is ignored (the RGB channels are kept as stored, not composited). This is what Meta's
  reference tools and ``threatexchange`` do (pdqhash reads channels 0-2 only), so hashes of
  RGBA/LA/transparent-palette images stay interoperable with theirs.
* 16-bit samples keep their top 8 bits (``I;16`` greyscale is shifted, 48-bit RGB PNG/TIFF is
  reduced by Pillow the same way); CMYK, palette, 1-bit and greyscale go through Pillow's
  RGB conversion.
* Animated images (GIF, WebP, APNG, multi-page TIFF) use their first frame.
* ``max_side`` asks for a *reduced* decode: JPEG is decoded at a DCT scale (1/2, 1/4, 1/8)
  and other formats are box-reduced by an integer factor: the least reduction that brings the
  longer side to at most ``max_side`` (so it lands in ``(max_side/2, max_side]``), except that
  the short side is never reduced below 128 px (panoramas and strips stay sharp across).
  :func:`hashwatch.signals.pdq.pdq_hash_fast` turns such pixels into the PDQ of the
  full-resolution image within a few bits (benchmarks/fastpath_distance.py); the reference
  PDQ run directly on reduced pixels would be 8-20 bits off. ``max_side=None`` decodes at
  full resolution.
* Safety: the file size is checked before reading, the pixel count from the header before any
  pixel buffer is allocated. Failures raise a :class:`DecodeError` subclass whose ``reason`` is
  one of ``truncated``, ``not_an_image``, ``unsupported``, ``too_large``. I/O problems (missing
  file, a directory, permissions) raise the usual :class:`OSError` subclasses instead: they are
  not decoding problems, and :func:`hashwatch.hashing.hash_file` records them as ``unreadable``.
"""

from __future__ import annotations

import io
import os
import stat
import threading
import warnings
from dataclasses import dataclass
from struct import error as struct_error  # raised by some Pillow plugins on short data
from typing import Final

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "REASONS",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_SIDE",
    "MIN_REDUCED_SHORT_SIDE",
    "SUPPORTED_FORMATS",
    "DecodeError",
    "DecodedImage",
    "ImageTooLargeError",
    "NotAnImageError",
    "TruncatedImageError",
    "UnsupportedImageError",
    "decode_for_pdq",
    "decode_image",
    "read_limited",
]

DEFAULT_MAX_PIXELS: Final = 100_000_000  # 100 MP: above any phone or DSLR photo
DEFAULT_MAX_BYTES: Final = 200 * 1024 * 1024  # 200 MiB
DEFAULT_MAX_SIDE: Final = 512  # chosen by benchmarks/fastpath_distance.py

# Pillow format names we decode. MPO is how Pillow names most phone JPEGs (multi-picture).
SUPPORTED_FORMATS: Final = frozenset(
    {"JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "DIB", "TIFF", "HEIF", "HEIC", "AVIF"}
)

REASONS: Final = ("truncated", "not_an_image", "unsupported", "too_large")


class DecodeError(Exception):
    """An image could not be decoded. ``reason`` says why, in one word."""

    reason: str = "not_an_image"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


class TruncatedImageError(DecodeError):
    """The file starts like an image but its data is cut short or corrupt."""

    reason = "truncated"


class NotAnImageError(DecodeError):
    """The bytes are not an image (empty, text, random data, an unknown format)."""

    reason = "not_an_image"


class UnsupportedImageError(DecodeError):
    """A recognised image type (or image mode) that hashwatch does not decode."""

    reason = "unsupported"


class ImageTooLargeError(DecodeError):
    """The file or its pixel count is over the configured limit."""

    reason = "too_large"


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """Decoded pixels plus facts about the full image."""

    pixels: np.ndarray  # (h, w, 3) uint8 RGB, orientation applied, maybe reduced;
    # (h, w) uint8 luma from decode_for_pdq when the image is large
    width: int  # of the full image after orientation
    height: int
    format: str  # Pillow format name: "JPEG", "PNG", ...


# Magic numbers of image types Pillow cannot decode here; they get "unsupported", not
# "not_an_image", so the analyst knows the file is a picture that needs another tool.
_UNSUPPORTED_MAGIC: Final = (
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"8BPS", "Photoshop PSD"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000 codestream"),
    (b"II*\x00\x10\x00\x00\x00CR", "Canon CR2 raw"),
    (b"FUJIFILMCCD-RAW", "Fujifilm RAF raw"),
)

# Magic numbers of the formats we do decode: a failure on such bytes means "truncated/corrupt".
_SUPPORTED_MAGIC: Final = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",  # TIFF little-endian
    b"MM\x00*",  # TIFF big-endian
)

_heif_lock = threading.Lock()
_heif_registered = False


def _ensure_heif() -> None:
    """Register pillow-heif's opener the first time a HEIF-looking file shows up."""
    global _heif_registered
    if _heif_registered:
        return
    with _heif_lock:
        if not _heif_registered:
            try:
                import pillow_heif
            except ImportError:  # optional at run time: HEIC then reports "unsupported"
                pass
            else:
                pillow_heif.register_heif_opener()
            _heif_registered = True


def _is_isobmff(head: bytes) -> bool:
    return len(head) >= 12 and head[4:8] == b"ftyp"


def _is_webp(head: bytes) -> bool:
    return head[:4] == b"RIFF" and head[8:12] == b"WEBP"


def read_limited(path: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Read a whole regular file, refusing files over ``max_bytes`` before reading them.

    Raises OSError (FileNotFoundError, IsADirectoryError, PermissionError) for I/O problems and
    ImageTooLargeError for an over-size file.
    """
    # O_NONBLOCK: opening a FIFO must not wait for a writer; no effect on regular files.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            # FIFOs and devices in a seized tree would block or never end.
            raise OSError(f"not a regular file: {os.fspath(path)}")
        if st.st_size > max_bytes:
            raise ImageTooLargeError(f"file is {st.st_size} bytes, over the {max_bytes}-byte limit")
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew while we read it
        raise ImageTooLargeError(f"file is over the {max_bytes}-byte limit")
    return data


def decode_image(
    src: str | os.PathLike[str] | bytes,
    *,
    max_side: int | None = DEFAULT_MAX_SIDE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> DecodedImage:
    """Decode ``src`` (a path or the file's bytes) into a :class:`DecodedImage`.

    See the module docstring for the exact conversions. Raises :class:`DecodeError` subclasses
    for bad images and :class:`OSError` for unreadable paths.
    """
    if isinstance(src, bytes | bytearray | memoryview):
        data = bytes(src)
        if len(data) > max_bytes:
            raise ImageTooLargeError(f"file is {len(data)} bytes, over the {max_bytes}-byte limit")
    else:
        data = read_limited(src, max_bytes)
    if max_side is not None and max_side < 1:
        raise ValueError("max_side must be >= 1 or None")
    return _decode_bytes(data, max_side=max_side, max_pixels=max_pixels)


def decode_for_pdq(
    data: bytes,
    *,
    max_side: int | None = DEFAULT_MAX_SIDE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    rgb_max_pixels: int = 256 * 256,
) -> DecodedImage:
    """Decode for perceptual hashing: only luma is needed, except for small images.

    Images of at most ``rgb_max_pixels`` that are not reduced come back as RGB, so that
    PDQ can run the reference code on them bit for bit. Larger ones come back as a 2-D
    luma array (Pillow's ``convert("L")``: (19595 R + 38470 G + 7471 B + 32768) >> 16, i.e.
    0.299/0.587/0.114 rounded), which saves the float luma pass and two thirds of the copy.
    :func:`hashwatch.signals.pdq.pdq_hash_fast` computes the very same luma from RGB, so
    this and :func:`decode_image` lead to identical PDQ hashes.
    """
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"file is {len(data)} bytes, over the {max_bytes}-byte limit")
    if max_side is not None and max_side < 1:
        raise ValueError("max_side must be >= 1 or None")
    return _decode_bytes(data, max_side=max_side, max_pixels=max_pixels, luma_above=rgb_max_pixels)


def _decode_bytes(
    data: bytes, *, max_side: int | None, max_pixels: int, luma_above: int | None = None
) -> DecodedImage:
    if not data:
        raise NotAnImageError("empty file")
    head = data[:32]
    for magic, name in _UNSUPPORTED_MAGIC:
        if head.startswith(magic):
            raise UnsupportedImageError(f"{name} images are not supported")
    if _is_isobmff(head):
        _ensure_heif()
    known_magic = any(head.startswith(m) for m in _SUPPORTED_MAGIC) or _is_webp(head)

    try:
        with warnings.catch_warnings():
            # We enforce our own pixel limit; Pillow's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        # Pillow's own hard limit (2 x Image.MAX_IMAGE_PIXELS) fired first, still from the
        # header alone. It caps max_pixels at about 179 MP unless the application raises it.
        raise ImageTooLargeError(f"over Pillow's pixel limit: {exc}") from None
    except UnidentifiedImageError:
        if known_magic:
            raise TruncatedImageError("image header is truncated or corrupt") from None
        if _is_isobmff(head):
            raise UnsupportedImageError(
                f"ISO media file (brand {head[8:12].decode('latin-1')!r}) is not a supported image"
            ) from None
        raise NotAnImageError("not a recognised image format") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise TruncatedImageError(f"cannot read image header: {exc}") from None

    with im:
        fmt = (im.format or "").upper()
        if fmt not in SUPPORTED_FORMATS:
            raise UnsupportedImageError(f"{im.format or 'unknown'} images are not supported")
        w, h = im.size
        if w <= 0 or h <= 0:
            raise TruncatedImageError(f"image header claims a {w}x{h} size")
        if w * h > max_pixels:
            # Checked from the header alone: no pixel buffer exists yet.
            raise ImageTooLargeError(f"{w}x{h} = {w * h} pixels, over the {max_pixels}-pixel limit")
        luma = luma_above is not None and (
            w * h > luma_above or (max_side is not None and max(w, h) > max_side)
        )
        try:
            pixels = _load_rgb(im, fmt, max_side, luma)
        except DecodeError:
            raise
        except MemoryError:
            raise ImageTooLargeError("out of memory while decoding") from None
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct_error) as exc:
            raise TruncatedImageError(f"image data is truncated or corrupt: {exc}") from None
        # After load: some formats (PNG) only know their EXIF once the data is read.
        orientation = _orientation(im)

    pixels = _apply_orientation(pixels, orientation)
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    return DecodedImage(pixels=np.ascontiguousarray(pixels), width=w, height=h, format=fmt)


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(0x0112, 1)
    except Exception:  # broken EXIF must not lose the image; treat as upright
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _apply_orientation(a: np.ndarray, orientation: int) -> np.ndarray:
    """EXIF orientation on an (h, w[, 3]) array: cheap views instead of a Pillow transpose."""
    if orientation == 2:
        return a[:, ::-1]
    if orientation == 3:
        return a[::-1, ::-1]
    if orientation == 4:
        return a[::-1]
    if orientation == 5:  # transpose
        return a.swapaxes(0, 1)
    if orientation == 6:  # rotate 90 clockwise
        return np.rot90(a, k=-1)
    if orientation == 7:  # transverse
        return np.rot90(a, k=2).swapaxes(0, 1)
    if orientation == 8:  # rotate 90 counter-clockwise
        return np.rot90(a, k=1)
    return a


# Reduction never takes the short side below this: PDQ samples 64 points per axis, and a
# strip squeezed to a few pixels across loses what the full-resolution hash sees.
MIN_REDUCED_SHORT_SIDE = 128


def _max_factor(size: tuple[int, int]) -> int:
    return max(1, min(size) // MIN_REDUCED_SHORT_SIDE)


def _load_rgb(im: Image.Image, fmt: str, max_side: int | None, luma: bool) -> np.ndarray:
    if fmt in ("JPEG", "MPO"):
        scale = 1
        if max_side is not None:
            # Smallest DCT reduction whose longer side fits in max_side (1/8 at most; the box
            # reduce below finishes the job for very large JPEGs), within the short-side cap.
            cap = _max_factor(im.size)
            while scale < 8 and 2 * scale <= cap and -(-max(im.size) // scale) > max_side:
                scale *= 2
        if scale > 1:
            # draft() picks the largest scale s with size // request >= s, hence floor here.
            # Always RGB, even for luma: libjpeg's own Y plane differs from the luma of the
            # RGB pixels by rounding, and decode_image + pdq_hash_fast must give the same
            # PDQ as decode_for_pdq + pdq_hash_fast (the Y plane was not measurably faster).
            im.draft("RGB", (max(1, im.size[0] // scale), max(1, im.size[1] // scale)))
    # A cut-off file must be an error, never silently grey-padded pixels: enforce Pillow's
    # default in case something else in the process changed it.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    im.load()
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        a = np.asarray(im).astype(np.uint16, copy=False)
        grey = (a >> 8).astype(np.uint8)
        im2 = Image.fromarray(grey, "L")
    elif mode == "I":
        a = np.asarray(im)
        # 16-bit greyscale opened as 32-bit int: scale down when values go past 8 bits.
        grey = (np.clip(a, 0, 65535) >> 8) if a.size and a.max() > 255 else np.clip(a, 0, 255)
        im2 = Image.fromarray(grey.astype(np.uint8), "L")
    elif mode == "F":
        a = np.asarray(im)
        im2 = Image.fromarray(np.clip(np.nan_to_num(a), 0, 255).astype(np.uint8), "L")
    else:
        im2 = im
    if max_side is not None:
        long_side = max(im2.size)
        factor = min(-(-long_side // max_side), _max_factor(im2.size))
        if factor > 1:
            # Box average, like PDQ's Jarosz filter; done before RGB conversion where it is
            # cheaper (L) and after it where the mode has no box reduce (P, 1).
            if im2.mode in ("RGB", "L", "RGBA", "LA", "CMYK", "RGBX"):
                im2 = im2.reduce(factor)
            else:
                im2 = im2.convert("RGB").reduce(factor)
    want = "L" if luma else "RGB"
    if im2.mode != want:
        try:
            if luma and im2.mode not in ("RGB", "RGBA", "RGBX", "LA", "P", "1"):
                im2 = im2.convert("RGB")  # e.g. CMYK: no direct conversion to L
            im2 = im2.convert(want)  # to L: ITU-R 601 weights, alpha ignored
        except ValueError as exc:
            raise UnsupportedImageError(f"image mode {im2.mode} is not supported: {exc}") from None
    return np.asarray(im2)
