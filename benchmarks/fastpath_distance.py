"""How far is the fast-path PDQ (reduced decode) from the full-resolution PDQ?

For each ``max_side`` tried, every image is decoded at full resolution (what threatexchange
hashes; reference PDQ on it is the truth) and reduced with ``decode_image(max_side=N)`` (JPEG
DCT scaling / box reduce). Two estimates are compared with the truth: ``fast`` =
``decode_for_pdq`` + ``pdq_hash_fast`` (exactly what hash_file does) and ``naive`` =
reference PDQ run on the reduced RGB pixels. Two image sets:

* the corpus (../shared/corpus or $HASHWATCH_CORPUS), every image;
* 12-megapixel JPEGs generated here from corpus images (upscaled to 4032x3024, mild noise),
  saved at q80, q90 and q95 in a temporary folder that is deleted afterwards.

Target: mean <= 6 bits and max <= 16 bits where the full-resolution quality >= 80.

    .venv/bin/python benchmarks/fastpath_distance.py [--max-side 256 384 512] [--large 24]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from hashwatch.decode import decode_for_pdq, decode_image
from hashwatch.hashing import iter_files
from hashwatch.signals.pdq import hamming_hex, pdq_hash, pdq_hash_fast

LARGE_SIZE = (4032, 3024)


def find_corpus() -> Path:
    env = os.environ.get("HASHWATCH_CORPUS")
    p = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "corpus"
    if not p.is_dir():
        sys.exit(f"corpus not found at {p} (set HASHWATCH_CORPUS)")
    return p


def corpus_images(corpus: Path, *, include_flowers: bool = True) -> list[str]:
    exts = (".jpg", ".jpeg", ".png")
    out = [f for f in iter_files([corpus]) if f.lower().endswith(exts)]
    if not include_flowers:
        out = [f for f in out if "/flowers128/" not in f]
    return out


def large_sources(corpus: Path, n: int) -> list[str]:
    """n corpus images spread over the larger sets (Kodak, Sun-Hays, BSDS), deterministic."""
    pool: list[str] = []
    for sub in ("kodak24", "sun-hays80", "bsds500-val", "bsds500-train"):
        pool += corpus_images(corpus / sub)
    if n >= len(pool):
        return pool
    idx = np.linspace(0, len(pool) - 1, n).round().astype(int)
    return [pool[i] for i in idx]


def make_large_jpegs(
    sources: Sequence[str],
    out_dir: Path,
    qualities: Iterable[int] = (90,),
    *,
    seed: int = 0,
    noise_sigma: float = 2.0,
) -> list[str]:
    """Upscale each source to 4032x3024 (landscape) + gaussian noise, save as JPEG q..."""
    rng = np.random.default_rng(seed)
    qualities = tuple(qualities)
    out: list[str] = []
    for i, src in enumerate(sources):
        with Image.open(src) as im:
            rgb = im.convert("RGB")
        size = LARGE_SIZE if rgb.width >= rgb.height else LARGE_SIZE[::-1]
        big = np.asarray(rgb.resize(size, Image.Resampling.BICUBIC), dtype=np.float32)
        big += rng.standard_normal(big.shape, dtype=np.float32) * noise_sigma
        img = Image.fromarray(np.clip(big + 0.5, 0, 255).astype(np.uint8))
        for q in qualities:
            p = out_dir / f"large_{i:03d}_q{q}.jpg"
            img.save(p, "JPEG", quality=q)
            out.append(str(p))
    return out


Result = list[tuple[int, int, int]]  # (fast distance, naive distance, full-res quality)


def distances(files: Sequence[str], max_sides: Sequence[int]) -> dict[int, Result]:
    """max_side -> [(fast distance, naive distance, full-res quality)] per file."""
    res: dict[int, Result] = {m: [] for m in max_sides}
    for f in files:
        data = Path(f).read_bytes()
        full_img = decode_image(data, max_side=None)
        full, q = pdq_hash(full_img.pixels)
        for m in max_sides:
            img = decode_for_pdq(data, max_side=m)  # what hash_file does
            fast, _ = pdq_hash_fast(img.pixels, img.height, img.width)
            naive, _ = pdq_hash(decode_image(data, max_side=m).pixels)
            res[m].append((hamming_hex(full, fast), hamming_hex(full, naive), q))
    return res


def row(label: str, m: int, triples: Result) -> str:
    sel = [t for t in triples if t[2] >= 80]
    if not sel:
        return f"| {label} | {m} | 0 | - | - | - | - | - |"
    d = np.array([t[0] for t in sel])
    naive = np.array([t[1] for t in sel])
    return (
        f"| {label} | {m} | {d.size} | {d.mean():.2f} | {np.percentile(d, 95):.0f} | "
        f"{d.max()} | {int((d > 16).sum())} | {naive.mean():.2f} / {naive.max()} |"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-side", type=int, nargs="+", default=[256, 384, 512])
    ap.add_argument("--large", type=int, default=24, help="source images for 12 MP JPEGs")
    ap.add_argument("--qualities", type=int, nargs="+", default=[80, 90, 95])
    ap.add_argument("--no-corpus", action="store_true", help="skip the whole-corpus pass")
    args = ap.parse_args(argv)

    corpus = find_corpus()
    print(
        "| image set | max_side | n (quality>=80) | fast mean bits | p95 | max | >16 bits "
        "| naive mean / max |"
    )
    print("|---|---|---|---|---|---|---|---|")
    t0 = time.perf_counter()
    if not args.no_corpus:
        files = corpus_images(corpus)
        res = distances(files, args.max_side)
        for m in args.max_side:
            print(row(f"corpus, all {len(files)}", m, res[m]), flush=True)
        keep = [("/flowers128/" not in f) for f in files]
        for m in args.max_side:
            sub = [p for k, p in zip(keep, res[m], strict=True) if k]
            print(row(f"corpus without flowers128 ({len(sub)})", m, sub), flush=True)
    with tempfile.TemporaryDirectory(prefix="hw-fastpath-") as tmp:
        srcs = large_sources(corpus, args.large)
        for q in args.qualities:
            large = make_large_jpegs(srcs, Path(tmp), (q,), seed=q)
            res = distances(large, args.max_side)
            for m in args.max_side:
                print(row(f"12 MP JPEG q{q} ({len(large)})", m, res[m]), flush=True)
            for f in large:
                os.unlink(f)
    elapsed = time.perf_counter() - t0
    print(f"\n(elapsed {elapsed:.0f} s; distances only for full-res quality >= 80)")


if __name__ == "__main__":
    main()
