"""Where the CPU of a matching run goes: the parent process vs its worker processes, per
command (``hashwatch match``, ``triage``, ``scan``, and ``hashwatch serve`` answering
``/v1/match/upload`` for each file), on a distractor run (corpus photographs
that are not on the list, so every file goes through every tier: hash views, keypoint index,
verification of its nominees), and the CPU seconds per file.

    # once: a list of 100 known corpus photos (robust views + keypoints) and 300 distractors,
    # and the same list made by the older checkout (which cannot open a newer database)
    .venv/bin/python benchmarks/worker_cpu.py prepare /work/scratch/NAME/wcpu
    PYTHONPATH=/path/to/old/checkout/src .venv/bin/python benchmarks/worker_cpu.py prepare \
        /work/scratch/NAME/wcpu --name hw-before.db
    # the measurement: this checkout, and a checkout of the code before (the anchor)
    flock /work/coord/bench.lock .venv/bin/python benchmarks/worker_cpu.py run \
        /work/scratch/NAME/wcpu --before /path/to/old/checkout --workers 2

Each command runs as ``python -m hashwatch.cli`` in a subprocess with ``PYTHONPATH`` set to
the checkout's ``src``; CPU (user + system) of the command's process and of every descendant
is sampled every 0.1 s (psutil; a descendant that exits between two samples loses at most its
last interval). "parent %" is the parent's CPU over the wall time (100% = one core); "workers
%" the same summed over the worker processes. Per-file CPU is everything (parent + workers)
over the files.

``service``: ``hashwatch serve --workers 1`` (one service worker process, the "parent": it
runs the index searches and the verification; its decoding child processes are the
"workers") on the same database, every file uploaded once to ``/v1/match/upload`` by
``--workers`` concurrent clients; CPU counted from the first upload to the last answer.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("HASHWATCH_CORPUS", HERE.parent / "shared" / "corpus"))


def db_path(root: Path, label: str) -> Path:
    """The database a checkout runs on: ``hw-<label>.db`` when prepared (an older checkout
    cannot open a database migrated by newer code), else ``hw.db``."""
    own = root / f"hw-{label}.db"
    return own if own.exists() else root / "hw.db"


def prepare(root: Path, n_known: int, n_distractors: int, name: str = "hw.db") -> None:
    """``root/hw.db`` with a list of ``n_known`` corpus photographs (bsds500-train, added as
    ``hashwatch lists add`` does: views and keypoints) and ``root/evidence`` with
    ``n_distractors`` other photographs (half bsds500-val 481x321, half flowers128)."""
    root.mkdir(parents=True, exist_ok=True)
    known = sorted((CORPUS / "bsds500-train").rglob("*.jpg"))[:n_known]
    kdir = root / "known"
    kdir.mkdir(exist_ok=True)
    for p in known:
        if not (kdir / p.name).exists():
            shutil.copy(p, kdir / p.name)
    ev = root / "evidence"
    ev.mkdir(exist_ok=True)
    pics = sorted((CORPUS / "bsds500-val").rglob("*.jpg"))[: n_distractors // 2]
    pics += sorted((CORPUS / "flowers128").rglob("*.jpg"))[: n_distractors - len(pics)]
    for p in pics:
        dst = ev / f"{p.parent.name}-{p.name}"
        if not dst.exists():
            shutil.copy(p, dst)
    db = root / name
    if not db.exists():
        from hashwatch.cli import app

        for args in (["lists", "create", "known", "--scheme", "uk"],
                     ["lists", "add", "known", str(kdir), "--category", "uk:A"]):
            app(args + ["--db", str(db)], standalone_mode=False)
    print(f"prepared {root}: {len(known)} known, {len(pics)} distractors")


class Meter:
    """CPU seconds of one process (the command) and of its descendants, sampled."""

    def __init__(self, proc: psutil.Process, every: float = 0.1) -> None:
        self.proc = proc
        self.every = every
        self.parent = 0.0
        self.children: dict[tuple[int, float], float] = {}
        self.peak_rss = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def sample(self) -> None:
        rss = 0
        try:
            with self.proc.oneshot():
                t = self.proc.cpu_times()
                self.parent = t.user + t.system
                rss += self.proc.memory_info().rss
            kids = self.proc.children(recursive=True)
        except psutil.Error:
            return
        for p in kids:
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    self.children[(p.pid, p.create_time())] = t.user + t.system
                    rss += p.memory_info().rss
            except psutil.Error:
                pass
        self.peak_rss = max(self.peak_rss, rss)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        self._t.join()


def run_cmd(src: Path, args: list[str], cwd: Path) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(src / "src"))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(var, None)  # as a user runs it
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "hashwatch.cli", *args], cwd=cwd, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ps = psutil.Process(p.pid)
    m = Meter(ps)
    # the parent's own figure must be read before it is reaped
    while p.poll() is None:
        time.sleep(0.05)
        try:
            m.sample()
        except psutil.Error:
            break
    m.stop()
    wall = time.perf_counter() - t0
    err = p.stderr.read().decode() if p.stderr else ""
    if p.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({p.returncode}): {err[-2000:]}")
    workers = sum(m.children.values())
    return {"wall": wall, "parent": m.parent, "workers": workers,
            "peak_rss_mb": m.peak_rss / 2**20}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_service(src: Path, root: Path, clients: int, db: str) -> dict[str, float]:
    """``hashwatch serve`` on ``root/hw.db``: every evidence file uploaded once."""
    import concurrent.futures
    import urllib.request
    import uuid

    env = dict(os.environ, PYTHONPATH=str(src / "src"))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(var, None)
    key = subprocess.run([sys.executable, "-m", "hashwatch.cli", "keys", "create",
                          f"wcpu-{uuid.uuid4().hex[:8]}", "--scopes", "hash,match", "--db", db],
                         env=env, capture_output=True, text=True, check=True).stdout.strip()
    port = _free_port()
    p = subprocess.Popen([sys.executable, "-m", "hashwatch.cli", "serve", "--db", db, "--port",
                          str(port), "--workers", "1", "--log-level", "warning"], cwd=root,
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:  # ready: the indexes are loaded
            try:
                with urllib.request.urlopen(base + "/v1/health/ready", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if p.poll() is not None or time.time() > deadline:
                raise RuntimeError("serve did not become ready: "
                                   + (p.stderr.read().decode()[-2000:] if p.stderr else ""))
            time.sleep(0.5)
        ps = psutil.Process(p.pid)
        m = Meter(ps)
        m.sample()
        parent0, kids0 = m.parent, dict(m.children)
        files = sorted((root / "evidence").iterdir())

        def upload(path: Path) -> int:
            boundary = uuid.uuid4().hex
            body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                    f"filename=\"{path.name}\"\r\nContent-Type: application/octet-stream"
                    f"\r\n\r\n").encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
            req = urllib.request.Request(base + "/v1/match/upload", data=body, headers={
                "Authorization": f"Bearer {key}",
                "Content-Type": f"multipart/form-data; boundary={boundary}"})
            with urllib.request.urlopen(req, timeout=120) as r:
                r.read()
                return r.status

        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            codes = list(pool.map(upload, files))
        wall = time.perf_counter() - t0
        m.sample()
        m.stop()
        if any(c != 200 for c in codes):
            raise RuntimeError(f"uploads answered {sorted(set(codes))}")
        workers = sum(v - kids0.get(k, 0.0) for k, v in m.children.items())
        return {"wall": wall, "parent": m.parent - parent0, "workers": workers,
                "peak_rss_mb": m.peak_rss / 2**20}
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def commands(root: Path, tag: str, workers: int) -> dict[str, list[str]]:
    db = str(db_path(root, tag))
    ev = str(root / "evidence")
    out = root / "runs" / tag
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    return {
        "match": ["match", ev, "--db", db, "--workers", str(workers),
                  "--out", str(out / "match.jsonl")],
        "triage": ["triage", ev, "--case", f"W-{tag}", "--out", str(out / "case"), "--db", db,
                   "--workers", str(workers), "--no-pdf"],
    }


def _scan_args(src: Path, root: Path, tag: str, workers: int) -> list[str] | None:
    """`hashwatch scan` takes a manifest: build it with that checkout's code."""
    man = root / "runs" / tag / "manifest"
    env = dict(os.environ, PYTHONPATH=str(src / "src"))
    code = ("import sys; from hashwatch.scan import build_manifest; "
            "build_manifest(sys.argv[1], [sys.argv[2]], shard_size=50)")
    r = subprocess.run([sys.executable, "-c", code, str(man), str(root / "evidence")],
                       env=env, capture_output=True, text=True)
    if r.returncode != 0:
        return None
    return ["scan", "run", str(man), "--out", str(root / "runs" / tag / "scan"), "--db",
            str(db_path(root, tag)), "--workers", str(workers)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("root", type=Path)
    p.add_argument("--known", type=int, default=100)
    p.add_argument("--distractors", type=int, default=300)
    p.add_argument("--name", default="hw.db",
                   help="database file; hw-before.db prepared with PYTHONPATH set to the "
                        "older checkout's src is what that checkout runs on")
    r = sub.add_parser("run")
    r.add_argument("root", type=Path)
    r.add_argument("--before", type=Path, default=None,
                   help="checkout of the code before (the anchor)")
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--commands", default="match,triage,scan,service")
    r.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    if a.cmd == "prepare":
        prepare(a.root, a.known, a.distractors, a.name)
        return 0
    n_files = sum(1 for _ in (a.root / "evidence").iterdir())
    trees = ([("before", a.before)] if a.before else []) + [("after", HERE)]
    results: dict[str, dict[str, dict[str, float]]] = {}
    load0 = os.getloadavg()
    for label, tree in trees:
        cmds = commands(a.root, label, a.workers)
        scan = _scan_args(tree, a.root, label, a.workers)
        if scan:
            cmds["scan"] = scan
        else:
            cmds.pop("scan")
        for name in a.commands.split(","):
            if name == "service":
                res = run_service(tree, a.root, a.workers, str(db_path(a.root, label)))
                results.setdefault(name, {})[label] = res
                print(f"{label:6s} {name:7s} wall {res['wall']:6.1f} s  parent "
                      f"{res['parent']:6.1f} CPU-s  workers {res['workers']:6.1f} CPU-s",
                      file=sys.stderr, flush=True)
                continue
            if name not in cmds:
                continue
            # the index beside the database is brought up to date by the first command
            res = run_cmd(tree, cmds[name], a.root)
            results.setdefault(name, {})[label] = res
            print(f"{label:6s} {name:6s} wall {res['wall']:6.1f} s  parent {res['parent']:6.1f}"
                  f" CPU-s  workers {res['workers']:6.1f} CPU-s", file=sys.stderr, flush=True)
    load1 = os.getloadavg()
    print(f"\n{n_files} distractor files, --workers {a.workers}; load average "
          f"{load0[0]:.1f} before, {load1[0]:.1f} after\n")
    print("| command | code | wall s | parent CPU-s | workers CPU-s | parent % | workers % | "
          "CPU-s per file | peak RSS MB (all) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, by in results.items():
        for label, x in by.items():
            tot = x["parent"] + x["workers"]
            print(f"| {name} | {label} | {x['wall']:.1f} | {x['parent']:.1f} | "
                  f"{x['workers']:.1f} | {100 * x['parent'] / x['wall']:.0f} | "
                  f"{100 * x['workers'] / x['wall']:.0f} | {tot / n_files:.3f} | "
                  f"{x['peak_rss_mb']:.0f} |")
        if len(by) == 2:
            b, f = by["before"], by["after"]
            ratio = (b["parent"] + b["workers"]) / max(f["parent"] + f["workers"], 1e-9)
            print(f"| {name} | before/after CPU per file | | | | | | **{ratio:.2f}x** | |")
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
