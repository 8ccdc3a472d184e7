"""Cost and effect of decoding uploads in child processes (hashwatch.service.isolation).

Anchor: the previous behaviour, ``hash_upload`` in the worker's own threads (InlineDecoder).
hashwatch: the same function through a DecodePool (2 children, 20 s deadline, 100 MP budget).

1. Latency per upload, one at a time: a 12-MP JPEG, a 0.4-MP JPEG, a 100-MP one-colour PNG.
2. Eight concurrent 100-MP one-colour PNGs (312 KB-class bombs): wall time and peak RSS of
   the worker plus its decoding children (sampled every 20 ms).

    .venv/bin/python benchmarks/isolation_bench.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil
from PIL import Image

from hashwatch.service.isolation import DecodePool, InlineDecoder
from hashwatch.service.uploads import UploadLimits


def _jpeg(w: int, h: int) -> bytes:
    rng = np.random.default_rng(1)
    small = rng.integers(0, 255, (h // 16, w // 16, 3), dtype=np.uint8)
    im = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _flat_png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (w, h), 77).save(buf, "PNG")
    return buf.getvalue()


def _tree_rss(proc: psutil.Process) -> int:
    total = proc.memory_info().rss
    for c in proc.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += c.memory_info().rss
    return total


def _latency(dec, data: bytes, repeat: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    dec.run(data, "warm", UploadLimits())  # children started, caches warm
    walls, cpus = [], []
    me = psutil.Process()
    for _ in range(repeat):
        c0 = me.cpu_times()
        kids0 = sum(k.cpu_times().user + k.cpu_times().system for k in me.children())
        t0 = time.perf_counter()
        dec.run(data, "x", UploadLimits())
        walls.append(time.perf_counter() - t0)
        c1 = me.cpu_times()
        kids1 = sum(k.cpu_times().user + k.cpu_times().system for k in me.children())
        cpus.append((c1.user + c1.system - c0.user - c0.system) + (kids1 - kids0))
    return statistics.median(walls), statistics.median(cpus)


def _concurrent(dec, data: bytes, n: int) -> tuple[float, int, list[str]]:  # type: ignore[no-untyped-def]
    me = psutil.Process()
    peak = [_tree_rss(me)]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _tree_rss(me))
            time.sleep(0.02)

    th = threading.Thread(target=sample)
    th.start()
    t0 = time.perf_counter()
    outcomes: list[str] = []

    def one(_i: int) -> None:
        try:
            dec.run(data, "bomb", UploadLimits())
            outcomes.append("ok")
        except Exception as exc:
            outcomes.append(type(exc).__name__ + ":" + getattr(exc, "code", ""))

    with ThreadPoolExecutor(n) as ex:
        list(ex.map(one, range(n)))
    wall = time.perf_counter() - t0
    stop.set()
    th.join()
    return wall, peak[0], outcomes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    inputs = {"12MP JPEG": _jpeg(4000, 3000), "0.4MP JPEG": _jpeg(768, 512),
              "100MP flat PNG": _flat_png(10_000, 10_000)}
    print("inputs: " + ", ".join(f"{k} {len(v) / 1024:.0f} KB" for k, v in inputs.items()))
    inline, pool = InlineDecoder(), DecodePool(workers=2, timeout=60)
    print(f"{'upload':16} {'in-process ms':>14} {'isolated ms':>12} {'ratio':>6} "
          f"{'in-proc CPU ms':>15} {'isolated CPU ms':>16}")
    for name, data in inputs.items():
        a_wall, a_cpu = _latency(inline, data, args.repeat)
        b_wall, b_cpu = _latency(pool, data, args.repeat)
        print(f"{name:16} {a_wall * 1e3:14.1f} {b_wall * 1e3:12.1f} {b_wall / a_wall:6.2f} "
              f"{a_cpu * 1e3:15.1f} {b_cpu * 1e3:16.1f}")
    pool.close()
    bomb = inputs["100MP flat PNG"]
    for label, dec in (("in-process (anchor)", InlineDecoder()),
                       ("isolated, 100 MP budget", DecodePool(workers=2, timeout=60))):
        wall, peak, outcomes = _concurrent(dec, bomb, 8)
        dec.close()
        print(f"8 concurrent 100MP PNGs, {label}: {wall:.1f} s, peak RSS (worker + "
              f"decoders) {peak / 2**20:.0f} MiB, outcomes {sorted(set(outcomes))}")


if __name__ == "__main__":
    main()
