"""Private matching: the key design and table layout trade-off, measured.

For each candidate design (keys per list entry, sampled bits, robust pool, keys per image,
view offsets) this prints, in one table: bytes per list entry (binary fuse layout, 1.125 cells
of 32 bytes per key), client keys per image, key recall per edit family on hashwatch.edits
(the device's real keys, ``KeyDesign.client_keys`` over ``views.client_views``, against the
listed picture's key), and the false-flag probability per heavy account-year (10,000 images, t
= 30, 20M entries) from the model below. Anchor: the design in use before (8 tables x 48 bits,
88 keys per image, 320 B/entry, recall 0.932 on the PDQ-survivable edits).

Data (``gather``, cached): calibration images (bsds500-val, kodak24, sun-hays80) and
evaluation images (the 200 bsds500-train images earlier figures used) with the client views
of every single-picture edit, and the views of every corpus image (the false-match pairs).

``calibrate``: per PDQ bit, how often the PDQ-survivable edits flip it and the spread of its
normalised coefficient change, on the calibration images only; writes the robust ranking and
sigma into ``src/hashwatch/private/_design_data.py`` with ``--write``.

False-flag model (the one used since the first private benchmark, with one refinement): a
key of k bits drawn at random from a pool of P robust bits collides with an unrelated list
entry exactly when the entry differs from the probed pattern exactly on the probed flip set J:
P(D = J) = sum_x h(x) C(P-x, k-|J|) C(x, |J|) / C(P, k) / C(k, |J|), with h the measured
distribution of the distance restricted to the pool between a client view and an unrelated
entry (corpus pairs more than 64 bits apart, per view class). Summed over the device's keys
(their flip-set sizes from the real probe order), times N = 20M entries, gives q per image;
P(flag) = P(Binomial(10,000, q) >= 30). The model is checked against direct counts at small k
(``model-check`` rows). Below the range the corpus samples (fewer than 20 pairs) the
histogram is extended by a log-linear fit of its tail, a heavier tail than the measured one
bends to (so the figure is an upper bound there).

    python benchmarks/private_design.py gather --cache DIR
    python benchmarks/private_design.py calibrate --cache DIR [--write]
    python benchmarks/private_design.py sweep --cache DIR [--quick]
    python benchmarks/private_design.py details --cache DIR    # the default design only
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from math import comb, exp, lgamma, log
from pathlib import Path

import numpy as np
import pdqhash
from PIL import Image

from hashwatch import edits as suite
from hashwatch.private.keys import KeyDesign, view_class
from hashwatch.private.views import DIHEDRAL, View, client_views

CORPUS = Path(os.environ.get("HASHWATCH_CORPUS",
                             Path(__file__).resolve().parents[2] / "shared" / "corpus"))
NAMES = ["full" + d for d in DIHEDRAL] + ["trim" + d for d in DIHEDRAL]
SURV = ["jpeg95", "jpeg75", "jpeg50", "jpeg30", "resize0.5", "gamma2", "blur2", "noise0.2",
        "grey", "contrast", "watermark"]
ORIENT = ["mirror", "flip", "rot90", "rot180", "rot270"]
BORDER = ["pad0.2", "border-black5", "border-white10", "border-colour25", "border-frame",
          "letterbox16:9", "letterbox9:16"]
OTHER = ["webp80", "png", "gif256", "jpeg10", "upscale2", "resize0.25", "vignette",
         "caption-bar", "caption-overlay", "rotate-2", "crop0.05", "crop10c"]
EDITS = SURV + ORIENT + BORDER + OTHER
LIST_SIZE = 20_000_000
IMAGES_PER_YEAR = 10_000
THRESHOLD = 30


def files(sub: str) -> list[Path]:
    return sorted(p for p in (CORPUS / sub).iterdir() if p.suffix.lower() in (".jpg", ".png"))


SETS = {"train": lambda: files("bsds500-val") + files("kodak24") + files("sun-hays80"),
        "eval": lambda: files("bsds500-train")}


# --- gather ---------------------------------------------------------------------------------

def _pack(views: list[View]) -> tuple[np.ndarray, np.ndarray]:
    out = np.zeros((16, 256), np.float32)
    mask = np.zeros(16, bool)
    for v in views:
        j = NAMES.index(v.name)
        out[j], mask[j] = v.coeffs, True
    return out, mask


def _edit_job(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    px = np.asarray(Image.open(path).convert("RGB"))
    listed, _ = pdqhash.compute_float(np.ascontiguousarray(px))  # the list holds reference PDQ
    v = np.zeros((len(EDITS), 16, 256), np.float32)
    m = np.zeros((len(EDITS), 16), bool)
    for j, name in enumerate(EDITS):
        v[j], m[j] = _pack(client_views(suite.apply_edit(name, px, seed=0)))
    return np.asarray(listed, np.float32), v, m


def _corpus_job(path: str) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    px = np.asarray(Image.open(path).convert("RGB"))
    listed, q = pdqhash.compute_float(np.ascontiguousarray(px))
    v, m = _pack(client_views(px))
    return np.asarray(listed, np.float32), int(q), v.astype(np.float16), m


def gather(cache: Path, workers: int) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(workers) as ex:
        for name, fl in SETS.items():
            out = cache / f"{name}.npz"
            if out.exists():
                continue
            t = time.perf_counter()
            res = list(ex.map(_edit_job, [str(f) for f in fl()]))
            np.savez(out, L=np.stack([r[0] for r in res]), V=np.stack([r[1] for r in res]),
                     M=np.stack([r[2] for r in res]), edits=np.array(EDITS))
            print(f"{name}: {len(res)} images x {len(EDITS)} edits in "
                  f"{time.perf_counter() - t:.0f} s", flush=True)
        out = cache / "corpus.npz"
        if not out.exists():
            fl = sorted(p for p in CORPUS.rglob("*") if p.suffix.lower() in (".jpg", ".png"))
            res = list(ex.map(_corpus_job, [str(f) for f in fl], chunksize=32))
            np.savez(out, L=np.stack([r[0] for r in res]), Q=np.array([r[1] for r in res]),
                     V=np.stack([r[2] for r in res]), M=np.stack([r[3] for r in res]))
            print(f"corpus: {len(res)} images", flush=True)


# --- calibrate ------------------------------------------------------------------------------

def bits_of(c: np.ndarray) -> np.ndarray:
    c = np.asarray(c, np.float64)
    return (c > np.median(c, axis=-1, keepdims=True)).astype(np.uint8)


def calibrate(cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """(robust ranking of the 256 bits, most robust first; sigma per bit) from train only."""
    z = np.load(cache / "train.npz")
    L, V, M = z["L"].astype(np.float64), z["V"], z["M"]
    edits = list(z["edits"])
    flips = np.zeros(256)
    deltas = []
    n = 0
    for name in SURV:
        j = edits.index(name)
        for i in range(len(L)):
            if not M[i, j, 0]:
                continue
            q = V[i, j, 0].astype(np.float64)
            flips += bits_of(L[i]) != bits_of(q)
            n += 1
            deltas.append((q - np.median(q)) / q.std() - (L[i] - np.median(L[i])) / L[i].std())
    flips /= n
    sigma = np.array(deltas).std(axis=0)
    return np.argsort(flips, kind="stable"), sigma


def write_design_data(rank: np.ndarray, sigma: np.ndarray, path: Path, bits: int = 46,
                      pool: int = 64, seed: int = 7) -> None:
    body = ('"""Calibration of the match keys, written by ``benchmarks/private_design.py '
            'calibrate --write``\n(from the calibration images bsds500-val, kodak24, '
            'sun-hays80 and the PDQ-survivable edits).\n\n'
            '``ROBUST_RANK``: PDQ bit positions, least often flipped by those edits first.\n'
            '``SIGMA``: per bit, the spread of its coefficient change (in units of the '
            "picture's\ncoefficient spread) under the same edits; it ranks the device's "
            'probes.\n"""\n\n'
            f"ROBUST_RANK = {tuple(int(x) for x in rank)!r}\n\n"
            f"SIGMA = {tuple(round(float(s), 5) for s in sigma)!r}\n\n"
            f"# the default key: {bits} of the {pool} most robust bits, drawn with "
            f"numpy.random.default_rng({seed})\n"
            f"POSITIONS = {positions(rank, bits, pool, seed)!r}\n")
    # wrap long tuples at 99 columns
    lines = []
    for line in body.splitlines():
        while len(line) > 99:
            cut = line.rfind(", ", 0, 98) + 1
            lines.append(line[:cut])
            line = "    " + line[cut:].lstrip()
        lines.append(line)
    path.write_text("\n".join(lines) + "\n")


# --- designs --------------------------------------------------------------------------------

def positions(rank: np.ndarray, bits: int, pool: int, seed: int) -> tuple[int, ...]:
    rng = np.random.default_rng(seed)
    return tuple(int(x) for x in np.sort(rng.choice(rank[:pool], bits, replace=False)))


def make_design(rank: np.ndarray, sigma: np.ndarray, *, tables: int, bits: int, pool: int,
                keys: int, offsets: tuple[float, float, float, float],
                reserve: tuple[int, int, int, int] = (1, 3, 4, 1), seed: int = 7) -> KeyDesign:
    rng = np.random.default_rng(seed)
    pos = tuple(tuple(int(x) for x in np.sort(rng.choice(rank[:pool], bits, replace=False)))
                for _ in range(tables))
    return KeyDesign(positions=pos, sigma=tuple(float(s) for s in sigma), keys_per_image=keys,
                     view_offset=offsets, view_reserve=reserve)


def views_at(V: np.ndarray, M: np.ndarray) -> list[View]:
    return [View(NAMES[j], V[j].astype(np.float64), 100) for j in range(16) if M[j]]


def recall(design: KeyDesign, z: dict, names: list[str]) -> dict[str, float]:
    """Share of (image, edit) pairs whose client keys include the listed picture's key."""
    edits = list(z["edits"])
    listed = [set(map(bytes, design.entry_keys(np.packbits(bits_of(c)).reshape(1, 32))[0]))
              for c in z["L"]]
    out = {}
    for name in names:
        j = edits.index(name)
        hit = [bool(listed[i] & set(design.client_keys(views_at(z["V"][i, j], z["M"][i, j]))))
               for i in range(len(listed))]
        out[name] = float(np.mean(hit))
    return out


def anchor_recall(z: dict, names: list[str]) -> dict[str, float]:
    """Key recall of the design this replaces (on main until issue 17: 8 tables x 48 bits at
    random positions, seed 20210729; the device probes only its plain full view: per table the
    plain key and the keys with one or two of the 4 least reliable sampled bits flipped, 88
    keys), on the same images and edits as the candidates."""
    import hashlib
    import itertools

    rng = np.random.default_rng(20210729)
    pos = np.stack([rng.choice(256, 48, replace=False) for _ in range(8)])
    flips = [(j,) for j in range(4)] + list(itertools.combinations(range(4), 2))

    def key(t: int, sampled: np.ndarray) -> bytes:
        return hashlib.blake2b(bytes([t]) + np.packbits(sampled).tobytes(), digest_size=16,
                               person=b"hw-mkey-v1").digest()

    def client(c: np.ndarray) -> set[bytes]:
        c = c.astype(np.float64)
        bits = (c > np.median(c)).astype(np.uint8)
        margin = np.abs(c - np.median(c))
        out = set()
        for t in range(8):
            sampled = bits[pos[t]]
            out.add(key(t, sampled))
            weakest = np.argsort(margin[pos[t]], kind="stable")[:4]
            for f in flips:
                probe = sampled.copy()
                probe[weakest[list(f)]] ^= 1
                out.add(key(t, probe))
        return out

    edits = list(z["edits"])
    listed = [{key(t, bits_of(c)[pos[t]]) for t in range(8)} for c in z["L"]]
    full = NAMES.index("full")
    out = {}
    for name in names:
        j = edits.index(name)
        hit = [bool(z["M"][i, j, full] and listed[i] & client(z["V"][i, j, full]))
               for i in range(len(listed))]
        out[name] = float(np.mean(hit))
    return out


def binom_tail(n: int, q: float, t: int) -> float:
    """P(Binomial(n, q) >= t), term by term in log space (accurate for tiny q)."""
    if q <= 0:
        return 0.0
    if q >= 1:
        return 1.0
    total = 0.0
    for i in range(t, n + 1):
        term = exp(lgamma(n + 1) - lgamma(i + 1) - lgamma(n - i + 1) + i * log(q)
                   + (n - i) * log(1 - q))
        total += term
        if term < total * 1e-17:
            break
    return total


class FalseMatchModel:
    """Measured pool-distance histograms of (client view, unrelated entry) pairs per view
    class, and the collision probability of one probe of a given flip-set size."""

    def __init__(self, cache: Path, rank: np.ndarray, sample: int = 600) -> None:
        z = np.load(cache / "corpus.npz")
        ok = z["Q"] >= 50
        self.L = bits_of(z["L"][ok])
        self.V, self.M = z["V"][ok], z["M"][ok]
        self.rank = rank
        n = len(self.L)
        packed = np.packbits(self.L, axis=1).view("<u8")
        self.far = np.zeros((n, n), bool)
        for i in range(n):
            self.far[i] = np.bitwise_count(packed[i] ^ packed).sum(1) > 64
        self.users = np.random.default_rng(3).choice(n, min(sample, n), replace=False)
        self._hist: dict[tuple[int, str], np.ndarray] = {}

    def hist(self, pool: int, cls: str) -> np.ndarray:
        """Counts of pool distances (0..pool) between views of class ``cls`` of user images
        and unrelated list entries (full-picture distance > 64)."""
        key = (pool, cls)
        if key in self._hist:
            return self._hist[key]
        cols = self.rank[:pool]
        entries = self.L[:, cols].astype(np.int16)
        out = np.zeros(pool + 1)
        users = range(len(self.L)) if cls == "full" else self.users
        for i in users:
            for j in range(16):
                if not self.M[i, j] or view_class(NAMES[j]) != cls:
                    continue
                vb = bits_of(self.V[i, j].astype(np.float64))[cols].astype(np.int16)
                d = (entries != vb).sum(1)[self.far[i]]
                out += np.bincount(d, minlength=pool + 1)
        self._hist[key] = out
        return out

    @staticmethod
    def extended(counts: np.ndarray, floor: float = 20.0) -> np.ndarray:
        """Probabilities with the sparse lower tail (cumulative count < floor) replaced by a
        log-linear extrapolation of the cumulative counts above it (never below measured)."""
        cum = np.cumsum(counts)
        total = cum[-1]
        ok = np.flatnonzero(cum >= floor)
        if len(ok) < 4:
            return counts / total
        x0 = int(ok[0])
        xs = np.arange(x0, min(x0 + 6, len(cum)))
        slope, icpt = np.polyfit(xs, np.log(cum[xs]), 1)
        ext = cum.astype(np.float64).copy()
        for x in range(x0):
            ext[x] = max(cum[x], exp(icpt + slope * x))
        dens = np.diff(np.concatenate([[0.0], ext]))
        dens[dens < 0] = 0
        return dens / dens.sum()

    def per_probe(self, pool: int, cls: str, bits: int, extend: bool) -> np.ndarray:
        """P(an unrelated entry's key equals one probe with j flipped bits), j = 0..bits."""
        c = self.hist(pool, cls)
        h = self.extended(c) if extend else c / c.sum()
        out = np.zeros(bits + 1)
        norm = comb(pool, bits)
        for j in range(bits + 1):
            s = sum(h[x] * comb(pool - x, bits - j) * comb(x, j) for x in range(pool + 1)
                    if h[x] > 0)
            out[j] = s / norm / comb(bits, j)
        return out

    def q_per_image(self, design: KeyDesign, pool: int, extend: bool = True,
                    images: int = 300) -> float:
        """Mean over corpus images of sum over its keys of the collision probability, x N."""
        per = {cls: self.per_probe(pool, cls, design.bits, extend)
               for cls in ("full", "dihedral", "trim", "trim-dihedral")}
        pick = np.random.default_rng(5).choice(len(self.L), min(images, len(self.L)),
                                               replace=False)
        total = 0.0
        for i in pick:
            views = views_at(self.V[i].astype(np.float32), self.M[i])
            for _score, name, _t, _key, flips in design.candidates(views):
                total += per[view_class(name)][flips]
        return min(1.0, total / len(pick) * LIST_SIZE * design.tables)

    def model_check(self, pool: int, bits: int) -> tuple[float, float]:
        """(counted, modelled) P(two unrelated full hashes agree on k random pool bits)."""
        cols = np.sort(np.random.default_rng(11).choice(self.rank[:pool], bits, replace=False))
        b = self.L[:, cols]
        agree = 0
        pairs = 0
        for i in range(len(b)):
            same = (b[i] == b).all(1) & self.far[i]
            agree += int(same.sum())
            pairs += int(self.far[i].sum())
        return agree / pairs, float(self.per_probe(pool, "full", bits, False)[0])


def sweep(cache: Path, quick: bool) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from hashwatch.private import _design_data as dd

    rank, sigma = np.array(dd.ROBUST_RANK), np.array(dd.SIGMA)
    z = dict(np.load(cache / "eval.npz"))
    model = FalseMatchModel(cache, rank)
    print("model check (counted vs modelled P(agree on k pool bits), unrelated pairs):")
    for pool, bits in [(64, 16), (64, 20), (96, 20), (64, 24)]:
        c, m = model.model_check(pool, bits)
        print(f"  pool {pool} k {bits}: counted {c:.3g}  model {m:.3g}")
    off, res = (0.0, 4.0, 0.5, 5.0), (1, 2, 3, 0)
    grid = [
        # tables, bits, pool, keys per image
        (1, 48, 256, 96),  # positions drawn from all 256 bits, as the previous design
        (1, 46, 64, 96),
        (1, 48, 64, 96),
        (1, 48, 64, 128),
        (1, 44, 96, 96),
        (1, 46, 96, 96),
        (1, 48, 96, 64),
        (1, 48, 96, 80),
        (1, 48, 96, 96),  # the default
        (1, 48, 96, 112),
        (1, 48, 96, 128),
        (1, 48, 128, 128),
        (2, 48, 96, 96),  # two keys per entry, the device's keys split between them
    ]
    if os.environ.get("HW_SWEEP_FROM"):
        grid = grid[int(os.environ["HW_SWEEP_FROM"]):]
    if quick:
        grid = grid[:2]
    default = KeyDesign.from_dict(_default_dict())
    print(f"\n{'design':34s} {'B/entry':>7s} {'keys':>4s} {'PDQ-surv':>8s} {'orient':>6s} "
          f"{'border':>6s} {'q@20M':>8s} {'P(flag)':>8s} {'q (hist)':>8s}")
    a = anchor_recall(z, EDITS)
    print(f"{'anchor: 8 x 48 bits of 256 (before)':34s} {320:7d} {88:4d} "
          f"{np.mean([a[e] for e in SURV]):8.3f} {np.mean([a[e] for e in ORIENT]):6.3f} "
          f"{np.mean([a[e] for e in BORDER]):6.3f} {'1.4e-04':>8s} {'2.8e-29':>8s} "
          f"{'(BENCHMARKS)':>8s}", flush=True)
    print("  anchor per edit: " + ", ".join(f"{e} {a[e]:.3f}" for e in SURV + ORIENT + BORDER))
    for tables, bits, pool, keys in grid:
        d = make_design(rank, sigma, tables=tables, bits=bits, pool=pool, keys=keys,
                        offsets=off, reserve=res)
        r = recall(d, z, SURV + ORIENT + BORDER)
        q = model.q_per_image(d, pool)
        qh = model.q_per_image(d, pool, extend=False)
        label = f"{tables} x {bits} bits of {pool}"
        print(f"{label:34s} {tables * 36:7d} {keys:4d} {np.mean([r[e] for e in SURV]):8.3f} "
              f"{np.mean([r[e] for e in ORIENT]):6.3f} {np.mean([r[e] for e in BORDER]):6.3f} "
              f"{q:8.2g} {binom_tail(IMAGES_PER_YEAR, q, THRESHOLD):8.2g} {qh:8.2g}",
              flush=True)
    print("(q, P(flag): model over corpus pairs > 64 bits apart, log-linear tail below the "
          f"sampled range; q (hist): the measured histogram alone; {IMAGES_PER_YEAR} images a "
          f"year, t = {THRESHOLD}, N = {LIST_SIZE:,})")
    details(default, z, model, cache)


def _default_dict() -> dict:
    from hashwatch.private.keys import DEFAULT_DESIGN

    return DEFAULT_DESIGN.to_dict()


def details(design: KeyDesign, z: dict, model: FalseMatchModel, cache: Path) -> None:
    """The default design: recall per edit, the flag probability for lighter accounts and
    lower thresholds, and direct counts of key collisions among all corpus pairs."""
    r = recall(design, z, EDITS)
    print("\ndefault design, key recall per edit (eval images):")
    for fam, names in (("PDQ-survivable", SURV), ("orientation", ORIENT), ("border", BORDER),
                       ("other", OTHER)):
        print(f"  {fam}: " + ", ".join(f"{e} {r[e]:.3f}" for e in names))
    # An entry still in a delta chunk is probed only with the device's first
    # delta_openings / (live deltas) keys (64 with the default's one delta slot, 32 if two
    # deltas shared them; client._slots): its recall until a rotation moves it into the base.
    from hashwatch.private.table import DEFAULT_DELTA_OPENINGS

    for k in (DEFAULT_DELTA_OPENINGS, DEFAULT_DELTA_OPENINGS // 2):
        dk = KeyDesign.from_dict({**design.to_dict(), "keys_per_image": k})
        rk = recall(dk, z, SURV + ORIENT + BORDER)
        print(f"  entry in a delta, probed by the first {k} keys: PDQ-survivable "
              f"{np.mean([rk[e] for e in SURV]):.3f}, orientation "
              f"{np.mean([rk[e] for e in ORIENT]):.3f}, border "
              f"{np.mean([rk[e] for e in BORDER]):.3f}", flush=True)
    pool = 96
    q = model.q_per_image(design, pool)
    qh = model.q_per_image(design, pool, extend=False)
    for ipy in (1000, IMAGES_PER_YEAR):
        for t in (10, 20, 30):
            print(f"  {ipy:>6} images/year, t={t}: P(flag) {binom_tail(ipy, q, t):.2g} "
                  f"(measured histogram alone: {binom_tail(ipy, qh, t):.2g})")
    # direct count: every corpus image's keys against every other image's entry key
    zc = np.load(cache / "corpus.npz")
    ok = zc["Q"] >= 50
    L = bits_of(zc["L"][ok])
    V, M = zc["V"][ok], zc["M"][ok]
    entry = {}
    for i, b in enumerate(L):
        entry.setdefault(bytes(design.entry_keys(np.packbits(b).reshape(1, 32))[0, 0]),
                         []).append(i)
    packed = np.packbits(L, axis=1).view("<u8")
    bands = {"<=31": 0, "32-64": 0, ">64": 0}
    pairs = {"<=31": 0, "32-64": 0, ">64": 0}
    for i in range(len(L)):
        d = np.bitwise_count(packed[i] ^ packed).sum(1)
        d[i] = 999
        for name, lo, hi in (("<=31", 0, 31), ("32-64", 32, 64), (">64", 65, 256)):
            pairs[name] += int(((d >= lo) & (d <= hi)).sum())
        hit = set()
        for k in design.client_keys(views_at(V[i].astype(np.float32), M[i])):
            hit.update(j for j in entry.get(k, ()) if j != i)
        for j in hit:
            bands["<=31" if d[j] <= 31 else "32-64" if d[j] <= 64 else ">64"] += 1
    print("  corpus pairs (client image, listed image) sharing a key, by PDQ distance: "
          + ", ".join(f"{k}: {bands[k]} of {pairs[k]:,}" for k in bands))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("command", choices=["gather", "calibrate", "sweep", "details"])
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--bits", type=int, default=46, help="calibrate --write: default key bits")
    ap.add_argument("--pool", type=int, default=64, help="calibrate --write: robust pool")
    a = ap.parse_args()
    if not CORPUS.is_dir():
        print(f"corpus not found at {CORPUS}", file=sys.stderr)
        return 2
    if a.command == "gather":
        gather(a.cache, a.workers)
    elif a.command == "calibrate":
        rank, sigma = calibrate(a.cache)
        print("most robust bits:", rank[:16].tolist(), "sigma range", sigma.min(), sigma.max())
        if a.write:
            path = Path(__file__).resolve().parents[1] / "src/hashwatch/private/_design_data.py"
            write_design_data(rank, sigma, path, a.bits, a.pool)
            print(f"wrote {path}")
    elif a.command == "details":  # the default only (recall per edit, deltas, false flags)
        from hashwatch.private import _design_data as dd

        details(KeyDesign.from_dict(_default_dict()), dict(np.load(a.cache / "eval.npz")),
                FalseMatchModel(a.cache, np.array(dd.ROBUST_RANK)), a.cache)
    else:
        sweep(a.cache, a.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
