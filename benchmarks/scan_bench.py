"""Batch scan and private table build: Ray vs the local process pool, on the same input.

Every measured run is a separate process (``hashwatch scan run`` for the scan, this script's
``build-one`` for the table build), watched from here: CPU seconds (user + system) and RSS of
the run's driver, of its workers (pool processes or Ray workers) and of the engine's own
processes (forkserver; Ray's GCS, raylet, agents), sampled every 0.25 s with psutil, plus the
CPU the rest of the machine used meanwhile (everyone else) and the load average around it.

Scan: per engine and worker count, a one-file manifest first (the **fixed overhead of a run**:
interpreter, imports, index mapping, pool or cluster start), then each set; per-core
throughput = files per CPU-second of the whole run; "marginal" subtracts the one-file run (what
a long scan converges to). Ratios Ray / local and 1 -> 2 workers (CPU-normalised) are printed
at the end, with the byte-for-byte comparison of the two engines' shard files.

Build: the private table at each ``--sizes`` on each engine with the same synthetic list and
the same seed (checked byte-identical); a 1,000-entry build on each engine is its fixed
overhead. Stage times (read, keys, placement, blinding, finish) come from the build's progress
callback, with the CPU of driver and workers in each stage.

    python benchmarks/scan_bench.py prepare ROOT            # data (run with nice -n 19)
    python benchmarks/scan_bench.py scan ROOT               # Ray vs local, 1 and 2 workers
    python benchmarks/scan_bench.py build ROOT --sizes 1000,1000000 --engines ray,local
    python benchmarks/scan_bench.py build-report ROOT       # ratios over every build run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

CORPUS = Path(os.environ.get("HASHWATCH_CORPUS", REPO.parent / "shared" / "corpus"))
HASHWATCH = Path(sys.executable).with_name("hashwatch")
ROLES = ("driver", "workers", "engine")


def _role(p: psutil.Process, root: psutil.Process, root_cmd: list[str]) -> str:
    """driver (the run's own process), workers (Ray workers, pool processes) or engine (the
    engine's own processes: forkserver, resource tracker, Ray's GCS/raylet/agents)."""
    if p.pid == root.pid:
        return "driver"
    cmd = p.cmdline()
    text = " ".join(cmd)
    if "ray::" in text or "default_worker.py" in text or "spawn_main" in text:
        return "workers"
    if cmd == root_cmd:  # a forked pool process
        return "workers"
    try:
        if "forkserver" in " ".join(p.parent().cmdline()) and "forkserver" in text:
            return "workers"  # forked by the forkserver: same command line as the server
    except psutil.Error:
        pass
    return "engine"


class RunMeter:
    """Watches a child process and all its descendants until it exits."""

    def __init__(self, proc: subprocess.Popen, every: float = 0.25) -> None:
        self.root = psutil.Process(proc.pid)
        self.root_cmd = self.root.cmdline()
        self.every = every
        self.roles: dict[tuple[int, float], str] = {}
        self.cpu: dict[tuple[int, float], float] = {}
        self.peak = {r: 0 for r in ROLES} | {"total": 0, "one_worker": 0}
        self.series: list[tuple[float, dict[str, float]]] = []  # (time.time(), CPU by role)
        self._stop = threading.Event()
        self.machine0 = psutil.cpu_times()
        self.load0 = os.getloadavg()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def sample(self) -> None:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        rss = {r: 0 for r in ROLES}
        one = 0
        for p in procs:
            try:
                with p.oneshot():
                    key = (p.pid, p.create_time())
                    role = self.roles.get(key)
                    if role is None:
                        role = self.roles[key] = _role(p, self.root, self.root_cmd)
                    t = p.cpu_times()
                    self.cpu[key] = t.user + t.system
                    m = p.memory_info().rss
            except psutil.Error:
                continue
            rss[role] += m
            if role == "workers":
                one = max(one, m)
        for r in ROLES:
            self.peak[r] = max(self.peak[r], rss[r])
        self.peak["total"] = max(self.peak["total"], sum(rss.values()))
        self.peak["one_worker"] = max(self.peak["one_worker"], one)
        self.series.append((time.time(), self.by_role()))

    def by_role(self) -> dict[str, float]:
        out = {r: 0.0 for r in ROLES}
        for k, v in self.cpu.items():
            out[self.roles[k]] += v
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every)

    def finish(self) -> dict:
        self._stop.set()
        self._t.join()
        m1 = psutil.cpu_times()
        busy = sum(getattr(m1, f) - getattr(self.machine0, f) for f in
                   ("user", "nice", "system", "irq", "softirq", "steal"))
        cpu = self.by_role()
        return {"cpu_s": sum(cpu.values()), **{f"cpu_{r}_s": v for r, v in cpu.items()},
                "others_cpu_s": max(0.0, busy - sum(cpu.values())),
                "peak_rss_mb": {k: v / 2**20 for k, v in self.peak.items()},
                "load_before": self.load0, "load_after": os.getloadavg()}

    def cpu_at(self, t: float) -> dict[str, float]:
        """CPU by role at wall-clock time ``t`` (the last sample before it)."""
        best = self.series[0][1] if self.series else {r: 0.0 for r in ROLES}
        for ts, v in self.series:
            if ts > t:
                break
            best = v
        return best


def measured(cmd: list[str], env: dict | None = None) -> tuple[dict, str]:
    """Run ``cmd``, watched; returns (figures, its stdout). Raises if it fails."""
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    meter = RunMeter(proc)
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    fig = meter.finish()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    # cross-check: CPU of the child and of every descendant reaped by its parent (exact for
    # a process pool; misses Ray processes not waited for)
    fig["cpu_rusage_s"] = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed ({proc.returncode}):\n{err[-3000:]}")
    fig["wall_s"] = wall
    fig["_meter"] = meter
    return fig, out


# -- data ------------------------------------------------------------------------------------


def prepare(root: Path, n_big: int, n_corpus: int, big_copies: int, corpus_copies: int
            ) -> None:
    """12-MP JPEGs (Kodak photographs upscaled to 4000x3000 with grain), corpus photographs,
    their hard-linked copies (the measured sets: ``jpeg12mp-x``, ``corpus-x``, so page cache
    is alike for every run), a list of known images (the Kodak set) in root/hw.db with its
    saved indexes up to date, and the manifests."""
    from PIL import Image

    from hashwatch.cli import app
    from hashwatch.scan import build_manifest

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
    for name, copies in (("jpeg12mp", big_copies), ("corpus", corpus_copies)):
        x = root / f"{name}-x"
        x.mkdir(exist_ok=True)
        for c in range(copies):
            for f in sorted((root / name).iterdir()):
                dst = x / f"c{c}-{f.name}"
                if not dst.exists():
                    os.link(f, dst)
    db = root / "hw.db"
    if not db.exists():
        for args in (["lists", "create", "known", "--scheme", "uk"],
                     ["lists", "add", "known", str(CORPUS / "kodak24"), "--category", "uk:A"]):
            app(args + ["--db", str(db)], standalone_mode=False)
    from hashwatch import matchwork

    # saved PDQ and keypoint indexes current before any measured run (a run only checks them)
    matchwork.prepare(matchwork.MatchSpec(db=str(db), index_path=str(db) + ".pdq.idx"))
    for name in ("jpeg12mp-x", "corpus-x"):
        man = root / f"manifest-{name}"
        if not man.exists():
            build_manifest(man, [root / name], shard_size=100)
    one = root / "manifest-one"
    if not one.exists():
        build_manifest(one, [sorted(small.iterdir())[0]])
    print(f"prepared {root}: {n_big} 12-MP JPEGs x {big_copies}, {len(pics)} corpus "
          f"photographs x {corpus_copies}, list of {len(kodak)} known images")


# -- scan ------------------------------------------------------------------------------------


def scan_run(root: Path, manifest: str, engine: str, workers: int, tag: str,
             batch: int) -> dict:
    out = root / "runs" / tag
    shutil.rmtree(out, ignore_errors=True)
    cmd = [str(HASHWATCH), "scan", "run", str(root / f"manifest-{manifest}"), "--out", str(out),
           "--engine", engine, "--workers", str(workers), "--batch-size", str(batch),
           "--db", str(root / "hw.db"), "--index-path", str(root / "hw.db") + ".pdq.idx"]
    fig, _ = measured(cmd)
    fig.pop("_meter")
    summary = json.loads((out / "summary.json").read_text())
    files = summary["files"]
    r = {"manifest": manifest, "engine": engine, "workers": workers, "files": files,
         **fig, "files_per_cpu_s": files / fig["cpu_s"],
         "files_per_wall_s": files / fig["wall_s"], "states": summary["states"]}
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}),
          flush=True)
    return r


def same_shards(a: Path, b: Path) -> bool:
    na = sorted(p.name for p in (a / "shards").glob("*.parquet"))
    nb = sorted(p.name for p in (b / "shards").glob("*.parquet"))
    return bool(na) and na == nb and all(
        (a / "shards" / n).read_bytes() == (b / "shards" / n).read_bytes() for n in na)


def scan(root: Path, manifests: tuple[str, ...], batch: int) -> None:
    print(f"load before: {os.getloadavg()}  {time.strftime('%H:%M:%S UTC', time.gmtime())}")
    results: list[dict] = []
    one: dict[tuple[str, int], dict] = {}
    for engine in ("local", "ray"):
        for workers in (1, 2):
            o = scan_run(root, "one", engine, workers, f"one-{engine}-{workers}", batch)
            one[engine, workers] = o
            results.append(o)
            for manifest in manifests:
                r = scan_run(root, manifest, engine, workers, f"{manifest}-{engine}-{workers}",
                             batch)
                r["marginal_files_per_cpu_s"] = (r["files"] - 1) / (r["cpu_s"] - o["cpu_s"])
                r["marginal_files_per_wall_s"] = (r["files"] - 1) / (r["wall_s"] - o["wall_s"])
                results.append(r)
    print(f"load after: {os.getloadavg()}  {time.strftime('%H:%M:%S UTC', time.gmtime())}")
    (root / "scan-results.json").write_text(json.dumps(results, indent=1))
    report_scan(root, results, manifests)


def report_scan(root: Path, results: list[dict], manifests: tuple[str, ...]) -> None:
    print("\nset         engine workers files  wall s  CPU s (driver/workers/engine)  "
          "others CPU s  load  files/CPU-s  marginal  peak RSS MB (driver/workers/engine)")
    for r in results:
        rss = r["peak_rss_mb"]
        print(f"{r['manifest']:11} {r['engine']:6} {r['workers']:7} {r['files']:5} "
              f"{r['wall_s']:7.1f} {r['cpu_s']:6.1f} ({r['cpu_driver_s']:.1f}/"
              f"{r['cpu_workers_s']:.1f}/{r['cpu_engine_s']:.1f}) {r['others_cpu_s']:12.1f} "
              f"{r['load_before'][0]:5.1f} {r['files_per_cpu_s']:12.2f} "
              f"{r.get('marginal_files_per_cpu_s', float('nan')):9.2f}  "
              f"{rss['total']:.0f} ({rss['driver']:.0f}/{rss['workers']:.0f}/"
              f"{rss['engine']:.0f})")
    by = {(r["manifest"], r["engine"], r["workers"]): r for r in results}
    print("\nfixed overhead of a run (one-file manifest): CPU s, wall s")
    for e in ("local", "ray"):
        for w in (1, 2):
            o = by.get(("one", e, w))
            if o:
                print(f"  {e:5} {w} worker(s): {o['cpu_s']:.2f} CPU-s (driver "
                      f"{o['cpu_driver_s']:.2f}, workers {o['cpu_workers_s']:.2f}, engine "
                      f"{o['cpu_engine_s']:.2f}), {o['wall_s']:.1f} s wall, peak RSS "
                      f"{o['peak_rss_mb']['total']:.0f} MB")
    for m in manifests:
        def rate(e: str, w: int, m: str = m) -> float:
            return by[m, e, w]["marginal_files_per_cpu_s"]
        print(f"\n{m}: marginal files per CPU-second")
        for w in (1, 2):
            print(f"  Ray / local per core, {w} worker(s): {rate('ray', w):.2f} / "
                  f"{rate('local', w):.2f} = {rate('ray', w) / rate('local', w):.3f}")
        for e in ("local", "ray"):
            print(f"  {e}: 1 -> 2 workers CPU-normalised (2 x rate@2 / rate@1): "
                  f"{2 * rate(e, 2) / rate(e, 1):.2f}x; wall {by[m, e, 1]['wall_s']:.1f} -> "
                  f"{by[m, e, 2]['wall_s']:.1f} s")
        for w in (1, 2):
            same = same_shards(root / "runs" / f"{m}-local-{w}", root / "runs" / f"{m}-ray-{w}")
            print(f"  {w} worker(s): ray and local shard files byte-identical: {same}")


# -- private table build ---------------------------------------------------------------------


def build_one(root: Path, entries: int, engine: str, workers: int) -> None:
    """One build, in this process (run by ``build`` as a watched child). Prints one JSON line:
    stage marks (wall-clock time, driver CPU) and the table's size."""
    marks: list[tuple[str, float, float]] = []

    def mark(name: str) -> None:
        marks.append((name, time.time(), time.process_time()))

    mark("start")
    from hashwatch.private.keys import DEFAULT_DESIGN
    from hashwatch.private.publish import Publisher

    rng = np.random.default_rng(11)
    raw = rng.integers(0, 256, size=(entries, 32), dtype=np.uint8)
    seed = bytes(range(32))
    out = root / f"table-{engine}-{entries}"
    shutil.rmtree(out, ignore_errors=True)
    mapper = None
    if engine == "ray":
        from hashwatch.distributed import ray_connect, ray_ordered_map

        ray_connect(None, workers)
        mapper = ray_ordered_map
    mark("engine_ready")
    seen: set[str] = set()

    def listed():
        for i, r in enumerate(raw):
            yield i, bytes(r).hex()
        mark("list_read")

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in seen:
            seen.add(stage)
            mark(f"{stage}_first")
        if done == total:
            mark(f"{stage}_done")

    pub = Publisher.create(out, listed, design=DEFAULT_DESIGN, workers=workers, mapper=mapper,
                           seed=seed, progress=progress)
    chunk = pub.table().chunks[0]
    mark("built")
    if engine == "ray":
        import ray

        ray.shutdown()
    mark("end")
    print(json.dumps({"entries": entries, "keys": chunk.geometry.n_keys,
                      "slots": chunk.geometry.array_length, "table_bytes": chunk.file_bytes,
                      "marks": marks}))


# build stages (hashwatch.private.publish / build progress marks): keys per entry, each key's
# 3 cells (the peeling follows "cells" and ends when blinding starts), blinding, filler
# points, the round-by-round solve, then the chain link, signature and files
STAGES = (("engine start", "start", "engine_ready"), ("read + validate list", "engine_ready",
          "list_read"), ("keys", "list_read", "keys_done"), ("cells", "keys_done", "cells_done"),
          ("peel", "cells_done", "blind_first"), ("blinding", "blind_first", "blind_done"),
          ("filler", "blind_done", "fill_done"), ("solve", "fill_done", "solve_done"),
          ("link, signature, files", "solve_done", "built"), ("engine shutdown", "built", "end"))


def build(root: Path, sizes: list[int], engines: list[str], workers: int) -> None:
    res_path = root / "build-results.jsonl"
    for n in sizes:
        for engine in engines:
            print(f"{time.strftime('%H:%M:%S UTC', time.gmtime())} build {n:,} on {engine}, "
                  f"load {os.getloadavg()}", flush=True)
            fig, out = measured([sys.executable, __file__, "build-one", str(root), "--entries",
                                 str(n), "--engine", engine, "--workers", str(workers)])
            meter = fig.pop("_meter")
            info = json.loads(out.strip().splitlines()[-1])
            t = {name: (ts, c) for name, ts, c in info["marks"]}
            stages = []
            for name, a, b in STAGES:
                if a in t and b in t:
                    ca, cb = meter.cpu_at(t[a][0]), meter.cpu_at(t[b][0])
                    stages.append({"stage": name, "wall_s": t[b][0] - t[a][0],
                                   "driver_cpu_s": t[b][1] - t[a][1],
                                   "workers_cpu_s": cb["workers"] - ca["workers"],
                                   "engine_cpu_s": cb["engine"] - ca["engine"]})
            table = root / f"table-{engine}-{n}" / "chunk-e0000-0000.bin"
            digest = hashlib.sha256(table.read_bytes()).hexdigest()
            r = {"entries": n, "engine": engine, "workers": workers, **fig,
                 "keys": info["keys"], "slots": info["slots"], "table_sha256": digest,
                 "stages": stages, "utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
            with open(res_path, "a") as f:
                f.write(json.dumps(r) + "\n")
            print(json.dumps({k: v for k, v in r.items() if k != "stages"}), flush=True)
            for s in stages:
                print(f"   {s['stage']:26} wall {s['wall_s']:8.1f} s  driver CPU "
                      f"{s['driver_cpu_s']:7.1f} s  workers CPU {s['workers_cpu_s']:7.1f} s  "
                      f"engine CPU {s['engine_cpu_s']:6.1f} s", flush=True)
    build_report(root)


def build_report(root: Path) -> None:
    """Latest run per (entries, engine): figures, byte-identity, Ray / local, marginal rates
    (the 1,000-entry run of the same engine subtracted)."""
    runs: dict[tuple[int, str], dict] = {}
    for line in (root / "build-results.jsonl").read_text().splitlines():
        r = json.loads(line)
        runs[r["entries"], r["engine"]] = r
    print("\nentries    engine  wall s  CPU s (driver/workers/engine)  others CPU s  load "
          "before/after  peak RSS MB total (driver/one worker/workers/engine)")
    for (n, e), r in sorted(runs.items()):
        p = r["peak_rss_mb"]
        print(f"{n:>10,} {e:6} {r['wall_s']:7.1f} {r['cpu_s']:7.1f} ({r['cpu_driver_s']:.1f}/"
              f"{r['cpu_workers_s']:.1f}/{r['cpu_engine_s']:.1f}) {r['others_cpu_s']:9.1f}  "
              f"{r['load_before'][0]:.1f}/{r['load_after'][0]:.1f}  {p['total']:.0f} "
              f"({p['driver']:.0f}/{p['one_worker']:.0f}/{p['workers']:.0f}/{p['engine']:.0f})"
              f"  {r['utc']}")
    for n in sorted({n for n, _ in runs}):
        if (n, "ray") in runs and (n, "local") in runs:
            a, b = runs[n, "ray"], runs[n, "local"]
            print(f"{n:,}: chunk-e0000-0000.bin byte-identical on both engines: "
                  f"{a['table_sha256'] == b['table_sha256']}; Ray / local CPU "
                  f"{a['cpu_s'] / b['cpu_s']:.3f}, wall {a['wall_s'] / b['wall_s']:.3f}")
    base = min(n for n, _ in runs)
    for (n, e), r in sorted(runs.items()):
        if n == base or (base, e) not in runs:
            continue
        o = runs[base, e]
        marg = (r["cpu_s"] - o["cpu_s"]) / (n - base) * 1e3
        print(f"{n:,} {e}: marginal CPU per entry (the {base:,}-entry run subtracted) "
              f"{marg:.4f} ms; fixed {o['cpu_s']:.1f} CPU-s, {o['wall_s']:.1f} s wall")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["prepare", "scan", "build", "build-one", "build-report"])
    ap.add_argument("root", type=Path)
    ap.add_argument("--big", type=int, default=24, help="prepare: 12-MP JPEGs")
    ap.add_argument("--big-copies", type=int, default=10)
    ap.add_argument("--corpus", type=int, default=400, help="prepare: corpus photographs")
    ap.add_argument("--corpus-copies", type=int, default=2)
    ap.add_argument("--manifests", default="jpeg12mp-x,corpus-x", help="scan: which sets")
    ap.add_argument("--batch-size", type=int, default=16, help="scan: files per task")
    ap.add_argument("--sizes", default="1000,1000000", help="build: entries, comma-separated")
    ap.add_argument("--engines", default="ray,local", help="build: engines, in this order")
    ap.add_argument("--entries", type=int, default=1_000_000, help="build-one")
    ap.add_argument("--engine", default="local", help="build-one")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    a.root.mkdir(parents=True, exist_ok=True)
    if a.what == "prepare":
        prepare(a.root, a.big, a.corpus, a.big_copies, a.corpus_copies)
    elif a.what == "scan":
        scan(a.root, tuple(a.manifests.split(",")), a.batch_size)
    elif a.what == "build":
        build(a.root, [int(x) for x in a.sizes.split(",")], a.engines.split(","), a.workers)
    elif a.what == "build-one":
        build_one(a.root, a.entries, a.engine, a.workers)
    else:
        build_report(a.root)


if __name__ == "__main__":
    main()
