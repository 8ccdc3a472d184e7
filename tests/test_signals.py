from __future__ import annotations

import hashlib
import io
import sys
import textwrap
from pathlib import Path

import numpy as np
import pdqhash
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import make_picture
from hashwatch.decode import decode_for_pdq, decode_image
from hashwatch.signals import (
    InvalidSignalValue,
    SignalType,
    UnknownSignalType,
    get_signal_type,
    load_plugins,
    plugin_errors,
    register_signal_type,
    signal_types,
    unregister_signal_type,
)
from hashwatch.signals.base import HexSignalType
from hashwatch.signals.crypto import hash_bytes, hash_path, hash_stream
from hashwatch.signals.pdq import (
    DIHEDRAL_NAMES,
    bits_to_hex,
    hamming_hex,
    hex_to_bits,
    pdq_dihedral,
    pdq_dihedral_fast,
    pdq_hash,
    pdq_hash_fast,
)

# --------------------------------------------------------------------------- PDQ


@pytest.mark.parametrize("shape", [(120, 160), (64, 64), (333, 17), (500, 480)])
def test_pdq_is_bit_identical_to_pdqhash(shape: tuple[int, int]) -> None:
    pic = make_picture(shape[1], shape[0], seed=shape[0])
    hexhash, quality = pdq_hash(pic)
    vector, q_ref = pdqhash.compute(pic)
    assert len(hexhash) == 64 and hexhash == hexhash.lower()
    np.testing.assert_array_equal(hex_to_bits(hexhash), vector.astype(np.uint8))
    assert quality == q_ref


def test_pdq_on_corpus_images_matches_pdqhash(corpus_dir: Path) -> None:
    files = sorted((corpus_dir / "kodak24").glob("*.png"))[:3]
    files += sorted((corpus_dir / "bsds500-val").glob("*.jpg"))[:3]
    assert files
    for f in files:
        with Image.open(f) as im:
            pixels = np.asarray(im.convert("RGB"))
        hexhash, quality = pdq_hash(pixels)
        vector, q_ref = pdqhash.compute(pixels)
        assert hexhash == bits_to_hex(vector) and quality == q_ref
        assert quality >= 50


def test_hex_layout_is_threatexchange_layout() -> None:
    # threatexchange: "%0*X" % (64, int("".join(bits), 2)), lower-cased.
    vector, _ = pdqhash.compute(make_picture())
    te = f"{int(''.join(str(int(b)) for b in vector), 2):064X}"
    assert pdq_hash(make_picture())[0] == te.lower()


def test_pdq_rejects_bad_arrays() -> None:
    with pytest.raises(ValueError):
        pdq_hash(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError):
        pdq_hash(np.zeros((10, 10, 3), np.float32))


def test_pdq_accepts_non_contiguous_views() -> None:
    pic = make_picture()
    view = pic[:, ::-1]
    assert pdq_hash(view) == pdq_hash(np.ascontiguousarray(view))


def test_dihedral_variants() -> None:
    pic = make_picture(128, 96, seed=5)
    variants, quality = pdq_dihedral(pic)
    assert len(variants) == len(DIHEDRAL_NAMES) == 8
    assert variants[0] == pdq_hash(pic)[0] and quality == pdq_hash(pic)[1]
    assert len(set(variants)) == 8
    # Each transformed picture's own hash is close to one variant, a different one each time.
    transforms = [
        pic,
        np.rot90(pic, 1),
        np.rot90(pic, 2),
        np.rot90(pic, 3),
        pic[::-1],
        pic[:, ::-1],
        pic.transpose(1, 0, 2),
        np.rot90(pic, 2).transpose(1, 0, 2),
    ]
    matched = set()
    for t in transforms:
        h, _ = pdq_hash(t)
        d = [hamming_hex(h, v) for v in variants]
        best = int(np.argmin(d))
        assert d[best] <= 16
        matched.add(best)
    assert matched == set(range(8))


def test_fast_pdq_is_close_to_full_resolution(tmp_path: Path) -> None:
    pic = make_picture(2016, 1512, seed=7)
    p = tmp_path / "big.jpg"
    Image.fromarray(pic).save(p, "JPEG", quality=90)
    full = decode_image(p, max_side=None)
    ref, q = pdq_hash(full.pixels)
    small = decode_image(p, max_side=512)
    assert small.pixels.shape[1] <= 512
    fast, q_fast = pdq_hash_fast(small.pixels, small.height, small.width)
    assert hamming_hex(ref, fast) <= 10
    assert abs(q - q_fast) <= 10
    variants, _ = pdq_dihedral_fast(small.pixels, small.height, small.width)
    assert variants[0] == fast and len(variants) == 8
    # unreduced: the estimate differs from the reference only by 8-bit rounding
    exact_fast, _ = pdq_hash_fast(full.pixels, full.height, full.width)
    assert hamming_hex(ref, exact_fast) <= 6


@pytest.mark.parametrize("size", [(40, 30), (160, 120), (256, 256)])
def test_fast_pdq_small_full_size_images_are_exact(size: tuple[int, int]) -> None:
    pic = make_picture(*size)
    assert pdq_hash_fast(pic, size[1], size[0]) == pdq_hash(pic)


hex64 = st.binary(min_size=32, max_size=32).map(bytes.hex)


@settings(max_examples=200)
@given(a=hex64, b=hex64, c=hex64)
def test_hamming_is_a_metric(a: str, b: str, c: str) -> None:
    assert hamming_hex(a, a) == 0
    assert hamming_hex(a, b) == hamming_hex(b, a)
    assert hamming_hex(a, c) <= hamming_hex(a, b) + hamming_hex(b, c)
    assert hamming_hex(a, b) == int((hex_to_bits(a) != hex_to_bits(b)).sum())
    assert bits_to_hex(hex_to_bits(a)) == a


def test_hamming_length_mismatch() -> None:
    with pytest.raises(ValueError, match="length"):
        hamming_hex("ab", "abcd")


# --------------------------------------------------------------------------- crypto


@settings(max_examples=100)
@given(data=st.binary(max_size=5000), buf=st.integers(1, 700))
def test_crypto_stream_equals_hashlib(data: bytes, buf: int) -> None:
    want = (
        hashlib.md5(data).hexdigest(),
        hashlib.sha1(data).hexdigest(),
        hashlib.sha256(data).hexdigest(),
    )
    for got in (hash_bytes(data), hash_stream(io.BytesIO(data), buffer_size=buf)):
        assert (got.md5, got.sha1, got.sha256, got.size) == (*want, len(data))


def test_crypto_path_streams_large_files(tmp_path: Path) -> None:
    data = np.random.default_rng(1).bytes(3 * (1 << 20) + 123)
    p = tmp_path / "blob.bin"
    p.write_bytes(data)
    got = hash_path(p)
    assert got.sha256 == hashlib.sha256(data).hexdigest() and got.size == len(data)
    assert got == hash_bytes(data)


def test_crypto_known_vectors() -> None:
    got = hash_bytes(b"abc")
    assert got.md5 == "900150983cd24fb0d6963f7d28e17f72"
    assert got.sha1 == "a9993e364706816aba3e25717850c26c9cd0d89d"
    assert got.sha256 == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


# --------------------------------------------------------------------------- registry


def test_builtin_signal_types() -> None:
    types = signal_types()
    assert {"md5", "sha1", "sha256", "pdq"} <= set(types)
    pdq = get_signal_type("pdq")
    assert pdq.threshold == 31 and pdq.min_quality == 50 and not pdq.exact
    assert pdq.usable(50) and not pdq.usable(49) and pdq.usable(None)
    for name, n in (("md5", 32), ("sha1", 40), ("sha256", 64)):
        st_ = get_signal_type(name)
        assert st_.exact and st_.threshold == 0 and st_.usable(0)
        assert isinstance(st_, HexSignalType) and st_.n_hex == n
    assert get_signal_type(" PDQ ") is pdq  # case-insensitive look-up


def test_validate_normalises_and_rejects() -> None:
    md5 = get_signal_type("md5")
    assert md5.validate("  900150983CD24FB0D6963F7D28E17F72\n") == (
        "900150983cd24fb0d6963f7d28e17f72"
    )
    with pytest.raises(InvalidSignalValue, match="32 hex characters, got 31"):
        md5.validate("900150983cd24fb0d6963f7d28e17f7")
    with pytest.raises(InvalidSignalValue, match="non-hex character 'g'"):
        md5.validate("g00150983cd24fb0d6963f7d28e17f72")
    with pytest.raises(InvalidSignalValue, match="must be a string"):
        md5.validate(123)  # type: ignore[arg-type]
    assert isinstance(InvalidSignalValue("x"), ValueError)


@given(raw=st.binary(min_size=32, max_size=32), upper=st.lists(st.booleans(), min_size=64))
def test_pdq_validate_round_trips_any_case(raw: bytes, upper: list[bool]) -> None:
    h = raw.hex()
    mixed = "".join(c.upper() if u else c for c, u in zip(h, upper, strict=False))
    assert get_signal_type("pdq").validate(mixed) == h


@given(value=st.text(max_size=70))
def test_pdq_validate_never_accepts_garbage(value: str) -> None:
    pdq = get_signal_type("pdq")
    try:
        out = pdq.validate(value)
    except InvalidSignalValue:
        return
    assert len(out) == 64 and set(out) <= set("0123456789abcdef")


def test_distances_and_matches() -> None:
    pdq = get_signal_type("pdq")
    a = "0" * 64
    b = "f" * 8 + "0" * 56  # 32 bits apart
    c = "f" * 7 + "e" + "0" * 56  # 31 bits apart
    assert pdq.distance(a, b) == 32 and not pdq.matches(a, b)
    assert pdq.distance(a, c) == 31 and pdq.matches(a, c)
    assert pdq.matches(a, b, threshold=32)
    sha = get_signal_type("sha256")
    h = hashlib.sha256(b"x").hexdigest()
    assert sha.distance(h, h.upper()) == 0 and sha.matches(h, h)
    assert sha.distance(h, hashlib.sha256(b"y").hexdigest()) == 1


def test_unknown_signal_type_message() -> None:
    with pytest.raises(UnknownSignalType, match="unknown signal type 'phash'.*pdq"):
        get_signal_type("phash")


def test_photodna_is_kept_in_every_spelling_but_not_matchable() -> None:
    import base64

    from hashwatch.signals import SignalNotMatchable

    st_ = get_signal_type("photodna")
    raw = bytes((i * 7 + 3) % 256 for i in range(144))
    want = raw.hex()
    assert st_.validate(raw.hex().upper()) == want  # ICSE: hex
    assert st_.validate(base64.b64encode(raw).decode()) == want  # Project VIC: base64
    assert st_.validate(",".join(str(b) for b in raw)) == want  # byte list
    assert not st_.matchable and st_.placeholder
    for bad in ("ab" * 143, base64.b64encode(raw[:100]).decode(), "1,2,300", "zz" * 144):
        with pytest.raises(InvalidSignalValue):
            st_.validate(bad)
    with pytest.raises(SignalNotMatchable):
        st_.distance(want, want)


def test_photodna_plugin_replaces_the_placeholder(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A licensed build registered under the name ``photodna`` takes over; other built-ins
    cannot be replaced by a plug-in."""
    (tmp_path / "pdna_hw_plugin.py").write_text(textwrap.dedent(
        """
        from hashwatch.signals import HexSignalType

        def make():
            return [HexSignalType("photodna", n_bytes=144, threshold=1000),
                    HexSignalType("md5", n_bytes=16, threshold=9)]
        """))
    dist = tmp_path / "pdna_hw_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pdna-hw-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[hashwatch.signals]\npdna = pdna_hw_plugin:make\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from hashwatch.signals import PHOTODNA

    try:
        load_plugins(force=True)
        st_ = get_signal_type("photodna")
        assert st_ is not PHOTODNA and st_.matchable and st_.threshold == 1000
        assert "already registered" in plugin_errors()["pdna"]  # the md5 override refused
        assert get_signal_type("md5").exact
    finally:
        register_signal_type(PHOTODNA, replace=True)
        sys.modules.pop("pdna_hw_plugin", None)


class ToyPhotoDNA(SignalType):
    """A PhotoDNA-shaped toy: 144 bytes, L1 distance between byte vectors."""

    name = "toy_photodna"
    threshold = 500

    def validate(self, value: str) -> str:
        v = value.strip().lower()
        try:
            raw = bytes.fromhex(v)
        except ValueError:
            raise InvalidSignalValue("toy_photodna value must be hex") from None
        if len(raw) != 144:
            raise InvalidSignalValue(f"toy_photodna value must be 144 bytes, got {len(raw)}")
        return v

    def distance(self, a: str, b: str) -> int:
        x = np.frombuffer(bytes.fromhex(a), np.uint8).astype(int)
        y = np.frombuffer(bytes.fromhex(b), np.uint8).astype(int)
        return int(np.abs(x - y).sum())


def test_register_a_toy_signal_type() -> None:
    toy = ToyPhotoDNA()
    register_signal_type(toy)
    try:
        assert get_signal_type("toy_photodna") is toy
        assert "toy_photodna" in signal_types()
        a = "00" * 144
        b = "01" * 144
        assert toy.validate(a.upper()) == a
        assert toy.distance(a, b) == 144 and toy.matches(a, b)
        with pytest.raises(InvalidSignalValue, match="144 bytes, got 2"):
            toy.validate("abcd")
        with pytest.raises(ValueError, match="already registered"):
            register_signal_type(ToyPhotoDNA())
        register_signal_type(ToyPhotoDNA(), replace=True)
    finally:
        unregister_signal_type("toy_photodna")
    with pytest.raises(UnknownSignalType):
        get_signal_type("toy_photodna")


def test_register_rejects_bad_types() -> None:
    with pytest.raises(TypeError):
        register_signal_type("pdq")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="invalid signal type name"):
        register_signal_type(HexSignalType("Bad Name", n_bytes=4, threshold=0))
    with pytest.raises(ValueError, match="already registered"):
        register_signal_type(HexSignalType("pdq", n_bytes=4, threshold=0))


def test_entry_point_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real installed-distribution layout on sys.path, discovered by importlib.metadata."""
    (tmp_path / "toy_hw_plugin.py").write_text(
        textwrap.dedent(
            """
            from hashwatch.signals import HexSignalType

            def make():
                return [HexSignalType("toyhash64", n_bytes=8, threshold=3)]

            def broken():
                raise RuntimeError("licence file missing")
            """
        )
    )
    dist = tmp_path / "toy_hw_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-hw-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[hashwatch.signals]\ntoyhash64 = toy_hw_plugin:make\nbroken = toy_hw_plugin:broken\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        added = load_plugins(force=True)
        assert added == ["toyhash64"]
        st_ = get_signal_type("toyhash64")
        assert st_.validate("00000000000000FF") == "00000000000000ff"
        assert st_.distance("0000000000000000", "0000000000000007") == 3
        assert "licence file missing" in plugin_errors()["broken"]
        # built-ins are untouched, and a second load adds nothing new
        assert get_signal_type("pdq").threshold == 31
    finally:
        unregister_signal_type("toyhash64")
        sys.modules.pop("toy_hw_plugin", None)


@pytest.mark.parametrize(
    ("fmt", "size", "mode"),
    [
        ("JPEG", (1600, 1200), "RGB"),
        ("PNG", (900, 700), "RGB"),
        ("PNG", (900, 700), "RGBA"),
        ("PNG", (700, 500), "P"),
        ("WEBP", (1000, 300), "RGB"),
        ("JPEG", (400, 300), "L"),
    ],
)
def test_fast_pdq_same_from_rgb_or_luma_decode(
    fmt: str, size: tuple[int, int], mode: str, tmp_path: Path
) -> None:
    """decode_image (RGB, what the service and triage use) and decode_for_pdq (luma, what
    hash_file uses) must lead to the same PDQ."""
    im = Image.fromarray(make_picture(*size, seed=11))
    im = im.quantize(128) if mode == "P" else im.convert(mode)
    p = tmp_path / f"x.{fmt.lower()}"
    im.save(p, fmt)
    data = p.read_bytes()
    rgb = decode_image(data)
    lum = decode_for_pdq(data)
    assert lum.pixels.ndim == 2
    assert pdq_hash_fast(rgb.pixels, rgb.height, rgb.width) == pdq_hash_fast(
        lum.pixels, lum.height, lum.width
    )
