"""A generated scale set of known images, for measuring the matcher at list sizes the corpus
cannot reach (the scale study of ``benchmarks/scale_study.py``).

Every scale image is generated from benign material only: photographs of a *source* part of
the corpus that is disjoint from the evaluation's known images and from its distractor queries
(:func:`study_split`), augmented and composed with procedural content (:func:`scale_image`).
Images are never written to disk: each one is made, hashed and described (the PDQ views and
the ORB keypoints the list would hold for it) and only those features are kept, in shards of
:data:`SHARD_SIZE` images (:func:`generate`, resumable: finished shards are kept).

Image ``i`` of seed ``s`` is a pure function of ``(s, i)`` and the source files, so any shard
can be re-made and checked. Kinds (by ``i``'s random draw): an augmented photograph (crop,
scale, turn, flip, colour, blur/noise, JPEG), a collage of several photographs, photographs
pasted on a procedural background, and a procedural picture (shapes, gradients, text) with at
most one small photograph in it.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

SHARD_SIZE = 5000
SOURCE_SIDE = 640  # source photographs are loaded at most this big
MAX_SIDE = 512  # scale images are at most this big (the evaluation loads known images at 512)


# --- the split -------------------------------------------------------------------------------


def study_split(files: Sequence[Path], n_known: int, seed: int
                ) -> tuple[list[Path], list[Path], list[Path]]:
    """(known, distractors, sources): the evaluation's known set and filler pool exactly as
    :func:`hashwatch.evaluate.split_known` and :func:`~hashwatch.evaluate.split_fillers` draw
    them, then the evaluation's distractors split in two halves by a seeded draw, separately
    for the large photographs and the small flower photographs (so both halves hold both
    kinds). Scale images are made from ``sources`` only; ``distractors`` are the unmatched
    queries. Known, fillers, distractors and sources are disjoint."""
    from hashwatch.evaluate import split_fillers, split_known

    known, rest = split_known(files, n_known, seed)
    _, rest = split_fillers(rest, seed)
    rng = np.random.default_rng([seed, 0x5CA1E])
    dist: list[Path] = []
    src: list[Path] = []
    for group in ([p for p in rest if "flowers" not in str(p)],
                  [p for p in rest if "flowers" in str(p)]):
        pick = np.zeros(len(group), bool)
        pick[rng.permutation(len(group))[: len(group) // 2]] = True
        src += [p for p, s in zip(group, pick, strict=True) if s]
        dist += [p for p, s in zip(group, pick, strict=True) if not s]
    return known, sorted(dist), sorted(src)


def duplicate_distractors(distractors: Sequence[Path], sources: Sequence[Path],
                          max_distance: int = 40) -> list[int]:
    """Indices of the distractors whose photograph is also among the sources under another
    file name: whole-photograph PDQ within ``max_distance`` bits of a source's. The corpus has
    such pairs (flowers128: the same Flickr photograph at two sizes, re-uploads and burst
    shots a few bits apart) and :func:`study_split` draws them independently, so a scale image
    made from that source shows the distractor's picture: its match is a true copy, not a
    false match. The study reports these distractors' matches apart."""
    from hashwatch.evaluate import load_pixels
    from hashwatch.robust._pixels import _POPCOUNT, _pdq

    def pdq(p: Path) -> np.ndarray:
        return np.frombuffer(_pdq(load_pixels(p))[0], np.uint8)

    src = np.stack([pdq(p) for p in sources])
    out = []
    for i, p in enumerate(distractors):
        d = _POPCOUNT[np.bitwise_xor(src, pdq(p))].sum(1)
        if int(d.min()) <= max_distance:
            out.append(i)
    return out


# --- image generation --------------------------------------------------------------------------


def _resize(p: np.ndarray, w: int, h: int) -> np.ndarray:
    w, h = max(8, int(w)), max(8, int(h))
    inter = cv2.INTER_AREA if w * h < p.shape[0] * p.shape[1] else cv2.INTER_CUBIC
    return cv2.resize(p, (w, h), interpolation=inter)


def _crop(rng: np.random.Generator, p: np.ndarray, lo: float = 0.35) -> np.ndarray:
    h, w = p.shape[:2]
    fy, fx = rng.uniform(lo, 1.0), rng.uniform(lo, 1.0)
    ch, cw = max(16, int(h * fy)), max(16, int(w * fx))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return p[y:y + ch, x:x + cw]


def _colour(rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    if rng.random() < 0.5:  # brightness / contrast (saturating uint8 arithmetic)
        a = rng.uniform(0.7, 1.4)
        p = cv2.addWeighted(p, a, p, 0.0, 128.0 * (1 - a) + rng.uniform(-30, 30))
    if rng.random() < 0.4:  # saturation
        hsv = cv2.cvtColor(p, cv2.COLOR_RGB2HSV)
        lut = np.clip(np.arange(256) * rng.uniform(0.0, 1.6), 0, 255).astype(np.uint8)
        hsv[..., 1] = cv2.LUT(hsv[..., 1], lut)
        p = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if rng.random() < 0.3:  # colour cast
        p = cv2.multiply(p, np.array([*rng.uniform(0.8, 1.2, 3), 0.0]))
    if rng.random() < 0.3:  # gamma
        lut = (255.0 * (np.arange(256) / 255.0) ** rng.uniform(0.6, 1.6)).astype(np.uint8)
        p = cv2.LUT(p, lut)
    return np.ascontiguousarray(p)


def _degrade(rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    r = rng.random()
    if r < 0.2:
        k = int(rng.choice([3, 5]))
        p = cv2.GaussianBlur(p, (k, k), 0)
    elif r < 0.35:
        p = np.clip(p + rng.normal(0, rng.uniform(3, 12), p.shape), 0, 255).astype(np.uint8)
    elif r < 0.45:
        blur = cv2.GaussianBlur(p, (0, 0), 2.0)
        p = cv2.addWeighted(p, 1.6, blur, -0.6, 0)
    if rng.random() < 0.7:
        ok, buf = cv2.imencode(".jpg", p[..., ::-1],
                               [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(35, 96))])
        if ok:
            p = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return np.ascontiguousarray(p)


def _turn(rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    if rng.random() < 0.5:
        p = p[:, ::-1]
    if rng.random() < 0.15:
        p = np.rot90(p, int(rng.integers(1, 4)))
    if rng.random() < 0.25:
        h, w = p.shape[:2]
        a = rng.uniform(-20, 20)
        m = cv2.getRotationMatrix2D((w / 2, h / 2), a, 1.0)
        p = cv2.warpAffine(np.ascontiguousarray(p), m, (w, h), borderMode=cv2.BORDER_REFLECT101)
    if rng.random() < 0.15:  # mild perspective
        h, w = p.shape[:2]
        d = rng.uniform(0, 0.08, size=(4, 2)) * [w, h]
        src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
        dst = np.float32(src + d * [[1, 1], [-1, 1], [-1, -1], [1, -1]])
        p = cv2.warpPerspective(np.ascontiguousarray(p), cv2.getPerspectiveTransform(src, dst),
                                (w, h), borderMode=cv2.BORDER_REFLECT101)
    return np.ascontiguousarray(p)


def _procedural(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Gradients, smooth noise, shapes, lines and text: a picture no photograph contains."""
    base = np.zeros((h, w, 3), np.float32)
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, w if rng.random() < 0.5 else h, dtype=np.float32)
    ramp = (c0 + (c1 - c0) * t[:, None]).astype(np.float32)
    base[:] = ramp[None, :, :] if len(t) == w else ramp[:, None, :]
    if rng.random() < 0.6:  # smooth noise at a random scale
        s = int(rng.integers(4, 32))
        n = rng.normal(0, 1, (max(2, h // s), max(2, w // s), 3)).astype(np.float32)
        base += cv2.resize(n, (w, h), interpolation=cv2.INTER_CUBIC) * rng.uniform(10, 60)
    im = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(3, 25))):
        col = tuple(int(v) for v in rng.integers(0, 256, 3))
        x0, y0 = int(rng.integers(-w // 4, w)), int(rng.integers(-h // 4, h))
        x1, y1 = x0 + int(rng.integers(8, w // 2 + 9)), y0 + int(rng.integers(8, h // 2 + 9))
        k = rng.random()
        if k < 0.35:
            d.ellipse((x0, y0, x1, y1), fill=col)
        elif k < 0.65:
            d.rectangle((x0, y0, x1, y1), fill=col)
        elif k < 0.85:
            pts = [(int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(3 + int(
                rng.integers(0, 4)))]
            d.polygon(pts, fill=col)
        else:
            d.line((x0, y0, x1, y1), fill=col, width=int(rng.integers(1, 8)))
    if rng.random() < 0.5:
        font = ImageFont.load_default(size=int(rng.integers(10, max(11, h // 6))))
        words = "".join(chr(int(c)) for c in rng.integers(97, 123, int(rng.integers(3, 14))))
        d.text((int(rng.integers(0, w // 2)), int(rng.integers(0, h - 10))), words,
               fill=tuple(int(v) for v in rng.integers(0, 256, 3)), font=font)
    return np.asarray(im, np.uint8).copy()


def _size(rng: np.random.Generator) -> tuple[int, int]:
    long = int(rng.integers(240, MAX_SIDE + 1))
    ratio = float(rng.choice([1.0, 4 / 3, 3 / 2, 16 / 9, 1.25]))
    w, h = long, int(long / ratio)
    return (w, h) if rng.random() < 0.7 else (h, w)


def _fit(rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    """Rescale a photograph by 0.6-1.6x, its longer side kept within 96-MAX_SIDE px (a 128-px
    flower photo stays a small picture instead of a blurred 500-px enlargement)."""
    h, w = p.shape[:2]
    s = float(np.clip(rng.uniform(0.6, 1.6) * max(h, w), 96, MAX_SIDE)) / max(h, w)
    return _resize(p, w * s, h * s)


_POOLS: dict[int, tuple[list[int], list[int]]] = {}


def _pools(sources: Sequence[np.ndarray]) -> tuple[list[int], list[int]]:
    """Indices of the large (> 200 px) and the small source photographs (cached per list)."""
    key = id(sources)
    if key not in _POOLS:
        big = [i for i, s in enumerate(sources) if max(s.shape[:2]) > 200]
        small = [i for i, s in enumerate(sources) if max(s.shape[:2]) <= 200]
        _POOLS.clear()
        _POOLS[key] = (big or small, small or big)
    return _POOLS[key]


def scale_image(index: int, sources: Sequence[np.ndarray], seed: int = 0) -> np.ndarray:
    """Scale image ``index``: (h, w, 3) uint8 RGB, a pure function of (seed, index, sources).

    Sources are drawn half from the large photographs and half from the small ones (as the
    evaluation's known set is). Raises ValueError when ``sources`` is empty."""
    if not sources:
        raise ValueError("no source photographs")
    rng = np.random.default_rng([seed, index, 0x5CA1E])
    big, small = _pools(sources)

    def photo(lo: float = 0.35) -> np.ndarray:
        pool = big if rng.random() < 0.5 else small
        return _crop(rng, sources[pool[int(rng.integers(0, len(pool)))]], lo)

    kind = rng.random()
    if kind < 0.45:  # one augmented photograph
        p = _fit(rng, _turn(rng, photo()))
    elif kind < 0.65:  # collage of 2-9 photographs
        w, h = _size(rng)
        gy, gx = [(1, 2), (2, 1), (2, 2), (3, 3), (2, 3)][int(rng.integers(0, 5))]
        gut = int(rng.integers(0, 10))
        cw, ch = max(24, (w - gut * (gx + 1)) // gx), max(24, (h - gut * (gy + 1)) // gy)
        p = np.full((gy * ch + gut * (gy + 1), gx * cw + gut * (gx + 1), 3),
                    rng.integers(0, 256, 3), np.uint8)
        for yy in range(gy):
            for xx in range(gx):
                y0, x0 = gut + yy * (ch + gut), gut + xx * (cw + gut)
                p[y0:y0 + ch, x0:x0 + cw] = _resize(_turn(rng, photo(0.5)), cw, ch)
    elif kind < 0.85:  # photographs pasted on a procedural background
        w, h = _size(rng)
        p = _procedural(rng, w, h)
        for _ in range(int(rng.integers(1, 4))):
            q = _turn(rng, photo(0.4))
            s = rng.uniform(0.25, 0.7) * min(w / q.shape[1], h / q.shape[0])
            q = _resize(q, q.shape[1] * s, q.shape[0] * s)
            qh, qw = q.shape[:2]
            y = int(rng.integers(0, max(1, h - qh + 1)))
            x = int(rng.integers(0, max(1, w - qw + 1)))
            p[y:y + qh, x:x + qw] = q[: h - y, : w - x]
    else:  # procedural, at most one small photograph
        w, h = _size(rng)
        p = _procedural(rng, w, h)
        if rng.random() < 0.5:
            q = _resize(photo(0.5), w * rng.uniform(0.15, 0.35), h * rng.uniform(0.15, 0.35))
            qh, qw = q.shape[:2]
            y, x = int(rng.integers(0, h - qh + 1)), int(rng.integers(0, w - qw + 1))
            p[y:y + qh, x:x + qw] = q
    return _degrade(rng, _colour(rng, np.ascontiguousarray(p)))


def load_sources(paths: Sequence[Path], side: int = SOURCE_SIDE) -> list[np.ndarray]:
    """Source photographs as RGB arrays, at most ``side`` px on the longer side."""
    from hashwatch.evaluate import load_pixels

    return [load_pixels(p, side) for p in paths]


# --- features of a scale image, in shards ------------------------------------------------------

VARIANTS = ("full", "trim", "crop90", "crop80", "crop70", "crop60", "crop50")
MAX_VIEWS = len(VARIANTS)


@dataclass
class Shard:
    """Features of up to SHARD_SIZE scale images, as the list would hold them.

    ``pdq`` (n, MAX_VIEWS, 32) uint8 and ``pdq_quality`` (n, MAX_VIEWS) int16 (-1: no such
    view) indexed by :data:`VARIANTS`; keypoints of image j are rows ``kp_off[j]:kp_off[j+1]``
    of ``kp_xy`` (float32 px at the image's working size ``size[j]`` (w, h)), ``kp_desc`` (32 B
    ORB), ``kp_angle`` (uint8, 256 steps per turn), ``kp_octave`` (uint8)."""

    index: np.ndarray
    pdq: np.ndarray
    pdq_quality: np.ndarray
    size: np.ndarray
    kp_off: np.ndarray
    kp_xy: np.ndarray
    kp_desc: np.ndarray
    kp_angle: np.ndarray
    kp_octave: np.ndarray

    def __len__(self) -> int:
        return len(self.index)

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp.npz")
        with open(tmp, "wb") as fh:
            np.savez(fh, **{k: getattr(self, k) for k in self.__dataclass_fields__})
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Shard:
        with np.load(path) as z:
            return cls(**{k: z[k] for k in cls.__dataclass_fields__})

    def local(self, j: int):  # -> robust.LocalFeatures
        from hashwatch.robust import LocalFeatures

        a, b = int(self.kp_off[j]), int(self.kp_off[j + 1])
        return LocalFeatures(self.kp_xy[a:b], self.kp_desc[a:b],
                             (int(self.size[j, 0]), int(self.size[j, 1])),
                             angle=self.kp_angle[a:b], octave=self.kp_octave[a:b])

    def hashes(self, j: int) -> list:  # -> list[robust.KnownHash]
        from hashwatch.robust import KnownHash

        return [KnownHash(v, self.pdq[j, k].tobytes(), int(self.pdq_quality[j, k]))
                for k, v in enumerate(VARIANTS) if self.pdq_quality[j, k] >= 0]


def describe(pixels: np.ndarray) -> tuple[list, object]:
    """(known PDQ views, known local features) of one picture, as ``lists add`` stores them."""
    from hashwatch.robust import known_local, known_signals

    return known_signals(pixels), known_local(pixels)


def _make_shard(args: tuple[int, int, int, list[np.ndarray] | None]) -> Shard:
    shard_no, n, seed, _ = args
    sources = _WORKER_SOURCES
    idx = np.arange(shard_no * SHARD_SIZE, shard_no * SHARD_SIZE + n, dtype=np.int64)
    pdq = np.zeros((n, MAX_VIEWS, 32), np.uint8)
    qual = np.full((n, MAX_VIEWS), -1, np.int16)
    size = np.zeros((n, 2), np.uint16)
    off = [0]
    xy, desc, ang, octv = [], [], [], []
    for j, i in enumerate(idx):
        views, loc = describe(scale_image(int(i), sources, seed))
        for v in views:
            k = VARIANTS.index(v.variant)
            pdq[j, k] = np.frombuffer(v.code, np.uint8)
            qual[j, k] = v.quality
        size[j] = loc.size
        xy.append(loc.xy)
        desc.append(loc.desc)
        ang.append(loc.angle)
        octv.append(loc.octave)
        off.append(off[-1] + len(loc.desc))
    return Shard(idx, pdq, qual, size, np.array(off, np.int64),
                 np.concatenate(xy).astype(np.float32), np.concatenate(desc),
                 np.concatenate(ang).astype(np.uint8), np.concatenate(octv).astype(np.uint8))


_WORKER_SOURCES: list[np.ndarray] = []


def _init_worker(paths: list[Path]) -> None:
    global _WORKER_SOURCES
    cv2.setNumThreads(1)
    _WORKER_SOURCES = load_sources(paths)


def shard_path(out: Path, shard_no: int) -> Path:
    return out / f"shard-{shard_no:05d}.npz"


def _claim(out: Path, shard_no: int) -> bool:
    """Take shard ``shard_no`` for this process (a ``.claim`` file holding the pid; a claim
    whose process is gone is taken over), so several generators can share one folder."""
    if shard_path(out, shard_no).exists():
        return False
    claim = out / f"shard-{shard_no:05d}.claim"
    for _ in range(2):
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            try:
                pid = int(claim.read_text() or "0")
                os.kill(pid, 0)
                return False  # alive: someone else's
            except (ProcessLookupError, ValueError):
                claim.unlink(missing_ok=True)  # stale
                continue
            except PermissionError:
                return False
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        return True
    return False


def _make_claimed(args: tuple[Path, int, int, int]) -> int:
    out, shard_no, n, seed = args
    if not _claim(out, shard_no):
        return -1
    try:
        _make_shard((shard_no, n, seed, None)).save(shard_path(out, shard_no))
    finally:
        (out / f"shard-{shard_no:05d}.claim").unlink(missing_ok=True)
    return shard_no


def generate(out: Path, n_images: int, sources: Sequence[Path], *, seed: int = 0,
             workers: int = 1, progress: Callable[[int, int], None] | None = None) -> list[Path]:
    """Make the features of scale images 0..n_images-1 into ``out`` (shards of SHARD_SIZE),
    skipping shards already there (resumable; a shard is written whole or not at all; several
    generators may run on one folder at once, each shard is claimed by one). Returns the shard
    paths in order. Raises ValueError when ``sources`` is empty."""
    if not sources:
        raise ValueError("no source photographs")
    out.mkdir(parents=True, exist_ok=True)
    n_shards = (n_images + SHARD_SIZE - 1) // SHARD_SIZE
    todo = [s for s in range(n_shards) if not shard_path(out, s).exists()]
    done = n_shards - len(todo)
    if progress:
        progress(done, n_shards)
    jobs = [(out, s, min(SHARD_SIZE, n_images - s * SHARD_SIZE), seed) for s in todo]
    if jobs:
        import multiprocessing

        ctx = multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn")
        with ctx.Pool(workers, initializer=_init_worker, initargs=(list(sources),)) as pool:
            for _ in pool.imap_unordered(_make_claimed, jobs):
                done = sum(shard_path(out, s).exists() for s in range(n_shards))
                if progress:
                    progress(done, n_shards)
    missing = [s for s in range(n_shards) if not shard_path(out, s).exists()]
    if missing:
        raise RuntimeError(f"{len(missing)} shard(s) still being made by another generator "
                           f"(first: {missing[0]}); run again when it has finished")
    return [shard_path(out, s) for s in range(n_shards)]


def iter_shards(out: Path, n_images: int) -> Iterator[Shard]:
    """The shards holding scale images 0..n_images-1, in order (the last one cut short)."""
    left = n_images
    s = 0
    while left > 0:
        sh = Shard.load(shard_path(out, s))
        if len(sh) > left:
            sh = _head(sh, left)
        yield sh
        left -= len(sh)
        s += 1


def _head(sh: Shard, n: int) -> Shard:
    m = int(sh.kp_off[n])
    return Shard(sh.index[:n], sh.pdq[:n], sh.pdq_quality[:n], sh.size[:n], sh.kp_off[: n + 1],
                 sh.kp_xy[:m], sh.kp_desc[:m], sh.kp_angle[:m], sh.kp_octave[:m])


def encode_png(p: np.ndarray) -> bytes:
    """PNG bytes of a scale image (for looking at a few of them; the study never stores them)."""
    buf = io.BytesIO()
    Image.fromarray(p).save(buf, format="PNG")
    return buf.getvalue()


def _now() -> float:
    return time.perf_counter()
