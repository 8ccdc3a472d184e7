"""The benign image corpus: where it is, its files, the seeded known / filler / distractor split,
and decoding an image at the size edits are applied to."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from hashwatch.edits import EDITS

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
LOAD_SIDE = 512  # images are decoded at most this big; edits are applied at this size
# Part of the corpus that is a pixel-identical copy of another part: never used (it would be a
# "distractor" identical to a known image).
SKIP_DIRS = {"cbsd68-png"}

# --- corpus --------------------------------------------------------------------------------

CORPUS_ENV = "HASHWATCH_CORPUS"


class CorpusNotFound(FileNotFoundError):
    """The benign image corpus is not where it was looked for (the message says where)."""


def corpus_candidates(explicit: Path | None = None) -> list[Path]:
    """Where the corpus is looked for, in order: ``explicit`` (``--corpus``), else
    ``$HASHWATCH_CORPUS``, else ``shared/corpus`` beside the current folder or one of its
    parents, then beside the checkout this code runs from (``<checkout>/../shared/corpus``)."""
    if explicit is not None:
        return [Path(explicit)]
    env = os.environ.get(CORPUS_ENV)
    if env:
        return [Path(env)]
    here = Path.cwd().resolve()
    out = [d / "shared" / "corpus" for d in (here, *here.parents)]
    out.append(Path(__file__).resolve().parents[3] / "shared" / "corpus")
    return list(dict.fromkeys(out))


def resolve_corpus(explicit: Path | None = None) -> Path:
    """The corpus folder (see :func:`corpus_candidates`). Raises :class:`CorpusNotFound`
    naming every place looked at and how to point at the corpus."""
    tried = corpus_candidates(explicit)
    for c in tried:
        if c.is_dir():
            return c
    how = ("--corpus PATH" if explicit is not None else
           f"--corpus PATH or ${CORPUS_ENV}=PATH")
    raise CorpusNotFound(
        "benign image corpus not found (looked at: " + ", ".join(str(c) for c in tried[:4])
        + (", ..." if len(tried) > 4 else "") + f"); give its folder with {how}")


def corpus_files(corpus: Path) -> list[Path]:
    """Image files of the corpus, minus known duplicate folders and byte-identical files."""
    seen: set[str] = set()
    out: list[Path] = []
    for p in sorted(corpus.rglob("*")):
        if p.suffix.lower() not in IMAGE_EXT or not p.is_file():
            continue
        if any(part in SKIP_DIRS for part in p.relative_to(corpus).parts):
            continue
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        out.append(p)
    return out


def split_known(files: Sequence[Path], n_known: int, seed: int) -> tuple[list[Path], list[Path]]:
    """Seeded split: half the known set from the larger photo sets, half from the small flower
    photos (the corpus is 90% flowers; a plain sample would be almost only 128x128 images)."""
    rng = np.random.default_rng(seed)
    big = [p for p in files if "flowers" not in str(p)]
    small = [p for p in files if "flowers" in str(p)]
    nb = min(len(big), n_known // 2)
    ns = min(len(small), n_known - nb)
    kb = set(rng.choice(len(big), nb, replace=False).tolist()) if nb else set()
    ks = set(rng.choice(len(small), ns, replace=False).tolist()) if ns else set()
    known = [p for i, p in enumerate(big) if i in kb] + [p for i, p in enumerate(small) if i in ks]
    kset = set(known)
    return known, [p for p in files if p not in kset]


# `hashwatch eval --quick`: a small known set, one or two edits per family, few distractors
# (~1,300 queries instead of ~25,000 for the full run with every edit; recall per edit is coarse,
# +-5 points at 40 known images, and the false-match tail is too thin to extrapolate).
QUICK_KNOWN = 40
QUICK_DISTRACTORS = 300
QUICK_EDITS: tuple[str, ...] = (
    "jpeg30", "blur2", "noise0.2", "crop10c", "crop50c", "crop20o", "trim20side", "mirror",
    "rot90", "rotate5", "border-white10", "letterbox9:16", "caption-bar", "screenshot-dark",
    "side-by-side", "collage4", "grey", "resize0.25", "aspect1.3w", "png",
    "mirror+crop", "stretch1.5+crop10", "perspective12", "grid3x3", "pip45-photo",
    "mirror+pip45-photo",
)


def quick_edits() -> list[str]:
    """The quick mode's edits that this version of :mod:`hashwatch.edits` has."""
    return [e for e in QUICK_EDITS if e in EDITS]


FILLER_POOL = 64  # photographs reserved for combined edits (not known, not distractors)


def split_fillers(rest: Sequence[Path], seed: int, n: int = FILLER_POOL
                  ) -> tuple[list[Path], list[Path]]:
    """(fillers, distractors): a seeded sample of ``n`` of the larger photographs (BSDS500,
    Kodak, Sun-Hays: big enough to fill a background) among the non-known files, and all the
    other non-known files. Independent of the edits run, so distractor counts stay comparable."""
    big = [p for p in rest if "flowers" not in str(p)]
    rng = np.random.default_rng([seed, 0xF111])
    pick = set(rng.choice(len(big), min(n, len(big)), replace=False).tolist()) if big else set()
    fillers = [p for i, p in enumerate(big) if i in pick]
    fset = set(fillers)
    return fillers, [p for p in rest if p not in fset]


def split_eval(files: Sequence[Path], n_known: int, seed: int,
               max_distractors: int | None = None) -> tuple[list[Path], list[Path], list[Path]]:
    """(known, fillers, distractors) as ``hashwatch eval`` splits the corpus ``files``:
    :func:`split_known`, :func:`split_fillers`, then a seeded sample of at most
    ``max_distractors`` distractors in corpus order (None: all of them). Benchmarks that
    reproduce the eval's queries split with this too."""
    known, rest = split_known(files, n_known, seed)
    fillers, distractors = split_fillers(rest, seed)
    if max_distractors is not None:
        rng = np.random.default_rng(seed + 1)
        keep = sorted(rng.choice(len(distractors), min(max_distractors, len(distractors)),
                                 replace=False).tolist())
        distractors = [distractors[i] for i in keep]
    return known, fillers, distractors


def load_pixels(path: Path, max_side: int = LOAD_SIDE) -> np.ndarray:
    try:
        from hashwatch.decode import decode_image

        return decode_image(path, max_side=max_side).pixels
    except ImportError:  # pragma: no cover - decode module is optional here
        im = Image.open(path).convert("RGB")
        im.thumbnail((max_side, max_side))
        return np.asarray(im)
