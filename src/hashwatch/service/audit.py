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
import queue
import threading
from typing import Any

from hashwatch.store import Store
from hashwatch.store.core import utcnow
from hashwatch.store.schema import audit_log


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
                else:
                    loop, fut = it[3]
                    loop.call_soon_threadsafe(_settle, fut, err)
            if stop:
                return
