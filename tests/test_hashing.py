from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_picture
from hashwatch.decode import decode_image
from hashwatch.hashing import FileHashes, hash_file, hash_many, iter_files
from hashwatch.signals.pdq import hamming_hex, pdq_dihedral_fast, pdq_hash, pdq_hash_fast


def digests(p: Path) -> tuple[str, str, str]:
    data = p.read_bytes()
    return (
        hashlib.md5(data).hexdigest(),
        hashlib.sha1(data).hexdigest(),
        hashlib.sha256(data).hexdigest(),
    )


def test_hash_file_image(tmp_images: dict[str, Path]) -> None:
    p = tmp_images["jpeg"]
    r = hash_file(p)
    assert isinstance(r, FileHashes) and r.error is None and r.error_reason is None
    assert (r.md5, r.sha1, r.sha256) == digests(p)
    assert r.size == p.stat().st_size and r.path == str(p)
    assert (r.width, r.height, r.format) == (160, 120, "JPEG")
    img = decode_image(p)
    assert (r.pdq, r.pdq_quality) == pdq_hash_fast(img.pixels, img.height, img.width)
    assert r.pdq_dihedral is None


def test_exact_pdq_is_the_reference_on_full_pixels(tmp_path: Path) -> None:
    p = tmp_path / "big.jpg"
    Image.fromarray(make_picture(1600, 1200, seed=2)).save(p, "JPEG", quality=90)
    exact = hash_file(p, exact_pdq=True)
    with Image.open(p) as im:  # what threatexchange does
        ref = pdq_hash(np.asarray(im.convert("RGB")))
    assert (exact.pdq, exact.pdq_quality) == ref
    fast = hash_file(p)
    assert hamming_hex(fast.pdq, exact.pdq) <= 10
    assert fast.sha256 == exact.sha256


def test_dihedral_option(tmp_images: dict[str, Path]) -> None:
    r = hash_file(tmp_images["png"], dihedral=True)
    assert r.pdq_dihedral is not None and len(r.pdq_dihedral) == 8
    assert r.pdq_dihedral[0] == r.pdq
    img = decode_image(tmp_images["png"])
    assert list(r.pdq_dihedral) == pdq_dihedral_fast(img.pixels, img.height, img.width)[0]
    assert r.to_dict()["pdq_dihedral"] == list(r.pdq_dihedral)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"just some text\n", "not_an_image"),
        (b"", "not_an_image"),
        (b"P6\n2 2\n255\n" + b"\x00" * 12, "unsupported"),
    ],
)
def test_non_images_still_get_crypto(tmp_path: Path, content: bytes, reason: str) -> None:
    p = tmp_path / "f.bin"
    p.write_bytes(content)
    r = hash_file(p)
    assert (r.md5, r.sha1, r.sha256) == digests(p) and r.size == len(content)
    assert r.error is not None and r.error.startswith(f"{reason}: ")
    assert r.error_reason == reason and r.pdq is None and r.width is None


def test_truncated_image_keeps_crypto(tmp_path: Path, tmp_images: dict[str, Path]) -> None:
    p = tmp_path / "cut.jpg"
    p.write_bytes(tmp_images["jpeg"].read_bytes()[:1500])
    r = hash_file(p)
    assert r.error_reason == "truncated" and r.sha256 == digests(p)[2]


def test_oversize_file_is_streamed_not_decoded(tmp_images: dict[str, Path]) -> None:
    p = tmp_images["png"]
    r = hash_file(p, max_bytes=1000)
    assert r.error is not None and r.error.startswith("too_large: ")
    assert (r.md5, r.sha1, r.sha256) == digests(p) and r.size == p.stat().st_size
    assert r.pdq is None


def test_pixel_limit_reported(tmp_images: dict[str, Path]) -> None:
    r = hash_file(tmp_images["png"], max_pixels=100)
    assert r.error_reason == "too_large" and r.sha1 == digests(tmp_images["png"])[1]


def test_missing_directory_and_special_files(tmp_path: Path) -> None:
    r = hash_file(tmp_path / "missing.jpg")
    assert r.error == "unreadable: No such file or directory" and r.sha256 is None
    assert hash_file(tmp_path).error_reason == "unreadable"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert hash_file(fifo).error == "unreadable: not a regular file"  # and does not block
    assert list(iter_files([tmp_path])) == []  # the walk skips it


def test_decode_refuses_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        decode_image(fifo)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read files without permission")
def test_unreadable_file(tmp_path: Path) -> None:
    p = tmp_path / "secret.jpg"
    p.write_bytes(b"x")
    p.chmod(0)
    assert hash_file(p).error == "unreadable: Permission denied"


def _tree(root: Path, tmp_images: dict[str, Path]) -> list[Path]:
    (root / "b" / "deeper").mkdir(parents=True)
    (root / "a").mkdir()
    files = [
        root / "a" / "2.jpg",
        root / "a" / "10.png",
        root / "b" / "deeper" / "x.gif",
        root / "b" / "z.txt",
        root / "c.webp",
    ]
    srcs = ["jpeg", "png", "gif", None, "webp"]
    for f, s in zip(files, srcs, strict=True):
        if s is None:
            f.write_text("not an image")
        else:
            shutil.copy(tmp_images[s], f)
    (root / "b" / "loop").symlink_to(root, target_is_directory=True)
    return files


def test_iter_files_sorted_recursive(tmp_path: Path, tmp_images: dict[str, Path]) -> None:
    _tree(tmp_path, tmp_images)
    got = [os.path.relpath(p, tmp_path) for p in iter_files([tmp_path])]
    assert got == ["a/10.png", "a/2.jpg", "b/deeper/x.gif", "b/z.txt", "c.webp"]
    # top-level order is the caller's; files and missing paths pass through
    mixed = list(iter_files([tmp_path / "c.webp", tmp_path / "a", tmp_path / "nope"]))
    assert [os.path.basename(p) for p in mixed] == ["c.webp", "10.png", "2.jpg", "nope"]


def test_hash_many_serial_and_parallel_agree(tmp_path: Path, tmp_images: dict[str, Path]) -> None:
    _tree(tmp_path, tmp_images)
    (tmp_path / "a" / "cut.jpg").write_bytes(tmp_images["jpeg"].read_bytes()[:999])
    inputs = [tmp_path, tmp_path / "missing.png"]
    serial = list(hash_many(inputs, workers=1))
    parallel = list(hash_many(inputs, workers=2, chunksize=2))
    assert serial == parallel
    unordered = list(hash_many(inputs, workers=2, chunksize=1, ordered=False))
    assert sorted(unordered, key=lambda r: r.path) == sorted(serial, key=lambda r: r.path)
    by_name = {os.path.basename(r.path): r for r in serial}
    assert len(serial) == 7
    assert by_name["cut.jpg"].error_reason == "truncated"
    assert by_name["z.txt"].error_reason == "not_an_image"
    assert by_name["missing.png"].error_reason == "unreadable"
    assert all(by_name[n].error is None and by_name[n].pdq for n in ("2.jpg", "10.png", "c.webp"))
    # the same picture in three formats lands within PDQ's match threshold
    assert hamming_hex(by_name["2.jpg"].pdq, by_name["10.png"].pdq) <= 31


def test_worker_crash_only_costs_the_guilty_file(
    tmp_path: Path, tmp_images: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decoder that kills its process (as a segfault would) must not stop the batch.

    Fault injection: no real decoder crashes on demand, so decode_for_pdq is patched to exit
    the process on one marked file; the fork context carries the patch into the workers.
    """
    import multiprocessing

    import hashwatch.hashing as hashing

    real = hashing.decode_for_pdq

    def crashing(data: bytes, **kw: object):
        if data.startswith(b"\xff\xd8") and b"CRASH-ME" in data:
            os._exit(70)
        return real(data, **kw)

    monkeypatch.setattr(hashing, "decode_for_pdq", crashing)
    jpeg = tmp_images["jpeg"].read_bytes()
    files = []
    for i in range(12):
        p = tmp_path / f"{i:02d}.jpg"
        p.write_bytes(jpeg + (b"CRASH-ME" if i == 5 else b""))
        files.append(p)
    ctx = multiprocessing.get_context("fork")
    for ordered in (True, False):
        got = list(hash_many(files, workers=2, chunksize=2, ordered=ordered, mp_context=ctx))
        assert sorted(r.path for r in got) == [str(f) for f in files]
        errors = {os.path.basename(r.path): r.error for r in got if r.error}
        assert errors == {"05.jpg": "error: the decoder process crashed on this file"}
        assert all(r.pdq for r in got if r.error is None)


def test_hash_many_chunksize_validation(tmp_images: dict[str, Path]) -> None:
    with pytest.raises(ValueError):
        list(hash_many([tmp_images["png"]], workers=2, chunksize=0))


@pytest.mark.corpus
def test_same_picture_different_files_in_corpus(corpus_dir: Path) -> None:
    """CBSD68 PNGs are pixel-identical to BSDS500 val JPEGs: same PDQ neighbourhood,
    different crypto hashes."""
    pngs = sorted((corpus_dir / "cbsd68-png").glob("*.png"))[:6]
    assert pngs
    jpg_dir = corpus_dir / "bsds500-val"
    pairs = [(p, jpg_dir / (p.stem + ".jpg")) for p in pngs]
    pairs = [(p, j) for p, j in pairs if j.exists()]
    if not pairs:
        pytest.skip("no CBSD68/BSDS500 name pairs in this corpus copy")
    results = list(hash_many([f for pair in pairs for f in pair], workers=2, chunksize=2))
    for png, jpg in zip(results[::2], results[1::2], strict=True):
        assert png.error is None and jpg.error is None
        assert png.sha256 != jpg.sha256
        assert hamming_hex(png.pdq, jpg.pdq) <= 31


def test_extras_see_rgb_and_leave_the_hashes_unchanged(tmp_path: Path) -> None:
    """With an extras function the file is decoded once as RGB; its PDQ must be the very
    hash the luma-only fast path gives."""
    from hashwatch.demo import demo_images

    src = demo_images()[0]  # 768x512: above the RGB size, so the plain path keeps luma only
    seen: list[tuple[int, ...]] = []
    plain = hash_file(src)
    with_extras = hash_file(src, extras=lambda px: seen.append(px.shape) or {"n": 1})
    assert with_extras.extras == {"n": 1} and len(seen) == 1 and seen[0][2] == 3
    assert (with_extras.pdq, with_extras.pdq_quality) == (plain.pdq, plain.pdq_quality)
    assert (with_extras.md5, with_extras.width) == (plain.md5, plain.width)
