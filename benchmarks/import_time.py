"""Start-up cost of the package and the CLI: ``import hashwatch``, ``hashwatch --help`` and
reaching the public API (``hashwatch.Matcher``), beside a bare interpreter start (the
anchor: what no Python program can go below), per source tree.

Each command runs ``--runs`` times in a fresh process; printed: the median wall time, the
median CPU time (user + system of the child, from ``wait4``), the ratio of CPU time to the
bare interpreter's, and the child's peak RSS (the largest of the runs). Give several
``--src`` to compare checkouts in one run (each put first on ``PYTHONPATH`` of this venv's
interpreter), so both see the same machine load.

    python benchmarks/import_time.py --src ../base/src --src src --runs 15
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {
    "python -c pass (anchor)": ["{py}", "-c", "pass"],
    "import hashwatch": ["{py}", "-c", "import hashwatch"],
    "hashwatch --help": ["{bin}/hashwatch", "--help"],
    "import hashwatch; hashwatch.Matcher": ["{py}", "-c", "import hashwatch; hashwatch.Matcher"],
}


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """(wall seconds, child CPU seconds, child peak RSS in MiB) of one run; raises if the
    command fails."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _pid, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.read().decode()[-500:]}")
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024


def _has_api(py: str, env: dict[str, str]) -> bool:
    code = "import hashwatch, sys; sys.exit(0 if hasattr(hashwatch, '__all__') else 1)"
    return subprocess.run([py, "-c", code], env=env, capture_output=True).returncode == 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venv", type=Path, default=Path(".venv"),
                    help="virtual environment whose interpreter and packages are used")
    ap.add_argument("--src", action="append", type=Path,
                    help="source tree(s) to measure, first on PYTHONPATH (default: the venv's)")
    ap.add_argument("--runs", type=int, default=21)
    args = ap.parse_args()
    py, bindir = str(args.venv / "bin" / "python"), str(args.venv / "bin")
    print(f"{'src':<28} {'command':<38} {'wall ms':>8} {'CPU ms':>8} {'x anchor':>9} "
          f"{'RSS MiB':>8}")
    for src in args.src or [None]:
        env = dict(os.environ)
        if src is not None:
            env["PYTHONPATH"] = str(src.resolve())
        venv = src or args.venv
        anchor_cpu = None
        for name, template in COMMANDS.items():
            argv = [a.format(py=py, bin=bindir) for a in template]
            if src is not None and "hashwatch.Matcher" in name and not _has_api(py, env):
                continue  # a tree without the public API
            run_once(argv, env)  # warm the page cache
            walls, cpus, rss = zip(*(run_once(argv, env) for _ in range(args.runs)),
                                   strict=True)
            wall, cpu = statistics.median(walls) * 1000, statistics.median(cpus) * 1000
            if anchor_cpu is None:
                anchor_cpu = cpu
            print(f"{str(venv):<28} {name:<38} {wall:8.1f} {cpu:8.1f} "
                  f"{cpu / anchor_cpu:9.2f} {max(rss):8.1f}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
