"""Batch scan and private table build: Ray vs the local process pool, on the same input.

Prints, per engine and worker count: wall time, CPU seconds of every process of the run (the
driver plus all its descendants: pool workers, or the local Ray cluster's raylet, GCS and
workers), files per CPU-second (per-core throughput, what a shared machine can measure
honestly), files per wall-second, and the fixed overhead of one run (a one-file manifest).
Then the private table build at ``--entries`` with the same seed on both engines (checked
byte-identical) and a cost model from the measured per-core rates.

    python benchmarks/scan_bench.py prepare ROOT            # data: 12-MP JPEGs, corpus set, list
    python benchmarks/scan_bench.py scan ROOT               # Ray vs local, 1 and 2 workers
    python benchmarks/scan_bench.py build ROOT --entries 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

CORPUS = Path(os.environ.get("HASHWATCH_CORPUS",
                             Path(__file__).resolve().parents[2] / "shared" / "corpus"))


class TreeCPU:
    """CPU seconds (user + system) of this process and every descendant, sampled every
    ``every`` s (a descendant that exits between samples loses at most its last interval)."""

    def __init__(self, every: float = 0.2) -> None:
        self.me = psutil.Process()
        self.seen: dict[tuple[int, float], float] = {}
        self.every = every
        self._stop = threading.Event()
        self.peak_rss = 0
        self._t = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        rss = 0
        for p in [self.me, *self.me.children(recursive=True)]:
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    self.seen[(p.pid, p.create_time())] = t.user + t.system
                    rss += p.memory_info().rss
            except psutil.Error:
                pass
        self.peak_rss = max(self.peak_rss, rss)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def __enter__(self) -> TreeCPU:
        self.sample()
        self.base = dict(self.seen)
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.sample()

    @property
    def cpu(self) -> float:
        return sum(v - self.base.get(k, 0.0) for k, v in self.seen.items())


def prepare(root: Path, n_big: int, n_corpus: int) -> None:
    """12-MP JPEGs (Kodak photographs upscaled to 4000x3000 with grain), corpus photographs,
    and a list of known images (the Kodak set) in root/hw.db."""
    from PIL import Image

    from hashwatch.cli import app

    big = root / "jpeg12mp"
    big.mkdir(parents=True, exist_ok=True)
    kodak = sorted((CORPUS / "kodak24").glob("*.png")) or sorted((CORPUS / "kodak24").iterdir())
    rng = np.random.default_rng(3)
    for i in range(n_big):
        dst = big / f"photo{i:03d}.jpg"
        if dst.exists():
            continue
        im = Image.open(kodak[i % len(kodak)]).convert("RGB").resize((4000, 3000),
                                                                     Image.BICUBIC)
        a = np.asarray(im, dtype=np.int16) + rng.integers(-6, 7, (3000, 4000, 3),
                                                          dtype=np.int16)
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(dst, quality=92)
    small = root / "corpus"
    small.mkdir(exist_ok=True)
    pics = sorted((CORPUS / "bsds500-train").rglob("*.jpg"))[: n_corpus // 2]
    pics += sorted((CORPUS / "flowers128").rglob("*.jpg"))[: n_corpus - len(pics)]
    for p in pics:
        dst = small / f"{p.parent.name}-{p.name}"
        if not dst.exists():
            shutil.copy(p, dst)
    db = root / "hw.db"
    if not db.exists():
        for args in (["lists", "create", "known", "--scheme", "uk"],
                     ["lists", "add", "known", str(CORPUS / "kodak24"), "--category", "uk:A"]):
            app(args + ["--db", str(db)], standalone_mode=False)
    for name in ("jpeg12mp", "corpus"):
        man = root / f"manifest-{name}"
        if not man.exists():
            from hashwatch.scan import build_manifest

            build_manifest(man, [root / name], shard_size=100)
    one = root / "manifest-one"
    if not one.exists():
        from hashwatch.scan import build_manifest

        build_manifest(one, [sorted(small.iterdir())[0]])
    print(f"prepared {root}: {n_big} 12-MP JPEGs, {len(pics)} corpus photographs, list of "
          f"{len(kodak)} known images")


def run_one(root: Path, manifest: str, engine: str, workers: int, tag: str) -> dict:
    from hashwatch.scan import LocalEngine, Manifest, RayEngine, ScanConfig, run_scan

    m = Manifest.open(root / f"manifest-{manifest}")
    out = root / "runs" / tag
    shutil.rmtree(out, ignore_errors=True)
    cfg = ScanConfig(db=str(root / "hw.db"), index_path=str(root / "hw.db") + ".pdq.idx")
    with TreeCPU() as meter:
        t0 = time.perf_counter()
        eng = LocalEngine(workers) if engine == "local" else RayEngine(None, workers)
        res = run_scan(m, out, cfg, eng, batch_size=8)
        wall = time.perf_counter() - t0
        if engine == "ray":
            meter.sample()  # the cluster's workers, before shutdown
            import ray

            ray.shutdown()
    r = {"manifest": manifest, "engine": engine, "workers": workers, "files": m.files,
         "mib": m.bytes / 2**20, "wall_s": wall, "cpu_s": meter.cpu,
         "files_per_cpu_s": m.files / meter.cpu, "files_per_wall_s": m.files / wall,
         "peak_rss_mb": meter.peak_rss / 2**20, "states": res.summary["states"]}
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}),
          flush=True)
    return r


def scan(root: Path, repeat: int, manifests: tuple[str, ...] = ("jpeg12mp-x", "corpus-x")
         ) -> None:
    """Per engine and worker count: a one-file run (the fixed overhead of a run), then each
    manifest. Per-core throughput = files / CPU-s, raw and marginal (the one-file run's CPU
    subtracted: what a long scan converges to)."""
    from hashwatch.scan import build_manifest

    for name in ("jpeg12mp-x", "corpus-x"):
        if not (root / f"manifest-{name}").exists():
            build_manifest(root / f"manifest-{name}", [root / name], shard_size=100)
    print(f"load before: {os.getloadavg()}")
    results = []
    for engine in ("local", "ray"):
        for workers in (1, 2):
            one = run_one(root, "one", engine, workers, f"one-{engine}-{workers}")
            results.append(one)
            for manifest in manifests:
                for k in range(repeat):
                    r = run_one(root, manifest, engine, workers,
                                f"{manifest}-{engine}-{workers}-{k}")
                    r["marginal_files_per_cpu_s"] = (r["files"] - 1) / (r["cpu_s"] - one["cpu_s"])
                    r["marginal_files_per_wall_s"] = (r["files"] - 1) / (r["wall_s"]
                                                                         - one["wall_s"])
                    results.append(r)
    print(f"load after: {os.getloadavg()}")
    for manifest in manifests:
        a, b = root / "runs" / f"{manifest}-local-2-0", root / "runs" / f"{manifest}-ray-2-0"
        same = sorted(p.name for p in (a / "shards").glob("*.parquet")) == sorted(
            p.name for p in (b / "shards").glob("*.parquet")) and all(
            (a / "shards" / p.name).read_bytes() == p.read_bytes()
            for p in (b / "shards").glob("*.parquet"))
        print(f"{manifest}: ray and local shard files byte-identical: {same}")
    print("\nmanifest    engine workers files  wall s  CPU s  files/CPU-s  marginal files/CPU-s"
          "  files/wall-s  peak RSS MB")
    for r in results:
        print(f"{r['manifest']:11} {r['engine']:6} {r['workers']:7} {r['files']:5} "
              f"{r['wall_s']:7.1f} {r['cpu_s']:6.1f} {r['files_per_cpu_s']:12.2f} "
              f"{r.get('marginal_files_per_cpu_s', float('nan')):21.2f} "
              f"{r['files_per_wall_s']:13.2f} {r['peak_rss_mb']:11.0f}")
    (root / f"scan-results-{'-'.join(manifests)}.json").write_text(json.dumps(results, indent=1))


def build(root: Path, entries: int, workers: int) -> None:
    """The private table build on both engines with the same seed (checked byte-identical),
    at 100,000 entries first and then at ``entries`` (a size series: the build is linear)."""
    for n in sorted({min(100_000, entries), entries}):
        build_size(root, n, workers)


def build_size(root: Path, entries: int, workers: int) -> None:
    from hashwatch.private.build import build_table_files

    rng = np.random.default_rng(11)
    raw = rng.integers(0, 256, size=(entries, 32), dtype=np.uint8)
    seed = bytes(range(32))
    res = {}
    print(f"load before: {os.getloadavg()}")
    for engine in ("ray", "local"):
        out = root / f"table-{engine}-{entries}"
        shutil.rmtree(out, ignore_errors=True)
        with TreeCPU(every=1.0) as meter:
            t0 = time.perf_counter()
            mapper = None
            if engine == "ray":
                from hashwatch.distributed import ray_connect, ray_ordered_map

                ray_connect(None, workers)
                mapper = ray_ordered_map
            s = build_table_files(lambda: ((i, bytes(r).hex()) for i, r in enumerate(raw)),
                                  out, workers=workers, mapper=mapper, seed=seed)
            wall = time.perf_counter() - t0
            if engine == "ray":
                meter.sample()
                import ray

                ray.shutdown()
        res[engine] = (wall, meter.cpu, meter.peak_rss)
        print(f"{engine}: {entries:,} entries, {s.keys:,} keys, {s.slots:,} slots: wall "
              f"{wall:.1f} s, CPU {meter.cpu:.1f} s ({meter.cpu / entries * 1e3:.3f} ms per "
              f"entry), peak RSS (all processes) {meter.peak_rss / 2**20:.0f} MB", flush=True)
    same = ((root / f"table-local-{entries}" / "table.bin").read_bytes()
            == (root / f"table-ray-{entries}" / "table.bin").read_bytes())
    print(f"table.bin byte-identical on both engines: {same}")
    print(f"ray / local: wall {res['ray'][0] / res['local'][0]:.3f}, "
          f"CPU {res['ray'][1] / res['local'][1]:.3f}")
    print(f"load after: {os.getloadavg()}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("what", choices=["prepare", "scan", "build"])
    ap.add_argument("root", type=Path)
    ap.add_argument("--big", type=int, default=48)
    ap.add_argument("--corpus", type=int, default=400)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--manifests", default="jpeg12mp-x,corpus-x", help="scan: which sets")
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    a.root.mkdir(parents=True, exist_ok=True)
    if a.what == "prepare":
        prepare(a.root, a.big, a.corpus)
    elif a.what == "scan":
        scan(a.root, a.repeat, tuple(a.manifests.split(",")))
    else:
        build(a.root, a.entries, a.workers)


if __name__ == "__main__":
    main()
