"""Uploads are decoded in child processes with a deadline, a memory cap and a pixel budget.

A decoder is the part of the service that parses the most hostile input, and the one that
can run away: a 312 KB PNG that claims 100 megapixels, a 357 KB MP4 with thousands of
predicted frames, a decoder bug that never returns. In-process, neither a thread nor
asyncio can stop such a call. Here each decode runs :func:`hashwatch.service.uploads.
hash_upload` in a long-lived child process (a fresh interpreter started with
``python -m hashwatch.service.isolation``, never a fork of the threaded worker) and the
worker waits on a pipe:

* **deadline**: past ``timeout`` seconds the child is killed (SIGKILL) and replaced; the
  request gets ``422 decode_timeout``. The worker and the other requests carry on.
* **memory**: each child runs under ``RLIMIT_AS`` (``memory_bytes``); a decode that needs
  more fails with ``413`` (MemoryError) or kills only the child (``422 decode_failed``).
* **pixel budget** (per worker): the child first reads the header and reports what the
  decode will hold (width x height; a video counts as the whole pixel limit); the worker
  lets it decode only when that fits in ``pixel_budget`` beside the decodes already
  running, else it waits (up to the deadline) and then answers ``503 busy``.
* **concurrency**: at most ``workers`` children per service worker; a request that finds
  none idle within the deadline gets ``503 busy``.

So a worker holds at most ``pixel_budget`` pixels of decoded images at once (about 4
bytes each, plus the decoder's own), whatever arrives concurrently.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from hashwatch.service.uploads import (
    HashedUpload,
    UploadError,
    UploadLimits,
    hash_upload,
    upload_cost,
)

log = logging.getLogger(__name__)


def _child_main(rconn: Connection, conn: Connection, memory_bytes: int | None) -> None:
    """The child's loop: job -> cost -> (go) -> result, until the pipe closes."""
    import warnings

    from PIL import Image

    # the pixel limit is ours (UploadLimits.max_pixels), checked before decoding; Pillow's
    # own warning below its hard limit would only fill the worker's log
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    # several decoding processes per worker: one library thread each
    from hashwatch.matchwork import limit_library_threads

    limit_library_threads()
    if memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    conn.send(("ready", None))
    while True:
        try:
            job = rconn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        data, name, limits, extras = job
        try:
            conn.send(("cost", upload_cost(data, limits)))
            if not rconn.recv():
                continue
            conn.send(("ok", hash_upload(data, name, limits, extras)))
        except UploadError as exc:
            conn.send(("err", (exc.status, exc.code, exc.message)))
        except MemoryError:
            conn.send(("err", (413, "image_too_large",
                               "decoding this upload needs more memory than allowed")))
        except (EOFError, OSError):
            return
        except Exception as exc:  # a decoder bug: this upload fails, the child goes on
            conn.send(("err", (422, "decode_failed",
                               f"the upload could not be decoded ({type(exc).__name__})")))


class PixelBudget:
    """A counting semaphore of pixels: ``acquire(n)`` waits until ``n`` more fit."""

    def __init__(self, total: int) -> None:
        self.total = max(1, int(total))
        self.used = 0
        self._cv = threading.Condition()

    def acquire(self, n: int, timeout: float) -> bool:
        n = min(max(1, n), self.total)
        end = time.monotonic() + timeout
        with self._cv:
            while self.used + n > self.total:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
            self.used += n
            return True

    def release(self, n: int) -> None:
        n = min(max(1, n), self.total)
        with self._cv:
            self.used -= n
            self._cv.notify_all()


class _Child:
    """One decoding process and its two pipes (pickled messages both ways)."""

    def __init__(self, memory_bytes: int | None) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hashwatch.service.isolation", str(to_child_r),
                 str(from_child_w), str(memory_bytes or 0)],
                pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL,
                close_fds=True, start_new_session=True)
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self.send_conn = Connection(to_child_w, readable=False)
        self.recv_conn = Connection(from_child_r, writable=False)

    def send(self, obj: Any) -> None:
        self.send_conn.send(obj)

    def poll(self, timeout: float) -> bool:
        return self.recv_conn.poll(timeout)

    def recv(self) -> Any:
        return self.recv_conn.recv()

    def _close_pipes(self) -> None:
        for c in (self.send_conn, self.recv_conn):
            with contextlib.suppress(OSError):
                c.close()

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        finally:
            self._close_pipes()

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.send(None)
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self._close_pipes()


class DecodePool:
    """Runs :func:`hash_upload` in child processes (see the module docstring).

    ``run(data, name, limits)`` returns the :class:`HashedUpload` or raises
    :class:`UploadError`. Thread-safe; children start on first use."""

    def __init__(self, *, workers: int = 2, timeout: float = 20.0,
                 memory_bytes: int | None = 3 * 1024**3,
                 pixel_budget: int = 100_000_000, queue_timeout: float = 30.0,
                 start_timeout: float = 60.0) -> None:
        self.workers = max(1, workers)
        self.timeout = timeout
        self.queue_timeout = queue_timeout
        self.start_timeout = start_timeout
        self.memory_bytes = memory_bytes
        self.budget = PixelBudget(pixel_budget)
        self._idle: queue.LifoQueue[_Child] = queue.LifoQueue()
        self._started = 0
        self._lock = threading.Lock()
        self._closed = False
        self.killed = 0  # children killed at their deadline (for tests and metrics)

    def _take(self) -> _Child:
        """An idle child; a new one (started now, outside any decode deadline) while
        fewer than ``workers`` run; else wait for one up to ``queue_timeout``."""
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if self._closed:
                raise UploadError(503, "busy", "the service is stopping")
            spawn = self._started < self.workers
            if spawn:
                self._started += 1
        if spawn:
            try:
                child = _Child(self.memory_bytes)
                if not child.poll(self.start_timeout) or child.recv()[0] != "ready":
                    child.kill()
                    raise OSError("decoder did not start")
                return child
            except (OSError, EOFError):
                with self._lock:
                    self._started -= 1
                log.exception("decoder process failed to start")
                raise UploadError(503, "busy", "no decoder is available") from None
        try:
            return self._idle.get(timeout=self.queue_timeout)
        except queue.Empty:
            raise UploadError(503, "busy", "all decoders are busy; retry shortly") from None

    def _drop(self, child: _Child) -> None:
        child.kill()
        with self._lock:
            self._started -= 1

    def _recv(self, child: _Child, deadline: float) -> tuple[str, Any]:
        left = deadline - time.monotonic()
        try:
            if not child.poll(max(0.0, left)):
                raise TimeoutError
            return child.recv()  # type: ignore[no-any-return]
        except TimeoutError:
            self.killed += 1
            self._drop(child)
            raise UploadError(422, "decode_timeout",
                              f"decoding took longer than {self.timeout:g} s") from None
        except (EOFError, OSError):
            self._drop(child)
            raise UploadError(422, "decode_failed",
                              "the decoder stopped on this upload") from None

    def run(self, data: bytes, name: str = "upload", limits: UploadLimits | None = None,
            extras: Any = None) -> HashedUpload:
        """Hash one upload in a child (``extras``: a picklable callable on decoded
        pixels, see :func:`hash_upload`). Raises UploadError."""
        child = self._take()
        deadline = time.monotonic() + self.timeout
        healthy = True
        try:
            try:
                child.send((data, name, limits or UploadLimits(), extras))
            except (OSError, ValueError):
                healthy = False
                self._drop(child)
                raise UploadError(422, "decode_failed", "the decoder is not available") \
                    from None
            kind, cost = self._recv(child, deadline)
            if kind != "cost":
                return self._result(kind, cost)
            if not self.budget.acquire(int(cost), deadline - time.monotonic()):
                child.send(False)
                raise UploadError(503, "busy", "too many large images are being decoded; "
                                  "retry shortly")
            try:
                child.send(True)
                kind, payload = self._recv(child, deadline)
            finally:
                self.budget.release(int(cost))
            return self._result(kind, payload)
        except UploadError as exc:
            if exc.code in ("decode_timeout", "decode_failed"):
                healthy = False
            raise
        finally:
            if healthy and not self._closed:
                self._idle.put(child)
            elif healthy:
                child.close()

    @staticmethod
    def _result(kind: str, payload: Any) -> HashedUpload:
        if kind == "ok":
            return payload  # type: ignore[no-any-return]
        status, code, message = payload
        raise UploadError(status, code, message)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                break


class InlineDecoder:
    """The same interface in the calling thread (no isolation): for tools and benchmarks
    that measure the cost of isolation, never the service's default."""

    def __init__(self, fn: Callable[..., HashedUpload] = hash_upload) -> None:
        self.fn = fn

    def run(self, data: bytes, name: str = "upload", limits: UploadLimits | None = None,
            extras: Any = None) -> HashedUpload:
        return self.fn(data, name, limits, extras)

    def close(self) -> None:
        pass


__all__ = ["DecodePool", "InlineDecoder", "PixelBudget"]


if __name__ == "__main__":  # the child: python -m hashwatch.service.isolation RFD WFD MEM
    _child_main(Connection(int(sys.argv[1]), writable=False),
                Connection(int(sys.argv[2]), readable=False), int(sys.argv[3]) or None)
