"""Adding a month of known images: keypoint sets added to a saved index while a second
thread keeps searching it (:func:`add_month`), and the rate at which known images' features
are computed (:func:`feature_rate`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from hashwatch.robust.keypoint_index import KeypointIndex
from hashwatch.robust.local import LocalFeatures
from hashwatch.scalestudy.measure import _folder_bytes, _rss_mib, pct
from hashwatch.scalestudy.synthetic import SYNTH_ID0, recombine


def add_month(index_dir: Path, set_dir: Path, n_real: int, n_add: int, queries: Sequence[
        LocalFeatures], *, chunk: int = 5_000, save_every: int = 50_000, seed: int = 1,
              pause: float = 0.05, say: Callable[[str], None] = lambda s: None) -> dict:
    """Add ``n_add`` keypoint sets to the index saved in ``index_dir`` while a second thread
    keeps searching it, as a service worker would while ``lists add`` runs: the sets are
    recombined (:func:`recombine`) from the first ``n_real`` generated images, added
    ``chunk`` at a time, and the index is saved incrementally every ``save_every`` (new
    segments and appended records only). Returns the writer's wall and CPU seconds (records
    encoding, word assignment, sealing, merging, saving), the searcher's latencies during the
    additions (one search every ``pause`` seconds), and whether any search failed or saw fewer
    sets than were added before it."""
    import threading

    from hashwatch.scaleset import iter_shards

    kp = KeypointIndex.load(index_dir, mmap=True)
    n0 = kp.n_slots
    shards = list(iter_shards(set_dir, n_real))
    sizes = np.array([len(sh) for sh in shards])
    starts = np.r_[0, np.cumsum(sizes)]

    def real(i: int) -> LocalFeatures:
        s = int(np.searchsorted(starts, i, side="right") - 1)
        return shards[s].local(int(i - starts[s]))

    rng = np.random.default_rng([seed, 0xADD])
    stop = threading.Event()
    lat: list[float] = []
    errors: list[str] = []
    regress = [0]

    def searcher() -> None:
        i = 0
        seen = 0
        while not stop.is_set():
            q = queries[i % len(queries)]
            i += 1
            t = time.perf_counter()
            try:
                now = kp.n_slots
                kp.search(q, top=8)
                if now < seen:
                    regress[0] += 1
                seen = now
            except Exception as exc:  # noqa: BLE001 - counted and reported, never hidden
                errors.append(repr(exc))
            lat.append(time.perf_counter() - t)
            stop.wait(pause)  # a steady query stream, not a busy loop holding the GIL

    th = threading.Thread(target=searcher, daemon=True)
    th.start()
    t0, c0 = time.perf_counter(), time.thread_time()
    done = 0
    saves = 0
    while done < n_add:
        m = min(chunk, n_add - done)
        pairs = rng.integers(0, n_real, size=(m, 2))
        base = 2 * SYNTH_ID0 + done
        kp.add_many((base + j, recombine(real(a), real(b), rng))
                    for j, (a, b) in enumerate(pairs))
        done += m
        if done % save_every == 0 or done == n_add:
            if not kp.save(index_dir):
                raise RuntimeError(f"{index_dir} was saved by another process meanwhile")
            saves += 1
            say(f"  added {done:,}/{n_add:,} ({time.perf_counter() - t0:.0f} s)")
    wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
    stop.set()
    th.join()
    return {"n_before": n0, "n_after": kp.n_slots, "n_add": n_add, "wall_s": wall,
            "writer_cpu_s": cpu, "saves": saves, "searches": len(lat),
            "search_p50_ms": 1000 * pct(lat, 50), "search_p99_ms": 1000 * pct(lat, 99),
            "search_max_ms": 1000 * max(lat) if lat else math.nan, "search_errors": errors[:5],
            "n_search_errors": len(errors), "slot_count_regressions": regress[0],
            "index_dir_bytes": _folder_bytes(index_dir), "rss_mib": _rss_mib()}


def _describe_file(path: Path) -> tuple[float, float]:
    """(CPU s to decode, CPU s for every stored signal) of one file, as ``lists add`` does."""
    from hashwatch.evaluate import load_pixels
    from hashwatch.scaleset import describe

    c0 = time.process_time()
    px = load_pixels(path)
    c1 = time.process_time()
    describe(px)
    return c1 - c0, time.process_time() - c1


def feature_rate(paths: Sequence[Path], workers: int = 2) -> dict:
    """Known-image features (decode, PDQ views, ORB keypoints) of ``paths`` on ``workers``
    processes: wall and CPU seconds, per image."""
    from concurrent.futures import ProcessPoolExecutor

    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers) as ex:
        got = list(ex.map(_describe_file, paths, chunksize=16))
    wall = time.perf_counter() - t0
    dec = float(sum(g[0] for g in got))
    feat = float(sum(g[1] for g in got))
    return {"images": len(paths), "workers": workers, "wall_s": wall, "decode_cpu_s": dec,
            "features_cpu_s": feat, "wall_ms_per_image": 1000 * wall / len(paths),
            "cpu_ms_per_image": 1000 * (dec + feat) / len(paths)}
