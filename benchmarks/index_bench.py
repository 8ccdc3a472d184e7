"""Exact Hamming range search at scale: hashwatch.index against the FAISS anchor.

The anchor is what Meta's Hasher-Matcher-Actioner configures for PDQ: FAISS
IndexBinaryMultiHash(256 bits, 16 maps, 16-bit chunks) with nflip=1, one thread.

    python benchmarks/index_bench.py --n 200000 --queries 300               # quick smoke run
    python benchmarks/index_bench.py --n 20000000 --mix uniform
    python benchmarks/index_bench.py --n 20000000 --mix realistic

Data (generated, never downloaded; files written 0600 under --workdir):
* uniform: random 256-bit codes;
* realistic: real PDQ hashes of ../shared/corpus (8 dihedral variants, quality >= 50), families
  of near-duplicates around them (1-16 bits apart, heavy-tailed sizes up to --max-family, which
  skews buckets), "PDQ-like" codes 32-96 bits from a real hash, and uniform codes.
Queries: half are true near matches (a stored code with 0-31 bits flipped), the rest random
(realistic: half of those are held-out real PDQ hashes of images that are not stored).

Each engine runs in its own subprocesses (build+save, then load+add+query) so peak RSS is its
own. Ground truth for recall is a numpy brute force over a sample of queries.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FAISS_NHASH, FAISS_B, FAISS_NFLIP = 16, 16, 1


def peak_rss_mb() -> float:
    """Peak RSS of this process image. ru_maxrss would carry the parent's peak over fork+exec,
    so read VmHWM where Linux has it."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def save_private(path: Path, arr: np.ndarray) -> None:
    """np.save with owner-only permissions from the start (hash lists are sensitive)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        np.save(f, arr)


def drop_from_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # dirty pages cannot be dropped
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------ data
def corpus_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    if os.environ.get("HASHWATCH_CORPUS"):
        return Path(os.environ["HASHWATCH_CORPUS"])
    return REPO.parent / "shared" / "corpus"


def corpus_pdq(corpus: Path, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """(codes (k, 32) uint8, image index (k,)) for the 8 dihedral PDQ variants of each image."""
    if cache.exists():
        data = np.load(cache)
        return data[:, :32].copy(), data[:, 32:].copy().view("<i8").ravel()
    import pdqhash
    from PIL import Image

    files = sorted(p for p in corpus.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        sys.exit(f"no images under {corpus}: set --corpus or HASHWATCH_CORPUS")
    codes, owner = [], []
    t0 = time.time()
    for i, p in enumerate(files):
        with Image.open(p) as im:
            px = np.asarray(im.convert("RGB"))
        hashes, quality = pdqhash.compute_dihedral(px)
        if quality < 50:  # PDQ's own rule: low-quality hashes are discarded
            continue
        for h in hashes:
            codes.append(np.packbits(np.asarray(h, dtype=np.uint8)))
            owner.append(i)
    print(f"hashed {len(files)} corpus images in {time.time() - t0:.0f}s", file=sys.stderr)
    codes_a = np.stack(codes).astype(np.uint8)
    owner_a = np.asarray(owner, dtype="<i8")
    save_private(cache, np.concatenate([codes_a, owner_a[:, None].view(np.uint8)], axis=1))
    return codes_a, owner_a


def flip_random(seeds: np.ndarray, lo: int, hi: int, rng: np.random.Generator) -> np.ndarray:
    """Each seed XOR a random mask with about U(lo, hi) bits set (Bernoulli per bit)."""
    out = np.empty_like(seeds)
    block = 1 << 18
    for a in range(0, len(seeds), block):
        s = seeds[a : a + block]
        p = rng.integers(lo, hi + 1, size=len(s)).astype(np.float32) / 256.0
        mask = rng.random((len(s), 256), dtype=np.float32) < p[:, None]
        out[a : a + block] = s ^ np.packbits(mask, axis=1)
    return out


def flip_exact(code: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    out = code.copy()
    for b in rng.choice(256, size=k, replace=False):
        out[b // 8] ^= np.uint8(1 << (b % 8))
    return out


def realistic_codes(
    n: int, real: np.ndarray, rng: np.random.Generator, max_family: int
) -> tuple[np.ndarray, dict[str, int]]:
    n_real = min(len(real), n)
    n_fam = int(0.30 * n)
    n_like = int(0.40 * n)
    n_unif = n - n_real - n_fam - n_like
    if n_unif < 0:
        n_fam, n_like, n_unif = (n - n_real) // 2, (n - n_real) - (n - n_real) // 2, 0
    sizes = np.minimum(rng.zipf(1.6, size=n_fam + 1), max_family)
    sizes = sizes[: np.searchsorted(np.cumsum(sizes), n_fam) + 1]
    sizes[-1] -= sizes.sum() - n_fam
    seeds = real[rng.integers(0, len(real), size=len(sizes))]
    fam = flip_random(np.repeat(seeds, sizes, axis=0), 1, 16, rng)
    like = flip_random(real[rng.integers(0, len(real), size=n_like)], 32, 96, rng)
    unif = rng.integers(0, 256, size=(n_unif, 32), dtype=np.uint8)
    codes = np.concatenate([real[rng.permutation(len(real))[:n_real]], fam, like, unif])
    del fam, like, unif
    codes = codes[rng.permutation(len(codes))]
    info = {
        "real": n_real,
        "families": int(len(sizes)),
        "family_codes": n_fam,
        "largest_family": int(sizes.max()) if len(sizes) else 0,
        "pdq_like": n_like,
        "uniform": n_unif,
    }
    return codes, info


def make_data(args: argparse.Namespace, wd: Path) -> dict[str, object]:
    rng = np.random.default_rng(args.seed)
    n, n_add, nq = args.n, args.add, args.queries
    info: dict[str, object] = {"mix": args.mix, "n": n, "add": n_add, "queries": nq}
    held_out = np.empty((0, 32), np.uint8)
    if args.mix == "uniform":
        base = rng.integers(0, 256, size=(n, 32), dtype=np.uint8)
        extra = rng.integers(0, 256, size=(n_add, 32), dtype=np.uint8)
    else:
        cache = wd.parent / "hashwatch-bench-corpus-pdq.npy"
        real, owner = corpus_pdq(corpus_dir(args.corpus), cache)
        images = np.unique(owner)
        out = rng.choice(images, size=max(1, len(images) // 10), replace=False)
        is_out = np.isin(owner, out)
        held_out, stored = real[is_out], real[~is_out]
        base, binfo = realistic_codes(n, stored, rng, args.max_family)
        extra, _ = realistic_codes(n_add, stored, rng, args.max_family)
        info["composition"] = binfo
    # queries: half near a stored code (0..31 bits flipped), the rest not stored
    n_near = nq // 2
    src = rng.integers(0, n + n_add, size=n_near)
    near = [
        flip_exact(base[i] if i < n else extra[i - n], int(k), rng)
        for i, k in zip(src, rng.integers(0, 32, size=n_near), strict=True)
    ]
    n_other = nq - n_near
    if len(held_out):
        n_real_q = n_other // 2
        others = [
            held_out[rng.integers(0, len(held_out), size=n_real_q)],
            rng.integers(0, 256, size=(n_other - n_real_q, 32), dtype=np.uint8),
        ]
    else:
        others = [rng.integers(0, 256, size=(n_other, 32), dtype=np.uint8)]
    queries = np.concatenate([np.stack(near) if near else np.empty((0, 32), np.uint8), *others])
    kinds = np.array(["near"] * n_near + ["other"] * n_other)
    save_private(wd / "base.npy", base)
    save_private(wd / "extra.npy", extra)
    save_private(wd / "queries.npy", queries)
    # ground truth: numpy brute force over base + extra on a sample of the queries
    t0 = time.time()
    gt_idx = np.linspace(0, nq - 1, num=min(args.gt_queries, nq)).astype(np.int64)
    gt: list[list[int]] = [[] for _ in gt_idx]
    qw = queries[gt_idx].view("<u8").reshape(-1, 4)
    block = 1 << 19
    for off, arr in ((0, base), (n, extra)):
        w = arr.view("<u8").reshape(-1, 4)
        for a in range(0, len(w), block):
            blk = w[a : a + block]
            for j, q in enumerate(qw):
                d = np.bitwise_count(blk ^ q).sum(axis=1, dtype=np.int32)
                gt[j].extend((np.nonzero(d <= args.radius)[0] + (off + a)).tolist())
    info["ground_truth_s"] = round(time.time() - t0, 1)
    with open(os.open(wd / "gt.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        json.dump({"idx": gt_idx.tolist(), "ids": gt, "kinds": kinds.tolist()}, f)
    return info


# ------------------------------------------------------------------------------ workers
class FaissEngine:
    name = "faiss"

    def __init__(self) -> None:
        import faiss

        faiss.omp_set_num_threads(1)
        self.faiss = faiss
        self.index = None

    def build(self, codes: np.ndarray) -> None:
        self.index = self.faiss.IndexBinaryMultiHash(256, FAISS_NHASH, FAISS_B)
        self.index.nflip = FAISS_NFLIP
        self.index.add(codes)

    def save(self, path: Path) -> None:
        self.faiss.write_index_binary(self.index, str(path))
        os.chmod(path, 0o600)

    def load(self, path: Path) -> None:
        self.index = self.faiss.read_index_binary(str(path))
        self.index.nflip = FAISS_NFLIP

    def add(self, first_id: int, codes: np.ndarray) -> None:
        assert self.index.ntotal == first_id  # FAISS numbers vectors sequentially
        self.index.add(codes)

    def search(self, q: np.ndarray, radius: int) -> list[int]:
        # FAISS binary range search is strict (d < radius): HMA passes threshold + 1
        lims, _, ids = self.index.range_search(q[None], radius + 1)
        return ids[lims[0] : lims[1]]


class HashwatchEngine:
    name = "hashwatch"

    def __init__(self) -> None:
        from hashwatch.index import HAVE_C_EXTENSION, HammingIndex

        assert HAVE_C_EXTENSION, "hashwatch._mih is not built"
        self.cls = HammingIndex
        self.index = HammingIndex()

    def build(self, codes: np.ndarray) -> None:
        # the index takes the loaded array over instead of copying it (FAISS copies into its
        # own storage and has no such option)
        self.index.add(np.arange(len(codes), dtype=np.int64), codes, copy=False)

    def save(self, path: Path) -> None:
        self.index.save(path)

    def load(self, path: Path) -> None:
        self.index = self.cls.load(path)

    def add(self, first_id: int, codes: np.ndarray) -> None:
        self.index.add(np.arange(first_id, first_id + len(codes), dtype=np.int64), codes)

    def search(self, q: np.ndarray, radius: int) -> list[int]:
        return [i for i, _ in self.index.search(q, radius)]


def worker(engine_name: str, phase: str, wd: Path, radius: int) -> dict[str, object]:
    eng = FaissEngine() if engine_name == "faiss" else HashwatchEngine()
    path = wd / f"index.{engine_name}"
    out: dict[str, object] = {}
    if phase == "build":
        base = np.load(wd / "base.npy")
        t0 = time.perf_counter()
        eng.build(base)
        out["build_s"] = time.perf_counter() - t0
        del base
        t0 = time.perf_counter()
        eng.save(path)
        out["save_s"] = time.perf_counter() - t0
        out["file_mb"] = path.stat().st_size / 2**20
        out["build_peak_rss_mb"] = peak_rss_mb()
        return out
    # serve: load from disk, add the monthly batch, answer queries one at a time
    n = int(np.load(wd / "base.npy", mmap_mode="r").shape[0])
    extra = np.load(wd / "extra.npy")
    queries = np.load(wd / "queries.npy")
    with open(wd / "gt.json") as f:
        gt = json.load(f)
    drop_from_page_cache(path)  # a cold load, as after a restart (only this file is evicted)
    t0 = time.perf_counter()
    eng.load(path)
    out["load_s"] = time.perf_counter() - t0
    out["rss_after_load_mb"] = peak_rss_mb()
    t0 = time.perf_counter()
    eng.add(n, extra)
    out["add_s"] = time.perf_counter() - t0
    for q in queries[:10]:  # warm-up, untimed
        eng.search(q, radius)
    lat = np.empty(len(queries))
    cpu = np.empty(len(queries))
    found: dict[int, list[int]] = {}
    want = set(gt["idx"])
    for i, q in enumerate(queries):
        c0 = time.thread_time()
        t0 = time.perf_counter()
        res = eng.search(q, radius)
        lat[i] = time.perf_counter() - t0
        cpu[i] = time.thread_time() - c0
        if i in want:
            found[i] = [int(x) for x in res]
    kinds = np.array(gt["kinds"])
    lat_ms = lat * 1e3
    out["p50_ms"] = float(np.percentile(lat_ms, 50))
    out["p99_ms"] = float(np.percentile(lat_ms, 99))
    out["mean_ms"] = float(lat_ms.mean())
    # CPU time of the query thread: what one core costs, without preemption by other jobs
    out["cpu_p50_ms"] = float(np.percentile(cpu * 1e3, 50))
    out["cpu_p99_ms"] = float(np.percentile(cpu * 1e3, 99))
    for kind in ("near", "other"):
        sel = lat_ms[kinds == kind]
        if sel.size:
            out[f"p50_{kind}_ms"] = float(np.percentile(sel, 50))
            out[f"p99_{kind}_ms"] = float(np.percentile(sel, 99))
    hit = total = false_pos = exact_q = 0
    for qi, ids in zip(gt["idx"], gt["ids"], strict=True):
        truth, got = set(ids), set(found[qi])
        hit += len(truth & got)
        total += len(truth)
        false_pos += len(got - truth)
        exact_q += truth == got
    out["recall"] = hit / total if total else 1.0
    out["false_positives"] = false_pos
    out["exact_queries"] = f"{exact_q}/{len(gt['idx'])}"
    out["gt_matches"] = total
    out["serve_peak_rss_mb"] = peak_rss_mb()
    if engine_name == "hashwatch":
        out["segments"] = eng.index.stats()["segments"]
        # folding the added batch into the big segment (what the background merge does);
        # old and new segment coexist meanwhile, hence its own peak
        t0 = time.perf_counter()
        eng.index.compact()
        out["compact_s"] = time.perf_counter() - t0
        out["compact_peak_rss_mb"] = peak_rss_mb()
    return out


def run_worker(engine: str, phase: str, wd: Path, radius: int) -> dict[str, object]:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        engine,
        "--phase",
        phase,
        "--workdir",
        str(wd),
        "--radius",
        str(radius),
    ]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        sys.stderr.write(res.stderr)
        raise SystemExit(f"{engine} {phase} failed")
    return json.loads(res.stdout.strip().splitlines()[-1])


def fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if v < 10 else f"{v:.1f}"
    return str(v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--mix", choices=["uniform", "realistic"], default="uniform")
    ap.add_argument("--radius", type=int, default=31)
    ap.add_argument("--add", type=int, default=250_000, help="codes added after loading")
    ap.add_argument("--gt-queries", type=int, default=100, help="queries with brute-force truth")
    ap.add_argument("--max-family", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--corpus", default=None)
    ap.add_argument("--workdir", default=None, help="default /tmp/hashwatch-index-bench-MIX-N")
    ap.add_argument("--engines", default="faiss,hashwatch")
    ap.add_argument("--keep", action="store_true", help="keep the generated data files")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="reuse data files kept by an earlier --keep run in --workdir",
    )
    ap.add_argument("--worker", choices=["faiss", "hashwatch"], help=argparse.SUPPRESS)
    ap.add_argument("--phase", choices=["build", "serve"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    wd = Path(args.workdir or f"/tmp/hashwatch-index-bench-{args.mix}-{args.n}")
    if args.worker:
        print(json.dumps(worker(args.worker, args.phase, wd, args.radius)))
        return
    wd.mkdir(parents=True, exist_ok=True, mode=0o700)
    t0 = time.time()
    if args.reuse and all(
        (wd / f).exists() for f in ("base.npy", "extra.npy", "queries.npy", "gt.json")
    ):
        info: dict[str, object] = {"reused": str(wd)}
    else:
        info = make_data(args, wd)
    print(f"data: {json.dumps(info)} ({time.time() - t0:.0f}s)", flush=True)
    print(f"load average before: {os.getloadavg()}", flush=True)
    results: dict[str, dict[str, object]] = {}
    for eng in args.engines.split(","):
        r = run_worker(eng, "build", wd, args.radius)
        r.update(run_worker(eng, "serve", wd, args.radius))
        results[eng] = r
        (wd / f"index.{eng}").unlink(missing_ok=True)
        print(f"{eng} done", flush=True)
    print(f"load average after: {os.getloadavg()}")
    rows = [
        "build_s",
        "save_s",
        "file_mb",
        "build_peak_rss_mb",
        "load_s",
        "add_s",
        "p50_ms",
        "p99_ms",
        "mean_ms",
        "cpu_p50_ms",
        "cpu_p99_ms",
        "p50_near_ms",
        "p99_near_ms",
        "p50_other_ms",
        "p99_other_ms",
        "recall",
        "false_positives",
        "exact_queries",
        "gt_matches",
        "rss_after_load_mb",
        "serve_peak_rss_mb",
        "compact_s",
        "compact_peak_rss_mb",
    ]
    engines = list(results)
    print(
        f"\nn={args.n:,} mix={args.mix} radius={args.radius} queries={args.queries} "
        f"add={args.add:,} (1 core each)"
    )
    print(
        f"{'metric':<22}"
        + "".join(f"{e:>14}" for e in engines)
        + ("   anchor/hashwatch" if len(engines) == 2 else "")
    )
    for key in rows:
        vals = [results[e].get(key, "") for e in engines]
        line = f"{key:<22}" + "".join(f"{fmt(v):>14}" for v in vals)
        if len(vals) == 2 and all(isinstance(v, float) for v in vals) and vals[1]:
            line += f"   {vals[0] / vals[1]:.1f}x"
        print(line)
    if "hashwatch" in results:
        print("hashwatch segments:", results["hashwatch"].get("segments"))
    if not args.keep:
        for name in ("base.npy", "extra.npy", "queries.npy", "gt.json"):
            (wd / name).unlink(missing_ok=True)


if __name__ == "__main__":
    main()
