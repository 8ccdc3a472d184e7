"""The client's views of a picture: what the device hashes, without knowing the list.

A copy of a listed picture may have been mirrored, turned by a multiple of 90 degrees or put
inside a border. The device therefore derives its match keys from several PDQ views, the
query views of hashwatch's robust matcher (``hashwatch.robust.query_signals``):

* ``full`` and its 7 dihedral variants (``full:rot90``, ``full:fliph``, ...): PDQ of the whole
  picture as given and of its 7 flips/turns, each as the reference computes it on the
  transformed pixels (``hashwatch.signals.pdq.pdq_dihedral_coefficients``: one 64x64 luma
  reduction per mirror, ~2.5 ms for all 8 at 768x512; PDQ's own DCT variants are 10-20 bits
  off for mirrored pictures, which costs keys);
* ``trim`` and its variants: the same for the picture inside uniform borders or letterbox bars
  (``hashwatch.robust.trim_box``, run at full resolution: a box found on a reduced copy
  lands 10 bits further from the listed hash), only when a border was found.

Each view keeps the 256 real coefficients: the distance of a coefficient from the median says
how likely an edit flips that bit, which is what the client-side probes (``keys``) rank by.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from hashwatch.robust import trim_box
from hashwatch.signals.pdq import pdq_dihedral_coefficients

MIN_QUALITY = 50  # Meta's rule: flatter pictures give hashes too unstable to match on
TRIM_MAX_AREA = 0.98  # a box keeping more than this of the picture is no border

# View name suffixes, in the order of ``pdq_dihedral_coefficients`` (and of the robust
# matcher's variant names).
DIHEDRAL = ("", ":rot90", ":rot180", ":rot270", ":flipv", ":fliph", ":rot90flipv",
            ":rot90fliph")


@dataclass(frozen=True)
class View:
    """One PDQ view: ``name`` (e.g. ``full``, ``full:fliph``, ``trim``), the 256 coefficients
    in PDQ bit order, and PDQ's quality of the source picture. A view known only as a hash
    (:meth:`from_hash`) has no coefficients: every bit then counts as equally reliable."""

    name: str
    coeffs: np.ndarray | None
    quality: int
    hash_bits: np.ndarray | None = None

    @classmethod
    def from_hash(cls, name: str, bits: np.ndarray, quality: int = 100) -> View:
        return cls(name, None, quality, np.asarray(bits, dtype=np.uint8).reshape(256))

    @cached_property
    def median(self) -> float:
        return float(np.median(self.coeffs))

    @cached_property
    def bits(self) -> np.ndarray:
        """uint8[256], the PDQ hash of this view (``np.packbits`` gives its bytes)."""
        if self.hash_bits is not None:
            return self.hash_bits
        return (self.coeffs > self.median).astype(np.uint8)

    @property
    def pdq(self) -> bytes:
        return np.packbits(self.bits).tobytes()

    @cached_property
    def reliability(self) -> np.ndarray:
        """float64[256]: distance of each coefficient from the median, in units of the view's
        own spread (so that views and pictures of any contrast compare)."""
        if self.coeffs is None:
            return np.ones(256)
        spread = float(np.std(self.coeffs)) or 1.0
        return np.abs(self.coeffs - self.median) / spread


def _views(prefix: str, pixels: np.ndarray) -> list[View]:
    coeffs, q = pdq_dihedral_coefficients(pixels)
    if q < MIN_QUALITY:
        return []
    return [View(prefix + n, c, q) for n, c in zip(DIHEDRAL, coeffs, strict=True)]


def client_views(pixels: np.ndarray) -> list[View]:
    """Views of an (h, w, 3) uint8 RGB picture: the 8 ``full`` variants, then the 8 ``trim``
    variants if a border was found. Views of quality < :data:`MIN_QUALITY` are left out
    (so a flat picture may have none). Raises ValueError for anything but (h, w, 3) uint8."""
    if pixels.ndim != 3 or pixels.shape[2] < 3 or pixels.dtype != np.uint8 or min(
            pixels.shape[:2]) < 1:
        raise ValueError("pixels must be an (h, w, 3) uint8 array")
    pixels = pixels[..., :3]
    out = _views("full", pixels)
    h, w = pixels.shape[:2]
    y0, y1, x0, x1 = trim_box(pixels)
    if (y1 - y0) * (x1 - x0) < TRIM_MAX_AREA * h * w:
        out += _views("trim", pixels[y0:y1, x0:x1])
    return out
