"""Group-committed audit writes for the hot lookup paths.

Every match lookup is audited before it is answered. One transaction per request puts a
commit (an fsync on PostgreSQL with default durability, a WAL write on SQLite) on every
lookup; here requests queue their row and wait while one writer thread commits everything
queued so far in a single transaction. The row is durable before the caller answers, as
before, but N concurrent lookups cost one commit instead of N.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
import time
from typing import Any

from hashwatch.service.ratelimit import RateLimiter
from hashwatch.store import Store
from hashwatch.store.records import utcnow
from hashwatch.store.schema import audit_log

log = logging.getLogger(__name__)


class AuditUnavailable(Exception):
    """The audit row could not be written: the lookup must not be answered."""


def _settle(fut: asyncio.Future[None], err: Exception | None) -> None:
    if fut.done():  # the waiter timed out already
        return
    if err is None:
        fut.set_result(None)
    else:
        fut.set_exception(AuditUnavailable(f"audit write failed: {err}"))


class AuditWriter:
    """Queue audit rows and commit them in groups (see the module docstring)."""

    def __init__(self, store: Store, *, max_batch: int = 1000, timeout: float = 30.0) -> None:
        self.store = store
        self.max_batch = max_batch
        self.timeout = timeout
        self._q: queue.SimpleQueue[list[Any] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="hashwatch-audit", daemon=True)
        self._thread.start()

    def write(self, actor: str, action: str, detail: dict[str, Any],
              list_id: int | None = None) -> None:
        """Queue one row and return once it is committed (raises AuditUnavailable)."""
        row = {"at": utcnow(), "actor": actor, "action": action, "list_id": list_id,
               "detail": json.dumps(detail, sort_keys=True, ensure_ascii=False)}
        item: list[Any] = [row, threading.Event(), None]
        self._q.put(item)
        if not item[1].wait(self.timeout):
            raise AuditUnavailable("audit write timed out")
        if item[2] is not None:
            raise AuditUnavailable(f"audit write failed: {item[2]}")

    async def write_async(self, actor: str, action: str, detail: dict[str, Any],
                          list_id: int | None = None) -> None:
        """As :meth:`write`, awaiting the commit without holding a thread."""
        row = {"at": utcnow(), "actor": actor, "action": action, "list_id": list_id,
               "detail": json.dumps(detail, sort_keys=True, ensure_ascii=False)}
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._q.put([row, None, None, (loop, fut)])
        try:
            await asyncio.wait_for(fut, self.timeout)
        except TimeoutError:
            raise AuditUnavailable("audit write timed out") from None

    def enqueue(self, actor: str, action: str, detail: dict[str, Any],
                list_id: int | None = None) -> None:
        """Queue one row without waiting for its commit (records that must not hold up
        the request that caused them, such as failed authentication)."""
        row = {"at": utcnow(), "actor": actor, "action": action, "list_id": list_id,
               "detail": json.dumps(detail, sort_keys=True, ensure_ascii=False)}
        self._q.put([row, None, None, None])

    def close(self) -> None:
        self._q.put(None)
        self._thread.join(timeout=self.timeout)

    def _run(self) -> None:
        while True:
            first = self._q.get()
            if first is None:
                return
            batch, stop = [first], False
            while len(batch) < self.max_batch:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            err: Exception | None = None
            try:
                with self.store.engine.begin() as conn:
                    conn.execute(audit_log.insert(), [it[0] for it in batch])
            except Exception as exc:  # reported to every waiting request
                err = exc
            for it in batch:
                it[2] = err
                if it[1] is not None:
                    it[1].set()
                elif it[3] is not None:
                    loop, fut = it[3]
                    loop.call_soon_threadsafe(_settle, fut, err)
                elif err is not None:  # fire-and-forget rows: the log says so
                    log.error("audit row %s could not be written: %s", it[0]["action"], err)
            if stop:
                return


class FailedAuthLog:
    """Failed authentication attempts, recorded in the audit log without letting a flood
    fill the disk.

    Per source address, the first failure of a ``window`` is written at once
    (``auth.failed``) and the rest are counted and written as one summary row when the
    window closes; at most ``max_rows`` rows per window are written per worker, the rest
    are summed into one ``auth.failed.suppressed`` row. So a flood costs at most
    ``max_rows + 1`` rows per window and worker, whatever its rate. A source failing more
    than ``throttle_rate`` times a second (burst ``throttle_burst`` seconds' worth) is
    answered 429 without a database lookup until it slows down; those refusals are
    counted too (:meth:`refused`), in the same rows.
    """

    def __init__(self, writer: AuditWriter, *, window: float = 60.0, max_rows: int = 60,
                 throttle_rate: float = 2.0, throttle_burst: float = 10.0,
                 clock: Any = time.monotonic) -> None:
        self.writer = writer
        self.window = window
        self.max_rows = max_rows
        self.clock = clock
        self.throttle = RateLimiter(throttle_rate, throttle_burst)
        self._lock = threading.Lock()
        self._start = clock()
        self._rows = 0
        self._suppressed = 0
        self._pending: dict[str, dict[str, Any]] = {}  # source -> counts this window

    def throttled(self, source: str) -> float:
        """Seconds this source must wait (0 = go on). Does not count as a failure."""
        return self.throttle.peek(source)

    def refused(self, source: str) -> None:
        """Count an attempt answered 429 by the throttle (no key lookup, no row of its
        own): it is summed into the source's window summary (reason ``throttled``), or
        into ``auth.failed.suppressed`` when the source has no row this window, so the
        audit says how big a flood was, not only that there was one."""
        self._count(source, None, "throttled", may_open=False)

    def record(self, source: str, key_id: str | None, reason: str) -> None:
        self.throttle.check(source)
        self._count(source, key_id, reason, may_open=True)

    def _count(self, source: str, key_id: str | None, reason: str, *, may_open: bool) -> None:
        """One failure of ``source``: its first of the window opens a row (``may_open``,
        within ``max_rows``), later ones are summed into its summary."""
        now = self.clock()
        rows: list[tuple[str, dict[str, Any]]] = []
        with self._lock:
            if now - self._start >= self.window:
                rows.extend(self._close_window())
                self._start = now
            cur = self._pending.get(source)
            if cur is None:
                if may_open and self._rows < self.max_rows:
                    self._rows += 1
                    self._pending[source] = {"count": 0, "reasons": {}}
                    rows.append(("auth.failed", {"source": source, "key_id": key_id,
                                                 "reason": reason}))
                else:
                    self._suppressed += 1
            else:
                cur["count"] += 1
                cur["reasons"][reason] = cur["reasons"].get(reason, 0) + 1
        for action, detail in rows:
            self.writer.enqueue("anonymous", action, detail)

    def _close_window(self) -> list[tuple[str, dict[str, Any]]]:
        rows: list[tuple[str, dict[str, Any]]] = []
        for source, cur in self._pending.items():
            if cur["count"]:
                rows.append(("auth.failed", {"source": source, "repeated": cur["count"],
                                             "reasons": cur["reasons"],
                                             "window_seconds": self.window}))
        if self._suppressed:
            rows.append(("auth.failed.suppressed", {"attempts": self._suppressed,
                                                    "window_seconds": self.window}))
        self._pending, self._rows, self._suppressed = {}, 0, 0
        return rows

    def flush(self) -> None:
        """Write the open window's summary now (at shutdown, or from a schedule)."""
        with self._lock:
            rows = self._close_window()
            self._start = self.clock()
        for action, detail in rows:
            self.writer.enqueue("anonymous", action, detail)
