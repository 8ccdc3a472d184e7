"""Engines that run scan batches: a local process pool (default) and Ray.

Both take batches of (file_id, path) items and give back each batch's rows through the one
batch function :func:`hashwatch.scan.work.scan_batch`; results arrive in completion order and
the driver puts them back in manifest order. Every engine is at-least-once (a retried batch
may run twice); exactly-once output is the driver's job (whole shards, renamed into place).

A batch whose worker process dies (a decoder crashing on a hostile file, a killed process,
a lost node) is retried; when it keeps failing it is split into single files, and only a
file that kills its worker every time gets an error row (``crashed_row``).
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Protocol

from .work import Item, Row, ScanConfig, crashed_row, scan_batch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Batch:
    """``items`` of shard ``shard``, starting at position ``start`` within it."""

    shard: int
    start: int
    items: list[Item]
    nbytes: int = 0

    def split(self) -> list[Batch]:
        return [Batch(self.shard, self.start + j, [it]) for j, it in enumerate(self.items)]


class Engine(Protocol):
    name: str
    workers: int

    def run(self, config: ScanConfig, batches: Iterator[Batch]
            ) -> Iterator[tuple[Batch, list[Row]]]: ...

    def close(self) -> None: ...


def _crashed(b: Batch) -> list[Row]:
    return [crashed_row(fid, path) for fid, path in b.items]


# -- local process pool ----------------------------------------------------------------------


def _mp_context() -> Any:
    from hashwatch.hashing import _default_context

    return _default_context()


class LocalEngine:
    """``workers`` processes on this machine (1: in this process)."""

    name = "local"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)

    def close(self) -> None:
        pass

    def run(self, config: ScanConfig, batches: Iterator[Batch]
            ) -> Iterator[tuple[Batch, list[Row]]]:
        if self.workers == 1:
            for b in batches:
                yield b, scan_batch(config, b.items)
            return
        ctx = _mp_context()
        window = 2 * self.workers
        queue: deque[Batch] = deque()  # batches to re-run one file at a time
        while True:
            pending: dict[Future[list[Row]], Batch] = {}
            ex = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx)
            broken = False
            try:
                exhausted = False
                while True:
                    while not exhausted and not broken and len(pending) < window:
                        b = next(batches, None)
                        if b is None:
                            exhausted = True
                            continue
                        try:
                            pending[ex.submit(scan_batch, config, b.items)] = b
                        except (BrokenProcessPool, OSError, RuntimeError):
                            # the pool broke between two submissions (a worker died)
                            broken = True
                            queue.append(b)
                    if broken or not pending:
                        queue.extend(pending.values())
                        pending.clear()
                        break
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        b = pending.pop(f)
                        try:
                            yield b, f.result()
                        except BrokenProcessPool:
                            broken = True
                            queue.append(b)
                    if broken:
                        queue.extend(pending.values())
                        pending.clear()
                        break
            finally:
                if broken:
                    # CPython's broken-pool clean-up joins every worker, and a surviving
                    # worker its terminate() missed keeps it waiting forever (seen once under
                    # load: the scan hung in shutdown); kill what is left first
                    for p in list((getattr(ex, "_processes", None) or {}).values()):
                        p.kill()
                ex.shutdown(wait=True, cancel_futures=True)
            if not broken:
                return
            # a worker died: the batches it may have held run again one file per process
            log.warning("a scan worker process died; re-running %d batch(es) one file per "
                        "process", len(queue))
            while queue:
                yield from self._isolated(config, queue.popleft(), ctx)

    def _isolated(self, config: ScanConfig, b: Batch, ctx: Any
                  ) -> Iterator[tuple[Batch, list[Row]]]:
        for one in b.split():
            with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as ex:
                try:
                    rows = ex.submit(scan_batch, config, one.items).result()
                except BrokenProcessPool:
                    log.warning("worker died on %s: error row", one.items[0][1])
                    rows = _crashed(one)
            yield one, rows


# -- Ray -------------------------------------------------------------------------------------

def _ray_scan_batch(config: ScanConfig, items: list[Item]) -> list[Row]:
    return scan_batch(config, items)


class RayEngine:
    """Ray tasks, one CPU each; a dead worker's or lost node's task is retried by Ray
    (``max_retries``), then split into single files by the driver."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None,
                 max_retries: int = 3) -> None:
        from hashwatch.distributed import ray_connect, ray_cpus, ray_token_auth

        self.ray = ray_connect(address, workers)
        self.token_auth = ray_token_auth()
        if self.token_auth is False:
            log.warning("this Ray cluster runs without token authentication: anyone who can "
                        "reach it can run code on it and read the lists' hashes")
        self.workers = ray_cpus()
        self._task = self.ray.remote(num_cpus=1, max_retries=max_retries)(_ray_scan_batch)
        self._owns = address is None

    def close(self) -> None:
        pass  # the connection is process-wide; ray.shutdown() at exit

    def _system_failures(self) -> tuple[type[BaseException], ...]:
        ex = self.ray.exceptions
        return tuple(getattr(ex, n) for n in (
            "WorkerCrashedError", "NodeDiedError", "ObjectLostError", "OutOfMemoryError",
            "OwnerDiedError", "LocalRayletDiedError", "TaskUnschedulableError")
            if hasattr(ex, n))

    def run(self, config: ScanConfig, batches: Iterator[Batch]
            ) -> Iterator[tuple[Batch, list[Row]]]:
        ray = self.ray
        failures = self._system_failures()
        window = 2 * self.workers
        retry: deque[Batch] = deque()
        pending: dict[Any, Batch] = {}
        exhausted = False
        while True:
            while len(pending) < window and (retry or not exhausted):
                b = retry.popleft() if retry else next(batches, None)
                if b is None:
                    exhausted = True
                    continue
                pending[self._task.remote(config, b.items)] = b
            if not pending:
                return
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                b = pending.pop(ref)
                try:
                    rows = ray.get(ref)
                except failures as exc:
                    if len(b.items) > 1:
                        log.warning("batch of shard %d failed after retries (%s); "
                                    "running its files one by one", b.shard,
                                    type(exc).__name__)
                        retry.extend(b.split())
                        continue
                    log.warning("worker died on %s: error row", b.items[0][1])
                    rows = _crashed(b)
                yield b, rows
