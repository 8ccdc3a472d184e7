"""Which PDQ views of the hash tier cover most per index byte? (issue 10, partner mode)

A partner who receives only the exported hashes matches with the hash tier alone. Every stored
(known-side) view costs one index entry per known image; every query-side view costs one
index probe per query and no bytes. This study computes a wide set of *candidate* views on both
sides, measures for every query of the edit suite which (query view, known view) pairs of its
own known image are within PDQ 31 (both qualities >= 50), and for every distractor query and
every wrong known image how close each pair comes, then chooses views greedily: known views by
recall gained per stored hash, query views by recall gained per probe, under a mean budget of
stored hashes per known image.

    # 1. candidate hashes (one process, resumable per part; ~1 CPU-hour at 200 known)
    .venv/bin/python benchmarks/view_study.py hashes --known 200 --seed 1 --out DIR
    # 2. distances + greedy choice under the byte budget, report
    .venv/bin/python benchmarks/view_study.py select --data DIR --budget 6.18

Selection runs on a known set drawn with ``--seed 1`` (other images, other edit draws); the
chosen views are then measured on the standard suite (seed 0) by ``hashwatch eval``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from hashwatch.edits import edit_names  # noqa: E402
from hashwatch.evaluate import (  # noqa: E402
    corpus_files,
    load_pixels,
    make_query,
    resolve_corpus,
    split_eval,
)
from hashwatch.robust._pixels import _DIHEDRAL, _check, _pdq, _pdq_dihedral, _work  # noqa: E402
from hashwatch.robust.regions import query_regions  # noqa: E402
from hashwatch.robust.trim import trim_box  # noqa: E402

cv2.setNumThreads(1)
MIN_Q = 50
THR = 31

# --- candidate views -----------------------------------------------------------------------

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of the core picture


def _win(p: np.ndarray, box: Box) -> np.ndarray:
    h, w = p.shape[:2]
    x0, y0, x1, y1 = box
    a, b = round(y0 * h), max(round(y0 * h) + 8, round(y1 * h))
    c, d = round(x0 * w), max(round(x0 * w) + 8, round(x1 * w))
    return p[a:min(b, h), c:min(d, w)]


def _aspect_box(h: int, w: int, aspect: float, scale: float = 1.0) -> Box:
    """Largest centred window of the given aspect (w/h), times scale."""
    if w / h > aspect:  # too wide: keep the height
        fw, fh = aspect * h / w, 1.0
    else:
        fw, fh = 1.0, w / aspect / h
    fw, fh = fw * scale, fh * scale
    return (0.5 - fw / 2, 0.5 - fh / 2, 0.5 + fw / 2, 0.5 + fh / 2)


def _inner_scale(h: int, w: int, deg: float) -> float:
    """Largest centred aspect-kept scale inside the frame turned by ``deg`` (the part of a
    picture rotated on its own canvas that survives rotating back)."""
    t = math.radians(abs(deg))
    c, s = math.cos(t), math.sin(t)
    return min(w / (w * c + h * s), h / (w * s + h * c))


def _rot(p: np.ndarray, deg: float, expand: bool = False) -> np.ndarray:
    h, w = p.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), deg, 1.0)
    if expand:
        c, s = abs(m[0, 0]), abs(m[0, 1])
        nw, nh = int(h * s + w * c + 0.5), int(h * c + w * s + 0.5)
        m[0, 2] += nw / 2 - w / 2
        m[1, 2] += nh / 2 - h / 2
        w, h = nw, nh
    return cv2.warpAffine(p, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def _core(p: np.ndarray, frac: float = 1.0) -> np.ndarray:
    h, w = p.shape[:2]
    y0, y1, x0, x1 = trim_box(p)
    if (y1 - y0) * (x1 - x0) < frac * h * w:
        return p[y0:y1, x0:x1]
    return p


KNOWN_CROPS = (0.97, 0.95, 0.93, 0.9, 0.87, 0.85, 0.82, 0.8, 0.77, 0.75, 0.72, 0.7, 0.67, 0.65,
               0.62, 0.6, 0.57, 0.55, 0.52, 0.5, 0.45, 0.4)
SIDE_KEEP = (0.95, 0.9, 0.85, 0.8, 0.75)
CORNER_KEEP = (0.95, 0.9, 0.85, 0.8)
ASPECTS = {"sq": 1.0, "a45": 0.8, "a54": 1.25, "a916": 9 / 16, "a169": 16 / 9, "a34": 0.75,
           "a43": 4 / 3}


def known_boxes() -> dict[str, Box | None]:
    """name -> window of the core picture (None: computed specially)."""
    out: dict[str, Box | None] = {}
    for s in KNOWN_CROPS:
        m = (1 - s) / 2
        out[f"c{round(s * 100)}"] = (m, m, 1 - m, 1 - m)
    for f in SIDE_KEEP:
        k = round(f * 100)
        out[f"st{k}"] = (0, 0, 1, f)
        out[f"sb{k}"] = (0, 1 - f, 1, 1)
        out[f"sl{k}"] = (0, 0, f, 1)
        out[f"sr{k}"] = (1 - f, 0, 1, 1)
    for f in CORNER_KEEP:
        k = round(f * 100)
        out[f"ktl{k}"] = (0, 0, f, f)
        out[f"ktr{k}"] = (1 - f, 0, 1, f)
        out[f"kbl{k}"] = (0, 1 - f, f, 1)
        out[f"kbr{k}"] = (1 - f, 1 - f, 1, 1)
    # off-centre windows: 85% and 75% of each side, shifted by 7.5% / 12.5% to one side
    for f in (0.9, 0.85, 0.8):
        k = round(f * 100)
        m = (1 - f) / 2
        for tag, dx, dy in (("n", 0, -1), ("s", 0, 1), ("w", -1, 0), ("e", 1, 0)):
            x0 = m + dx * m
            y0 = m + dy * m
            out[f"o{tag}{k}"] = (x0, y0, x0 + f, y0 + f)
    for name in ASPECTS:
        out[name] = None
        out[name + "_90"] = None
        out[name + "_80"] = None
    for a in (-6, -3, 3, 6):
        out[f"kr{a:+d}"] = None
    return out


KNOWN_NAMES = ["full", "trim", *known_boxes()]


def known_candidates(pixels: np.ndarray) -> dict[str, tuple[bytes, int]]:
    code, q = _pdq(_check(pixels))
    out = {"full": (code, q)}
    p = _work(pixels)
    core = _core(p, 1.0)
    if core is not p:
        out["trim"] = _pdq(core)
    h, w = core.shape[:2]
    for name, box in known_boxes().items():
        if box is not None:
            out[name] = _pdq(_win(core, box))
        elif name.startswith("kr"):
            a = float(name[2:])
            s = _inner_scale(h, w, a)
            r = _rot(core, a)
            m = (1 - s) / 2 + 0.005
            out[name] = _pdq(_win(r, (m, m, 1 - m, 1 - m)))
        else:
            base, _, sc = name.partition("_")
            scale = int(sc) / 100 if sc else 1.0
            out[name] = _pdq(_win(core, _aspect_box(h, w, ASPECTS[base], scale)))
    return out


QUERY_CROPS = (0.97, 0.95, 0.93, 0.9, 0.87, 0.85, 0.82, 0.8)
DEROT = (-7, -5.5, -4.5, -3.5, -2.5, -1.5, 1.5, 2.5, 3.5, 4.5, 5.5, 7)
DEROT_OLD = (-4.0, -2.0, 2.0, 4.0)
DEROT_CROPS = (0.95, 0.9, 0.85, 0.8, 0.75)


def query_names() -> list[str]:
    names = ["full", *("full" + d for d in _DIHEDRAL[1:]), *("trim" + d for d in _DIHEDRAL)]
    names += [f"region{i}" for i in range(6)]
    names += [f"derot{a:+g}" for a in DEROT_OLD]
    names += [f"qc{round(r * 100)}" for r in QUERY_CROPS]
    names += [f"dr{a:+g}c{round(s * 100)}" for a in DEROT for s in DEROT_CROPS]
    names += [f"drx{a:+g}" for a in (-7, -5, -3, 3, 5, 7)]
    names += [f"rsq{i}" for i in range(6)]
    names += ["qsq", "qa45", "qa54"]
    return names


QUERY_NAMES = query_names()


def query_candidates(pixels: np.ndarray) -> dict[str, tuple[bytes, int]]:
    codes, q = _pdq_dihedral(_check(pixels))
    out = {"full": (codes[0], q)}
    for i in range(1, 8):
        out["full" + _DIHEDRAL[i]] = (codes[i], q)
    p = _work(pixels)
    h, w = p.shape[:2]
    y0, y1, x0, x1 = trim_box(p)
    core = p
    if (y1 - y0) * (x1 - x0) < 0.98 * h * w:
        core = p[y0:y1, x0:x1]
        tc, tq = _pdq_dihedral(core)
        for i in range(8):
            out["trim" + _DIHEDRAL[i]] = (tc[i], tq)
    boxes = query_regions(pixels)
    for i, (ry0, ry1, rx0, rx1) in enumerate(boxes[:6]):
        rp = _work(pixels[ry0:ry1, rx0:rx1])
        out[f"region{i}"] = _pdq(rp)
        rh, rw = rp.shape[:2]
        out[f"rsq{i}"] = _pdq(_win(rp, _aspect_box(rh, rw, 1.0)))
    for a in DEROT_OLD:
        out[f"derot{a:+g}"] = _pdq(_rot(core, a))
    for r in QUERY_CROPS:
        m = (1 - r) / 2
        out[f"qc{round(r * 100)}"] = _pdq(_win(core, (m, m, 1 - m, 1 - m)))
    ch, cw = core.shape[:2]
    for a in DEROT:
        rc = _rot(core, a)
        inner = _inner_scale(ch, cw, a)
        for s in DEROT_CROPS:
            if s > inner + 0.01:
                continue
            m = (1 - s) / 2
            out[f"dr{a:+g}c{round(s * 100)}"] = _pdq(_win(rc, (m, m, 1 - m, 1 - m)))
    for a in (-7, -5, -3, 3, 5, 7):
        rx = _rot(core, a, expand=True)
        ty0, ty1, tx0, tx1 = trim_box(rx)
        out[f"drx{a:+g}"] = _pdq(rx[ty0:ty1, tx0:tx1])
    out["qsq"] = _pdq(_win(core, _aspect_box(ch, cw, 1.0)))
    out["qa45"] = _pdq(_win(core, _aspect_box(ch, cw, 0.8)))
    out["qa54"] = _pdq(_win(core, _aspect_box(ch, cw, 1.25)))
    return out


def _pack(d: dict[str, tuple[bytes, int]], names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    codes = np.zeros((len(names), 32), np.uint8)
    qual = np.full(len(names), -1, np.int16)
    for i, n in enumerate(names):
        if n in d:
            codes[i] = np.frombuffer(d[n][0], np.uint8)
            qual[i] = d[n][1]
    return codes, qual


# --- edits drawn from continuous ranges (held-out check against fitting the suite's exact
# parameters: the suite has crops at 10/20/..% and rotations of 2/4/5 degrees) --------------


def _x_edit(name: str, p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = p.shape[:2]
    if name == "x-crop-centre":  # 5-80% of the surface removed, centred
        s = math.sqrt(1 - rng.uniform(0.05, 0.8))
        ch, cw = max(8, round(h * s)), max(8, round(w * s))
        y, x = (h - ch) // 2, (w - cw) // 2
        return p[y:y + ch, x:x + cw].copy()
    if name == "x-crop-offset":  # 3-30% removed, anywhere
        s = math.sqrt(1 - rng.uniform(0.03, 0.3))
        ch, cw = max(8, round(h * s)), max(8, round(w * s))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        return p[y:y + ch, x:x + cw].copy()
    if name == "x-trim-side":  # 5-25% off one side
        f = rng.uniform(0.05, 0.25)
        dy, dx = round(h * f), round(w * f)
        return [p[dy:], p[:h - dy], p[:, dx:], p[:, :w - dx]][int(rng.integers(0, 4))].copy()
    if name == "x-trim-two":  # 3-15% off two adjacent sides
        fy, fx = rng.uniform(0.03, 0.15, 2)
        dy, dx = round(h * fy), round(w * fx)
        c = int(rng.integers(0, 4))
        ys = slice(dy, None) if c in (0, 1) else slice(0, h - dy)
        xs = slice(dx, None) if c in (0, 2) else slice(0, w - dx)
        return p[ys, xs].copy()
    if name in ("x-rotate", "x-rotate-expand"):  # 1-7 degrees either way
        a = rng.uniform(1, 7) * (1 if rng.random() < 0.5 else -1)
        from PIL import Image

        im = Image.fromarray(p).rotate(a, resample=Image.Resampling.BICUBIC,
                                       expand=name.endswith("expand"), fillcolor=(0, 0, 0))
        return np.asarray(im).copy()
    if name == "x-aspect-crop":  # cover-crop to a random aspect 0.56-1.78 (square, 4:5, 9:16)
        asp = math.exp(rng.uniform(math.log(9 / 16), math.log(16 / 9)))
        x0, y0, x1, y1 = _aspect_box(h, w, asp)
        return p[round(y0 * h):round(y1 * h), round(x0 * w):round(x1 * w)].copy()
    raise KeyError(name)


X_EDITS = ("x-crop-centre", "x-crop-offset", "x-trim-side", "x-trim-two", "x-rotate",
           "x-rotate-expand", "x-aspect-crop")


def study_query(edit: str, ei: int, ki: int, kpix: list[np.ndarray], fpix: list[np.ndarray],
                seed: int) -> tuple[np.ndarray, list[int]]:
    if edit in X_EDITS:
        from hashwatch.edits import apply_edit

        rng = np.random.default_rng([seed, ki, ei, 99])
        img = _x_edit(edit, kpix[ki], rng)
        return apply_edit("jpeg75", img, seed=seed, key=ki), []
    return make_query(edit, ei, ki, kpix, fpix, seed)


# --- step 1: hashes --------------------------------------------------------------------------


def cmd_hashes(a: argparse.Namespace) -> int:
    out: Path = a.out
    out.mkdir(parents=True, exist_ok=True)
    corpus = resolve_corpus(a.corpus)
    known, fillers, distractors = split_eval(corpus_files(corpus), a.known, a.seed,
                                             a.max_distractors)
    edits = a.edits.split(",") if a.edits else edit_names()
    from hashwatch.edits import COMBINED_EDITS

    if not a.edits:
        edits = [e for e in edits if e not in COMBINED_EDITS] + list(X_EDITS)
    meta = {"known": [str(p) for p in known], "distractors": [str(p) for p in distractors],
            "edits": edits, "known_names": KNOWN_NAMES, "query_names": QUERY_NAMES,
            "seed": a.seed}
    (out / "meta.json").write_text(json.dumps(meta))
    t0 = time.process_time()
    kpix = [load_pixels(p) for p in known]
    kf = out / "known.npz"
    if not kf.exists():
        packed = [_pack(known_candidates(p), KNOWN_NAMES) for p in kpix]
        np.savez(kf, codes=np.stack([c for c, _ in packed]), qual=np.stack([q for _, q in packed]))
    print(f"known done, {time.process_time() - t0:.0f} s CPU", file=sys.stderr, flush=True)
    fpix = [load_pixels(p) for p in fillers]
    for ei, en in enumerate(edits):
        f = out / f"q-{ei:03d}.npz"
        if f.exists():
            continue
        packed = []
        for ki in range(len(known)):
            img, pidx = study_query(en, ei, ki, kpix, fpix, a.seed)
            packed.append((*_pack(query_candidates(img), QUERY_NAMES), pidx))
        np.savez(f, codes=np.stack([c for c, _, _ in packed]),
                 qual=np.stack([q for _, q, _ in packed]),
                 partners=np.array([json.dumps(p) for _, _, p in packed]))
        print(f"edit {en} ({ei + 1}/{len(edits)}) {time.process_time() - t0:.0f} s CPU",
              file=sys.stderr, flush=True)
    step = 500
    for j in range(0, len(distractors), step):
        f = out / f"d-{j // step:03d}.npz"
        if f.exists():
            continue
        packed = [_pack(query_candidates(load_pixels(Path(p))), QUERY_NAMES)
                  for p in distractors[j:j + step]]
        np.savez(f, codes=np.stack([c for c, _ in packed]), qual=np.stack([q for _, q in packed]))
        print(f"distractors {j + len(packed)}/{len(distractors)} "
              f"{time.process_time() - t0:.0f} s CPU", file=sys.stderr, flush=True)
    return 0


# --- step 2: distances, greedy choice --------------------------------------------------------

_POP = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1).astype(np.int16)


def _dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(..., 32) x (..., 32) -> Hamming distances, broadcast."""
    return _POP[np.bitwise_xor(a, b)].sum(-1)


class Data:
    def __init__(self, folder: Path) -> None:
        self.meta = json.loads((folder / "meta.json").read_text())
        k = np.load(folder / "known.npz")
        self.kc, self.kq = k["codes"], k["qual"]  # (nk, NK, 32), (nk, NK)
        self.edits = self.meta["edits"]
        qs = [np.load(folder / f"q-{i:03d}.npz") for i in range(len(self.edits))
              if (folder / f"q-{i:03d}.npz").exists()]
        self.edits = self.edits[:len(qs)]
        self.qc = np.stack([q["codes"] for q in qs])  # (ne, nk, NQ, 32)
        self.qq = np.stack([q["qual"] for q in qs])
        self.partners = [[json.loads(s) for s in q["partners"]] for q in qs]
        ds = sorted(folder.glob("d-*.npz"))
        self.dc = np.concatenate([np.load(f)["codes"] for f in ds]) if ds else \
            np.zeros((0, len(QUERY_NAMES), 32), np.uint8)
        self.dq = np.concatenate([np.load(f)["qual"] for f in ds]) if ds else \
            np.zeros((0, len(QUERY_NAMES)), np.int16)
        self.kn, self.qn = self.meta["known_names"], self.meta["query_names"]


def _ok(qual: np.ndarray, names: list[str]) -> np.ndarray:
    """Usable views: present, and quality >= 50 except the plain full hash."""
    ok = qual >= MIN_Q
    ok[..., names.index("full")] = qual[..., names.index("full")] >= 0
    return ok


def true_hits(d: Data) -> np.ndarray:
    """(ne, nk, NQ, NK) bool: pair within 31 of the query's own known image."""
    ne, nk = d.qc.shape[:2]
    kok = _ok(d.kq, d.kn)
    qok = _ok(d.qq, d.qn)
    out = np.zeros((ne, nk, len(d.qn), len(d.kn)), bool)
    for ki in range(nk):
        dist = _dist(d.qc[:, ki, :, None, :], d.kc[ki][None, None])  # (ne, NQ, NK)
        out[:, ki] = (dist <= THR) & qok[:, ki, :, None] & kok[ki][None, None, :]
    return out


def false_near(d: Data, codes: np.ndarray, qual: np.ndarray, own: list[set[int]] | None,
               limit: int) -> dict[tuple[int, int], list[tuple[int, int, int]]]:
    """(query view, known view) -> [(query row, known, distance)] for every pair within
    ``limit`` between a query (distractor, or an edited query vs a wrong known image) and a
    known image it must not match."""
    kok = _ok(d.kq, d.kn)
    qok = _ok(qual, d.qn)
    nk = d.kc.shape[0]
    kb = np.unpackbits(d.kc.reshape(-1, 32), axis=1).astype(np.float32) * 2 - 1  # (nk*NK, 256)
    kmask = kok.reshape(-1)
    out: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
    for i in range(codes.shape[0]):
        qm = qok[i]
        if not qm.any():
            continue
        qb = np.unpackbits(codes[i][qm], axis=1).astype(np.float32) * 2 - 1
        dist = np.rint((256 - qb @ kb.T) / 2).astype(np.int16)  # (nq, nk*NK)
        dist[:, ~kmask] = 999
        if own is not None and own[i]:
            dist = dist.reshape(len(qb), nk, -1)
            dist[:, sorted(own[i])] = 999
            dist = dist.reshape(len(qb), -1)
        qi, flat = np.nonzero(dist <= limit)
        qidx = np.flatnonzero(qm)
        for a_, f_ in zip(qi, flat, strict=True):
            ki, kv = divmod(int(f_), len(d.kn))
            out.setdefault((int(qidx[a_]), kv), []).append((i, ki, int(dist[a_, f_])))
    return out


def greedy(hits: np.ndarray, kcost: np.ndarray, qcost: np.ndarray, q_fixed: list[int],
           k_fixed: list[int], budget: float, q_budget: float, banned: set[tuple[int, int]],
           q_allowed: list[int] | None = None, rounds: int = 4,
           ) -> tuple[list[int], list[int], list[tuple[str, float, float]]]:
    """Alternating greedy. Known views by recall gained per stored hash (mean stored hashes per
    known image <= ``budget``) against the current query views; then query views by recall
    gained per probe (mean probes per query <= ``q_budget``) against the chosen known views;
    repeated until the choice is stable. Starts from every allowed query view."""
    ne, nk = hits.shape[:2]
    h = hits.reshape(ne * nk, hits.shape[2], hits.shape[3]).copy()
    for qi, ki in banned:
        h[:, qi, ki] = False
    allowed = list(range(h.shape[1])) if q_allowed is None else list(q_allowed)
    qsel = sorted(set(allowed) | set(q_fixed))
    log: list[tuple[str, float, float]] = []

    def covered(qs: list[int], ks: list[int]) -> np.ndarray:
        if not qs or not ks:
            return np.zeros(h.shape[0], bool)
        return h[:, qs][:, :, ks].any(axis=(1, 2))

    ksel: list[int] = []
    for _ in range(rounds):
        # known views against the current query views
        ksel = list(k_fixed)
        cost = float(kcost[ksel].sum())
        cur = covered(qsel, ksel)
        kq = h[:, qsel, :].any(axis=1)  # (rows, NK): known view k catches the row
        while True:
            gains = (kq & ~cur[:, None]).sum(axis=0).astype(np.float64)
            gains[ksel] = 0
            fits = cost + kcost <= budget + 1e-9
            score = np.where(fits & (gains > 0), gains / np.maximum(kcost, 1e-3), -1)
            k = int(np.argmax(score))
            if score[k] <= 0:
                break
            ksel.append(k)
            cost += float(kcost[k])
            cur |= kq[:, k]
            log.append((f"+known {k}", float(cur.mean()), cost))
        # query views against the chosen known views
        old = list(qsel)
        qsel = list(q_fixed)
        qk = h[:, :, ksel].any(axis=2)  # (rows, NQ)
        cur = qk[:, qsel].any(axis=1) if qsel else np.zeros(h.shape[0], bool)
        qc = float(qcost[qsel].sum())
        while True:
            gains = (qk & ~cur[:, None]).sum(axis=0).astype(np.float64)
            gains[qsel] = 0
            mask = np.zeros_like(gains, bool)
            mask[allowed] = True
            fits = qc + qcost <= q_budget + 1e-9
            score = np.where(mask & fits & (gains > 0), gains / np.maximum(qcost, 1e-3), -1)
            q = int(np.argmax(score))
            if score[q] <= 0:
                break
            qsel.append(q)
            qc += float(qcost[q])
            cur |= qk[:, q]
            log.append((f"+query {q}", float(cur.mean()), qc))
        if sorted(qsel) == sorted(old):
            break
    return qsel, ksel, log


def cmd_select(a: argparse.Namespace) -> int:
    d = Data(a.data)
    t0 = time.process_time()
    hits = true_hits(d)
    ne, nk = hits.shape[:2]
    print(f"{ne} edits x {nk} known; {len(d.qn)} query views x {len(d.kn)} known views; "
          f"true hits {time.process_time() - t0:.0f} s", file=sys.stderr)
    kok = _ok(d.kq, d.kn)
    kcost = kok.mean(axis=0).astype(np.float64)  # stored hashes per known image, per view
    # false: distractors, and edited queries vs wrong known images (partners excused)
    cache = a.data / f"false-{a.limit}.json"
    if a.skip_false:  # recall only; false matches are counted by `hashwatch eval` afterwards
        fd, fw = {}, {}
    elif cache.exists():
        raw = json.loads(cache.read_text())
        fd = {tuple(map(int, k.split(","))): v for k, v in raw["d"].items()}
        fw = {tuple(map(int, k.split(","))): v for k, v in raw["w"].items()}
    else:
        fd = false_near(d, d.dc, d.dq, None, a.limit)
        print(f"distractors: {time.process_time() - t0:.0f} s", file=sys.stderr)
        wq = d.qc.reshape(-1, *d.qc.shape[2:])
        wqq = d.qq.reshape(-1, d.qq.shape[-1])
        own = [{ki, *d.partners[ei][ki]} for ei in range(ne) for ki in range(nk)]
        fw = false_near(d, wq, wqq, own, a.limit)
        print(f"wrong known: {time.process_time() - t0:.0f} s", file=sys.stderr)
        cache.write_text(json.dumps({"d": {f"{k[0]},{k[1]}": v for k, v in fd.items()},
                                     "w": {f"{k[0]},{k[1]}": v for k, v in fw.items()}}))
    # pairs that would have made a false match at 31 are never used
    banned = {k for k, v in {**fd}.items() if any(x[2] <= THR for x in v)}
    banned |= {k for k, v in fw.items() if any(x[2] <= THR for x in v)}
    print("banned pairs (a false match at <= 31):",
          sorted((d.qn[q], d.kn[k]) for q, k in banned), file=sys.stderr)
    qi = {n: i for i, n in enumerate(d.qn)}
    ki = {n: i for i, n in enumerate(d.kn)}
    old_q = [qi[n] for n in d.qn if n.startswith(("full", "trim", "region", "derot"))]
    old_k = [ki[n] for n in ("full", "trim", "c90", "c80", "c70", "c60", "c50")]
    fixed = [ki["full"], ki["trim"]]

    def recall(qs: list[int], ks: list[int]) -> np.ndarray:
        hh = hits.copy()
        for q, k in banned:
            hh[..., q, k] = False
        return hh[:, :, qs][:, :, :, ks].any(axis=(2, 3)).mean(axis=1)

    base = recall(old_q, old_k)
    print(f"today's views (seed {d.meta['seed']}): mean {100 * base.mean():.1f}%, "
          f"stored {kcost[old_k].sum():.2f} per known image, {len(old_q)} query views")
    # a query view costs one probe for the share of queries that have it (distractors: what
    # unmatched uploads look like)
    qcost = _ok(d.dq, d.qn).mean(axis=0).astype(np.float64) if len(d.dq) else \
        _ok(d.qq, d.qn).reshape(-1, len(d.qn)).mean(axis=0)
    print(f"today: {qcost[old_q].sum():.1f} probes per query")
    allowed = [qi[n] for n in a.query_views.split(",")] if a.query_views else None
    budget = a.budget
    if a.known_views:  # known views fixed (e.g. today's: only query views are chosen)
        fixed = [ki[n] for n in a.known_views.split(",")]
        budget = float(kcost[fixed].sum())
    qsel, ksel, log = greedy(hits, kcost, qcost, [qi["full"]], fixed, budget, a.q_budget,
                             banned, allowed)
    for step, r, c in log:
        kind, idx = step.split()[0], int(step.split()[1])
        name = d.kn[idx] if kind == "+known" else d.qn[idx]
        print(f"{kind} {name:14s} mean recall {100 * r:.1f}%  cost {c:.2f}")
    new = recall(qsel, ksel)
    print(f"chosen: mean {100 * new.mean():.1f}%, stored {kcost[ksel].sum():.2f}, "
          f"{len(qsel)} query views, {qcost[qsel].sum():.1f} probes per query")
    print("known:", [d.kn[k] for k in ksel])
    print("query:", [d.qn[q] for q in qsel])
    print("\n| edit | today | chosen |\n|---|---:|---:|")
    for e, b, n in zip(d.edits, base, new, strict=True):
        print(f"| {e} | {100 * b:.1f} | {100 * n:.1f} |")
    # margins: closest false pair among the chosen views
    near = [(x[2], "distractor", d.qn[q], d.kn[k]) for (q, k), v in fd.items()
            if q in qsel and k in ksel for x in v]
    near += [(x[2], "wrong known", d.qn[q], d.kn[k]) for (q, k), v in fw.items()
             if q in qsel and k in ksel for x in v]
    near.sort()
    print(f"closest false pairs (<= {a.limit}) among the chosen views:", near[:15])
    if a.save:
        a.save.write_text(json.dumps({"known": [d.kn[k] for k in ksel],
                                      "query": [d.qn[q] for q in qsel],
                                      "recall": dict(zip(d.edits, new.tolist(), strict=True))}))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("hashes", help="candidate view hashes of known, queries, distractors")
    h.add_argument("--corpus", type=Path, default=None)
    h.add_argument("--known", type=int, default=200)
    h.add_argument("--seed", type=int, default=1)
    h.add_argument("--edits", default=None)
    h.add_argument("--max-distractors", type=int, default=None)
    h.add_argument("--out", type=Path, required=True)
    s = sub.add_parser("select", help="greedy choice of views under a byte budget")
    s.add_argument("--data", type=Path, required=True)
    s.add_argument("--budget", type=float, default=6.18,
                   help="mean stored hashes per known image (today: 6.18)")
    s.add_argument("--q-budget", type=float, default=40.0,
                   help="mean probes per (distractor) query")
    s.add_argument("--query-views", default=None, help="restrict the query candidates")
    s.add_argument("--known-views", default=None,
                   help="fix the known views (comma-separated names); only query views chosen")
    s.add_argument("--limit", type=int, default=40, help="record false pairs within this")
    s.add_argument("--save", type=Path, default=None)
    s.add_argument("--skip-false", action="store_true",
                   help="no false-pair search (hours of CPU at 200 known x 4,451 "
                   "distractors): choose for recall, count false matches with hashwatch eval")
    a = ap.parse_args(argv)
    return {"hashes": cmd_hashes, "select": cmd_select}[a.cmd](a)


if __name__ == "__main__":
    raise SystemExit(main())


_ = Callable  # typing only
