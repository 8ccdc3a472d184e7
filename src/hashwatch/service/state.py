"""The per-worker service state: store, key verifier, audit writer, rate limiter, allow-list,
the matcher (loaded in the background), the change-feed refresh loop and reconciliation, the
decoding processes, the failed-authentication log and the review-image purge schedule.

Freshness: on PostgreSQL a listener thread receives ``NOTIFY hashwatch_feed`` when a change
commits (``hashwatch.store.listen``) and wakes the refresh loop at once; the loop also polls
every ``settings.refresh_interval`` seconds, the fallback when notifications are lost or the
listener is reconnecting (and the only path on SQLite). A refresh reads the commit-ordered
feed (``hashwatch.store.feed``), so nothing committed is skipped whichever path woke it. It
reads at most two pages of the feed under the matcher's lock (``Matcher.refresh(complete=
False)``): a bulk import's millions of change rows are absorbed page by page, the loop going
round again at once while a backlog remains, and changes committed meanwhile are applied in
the next round, not after the whole import. The keypoint and vPDQ tiers follow the feed in
their own thread (``hashwatch-tiers``), so their catch-up never delays the PDQ index.

Each worker times its own freshness: from a notification's arrival to the end of the
refresh that read a snapshot taken after it (``feed_freshness``), and every refresh's
duration and CPU time (``feed_refresh_time``, ``feed_refresh_cpu``); readiness shows their
recent quantiles and /metrics their histograms. (Commit to notification is PostgreSQL's
delivery, a local round trip.)

Reconciliation (``hashwatch.reconcile``) checks the index against the store every
``settings.reconcile_interval`` seconds and on demand; its last report is in readiness.

A save of the index that fails (a full disk) never stops the worker: it serves from memory,
retries every ``settings.index_save_retry`` seconds, and readiness and metrics show it.
"""

import bisect
import logging
import os
import secrets
import threading
import time
from collections import deque
from typing import Any

from hashwatch.service import review as review_mod
from hashwatch.service import webhooks as wh
from hashwatch.service.allocator import tune_allocator
from hashwatch.service.audit import AuditWriter, FailedAuthLog
from hashwatch.service.auth import KeyVerifier
from hashwatch.service.isolation import DecodePool, InlineDecoder
from hashwatch.service.ratelimit import RateLimiter
from hashwatch.service.settings import Settings
from hashwatch.store import Store
from hashwatch.store.redact import redact_text

log = logging.getLogger("hashwatch.service")


class Latency:
    """Durations in seconds: cumulative counts in Prometheus' histogram buckets (``le``) for
    /metrics, and the last ``keep`` samples for quantiles in readiness."""

    BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

    def __init__(self, keep: int = 2000) -> None:
        self.recent: deque[float] = deque(maxlen=keep)
        self.counts = [0] * (len(self.BUCKETS) + 1)  # the last one: above every bucket
        self.total = 0.0
        self.n = 0
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        with self._lock:
            self.recent.append(seconds)
            self.counts[bisect.bisect_left(self.BUCKETS, seconds)] += 1
            self.total += seconds
            self.n += 1

    def summary(self) -> dict[str, Any]:
        """``{"n", "p50", "p99", "max"}`` over the recent samples (seconds; None if none)."""
        with self._lock:
            xs = sorted(self.recent)
        if not xs:
            return {"n": 0, "p50": None, "p99": None, "max": None}
        return {"n": len(xs), "p50": xs[len(xs) // 2],
                "p99": xs[min(len(xs) - 1, int(len(xs) * 0.99))], "max": xs[-1]}

    def prometheus(self, name: str, help_: str) -> list[str]:
        """The histogram in the Prometheus text format (cumulative buckets, sum, count)."""
        with self._lock:
            counts, total, n = list(self.counts), self.total, self.n
        out = [f"# HELP {name} {help_}", f"# TYPE {name} histogram"]
        acc = 0
        for le, c in zip(self.BUCKETS, counts, strict=False):
            acc += c
            out.append(f'{name}_bucket{{le="{le}"}} {acc}')
        out += [f'{name}_bucket{{le="+Inf"}} {n}', f"{name}_sum {total}", f"{name}_count {n}"]
        return out


class Service:
    """One worker's state. ``start()`` loads the index in a thread (readiness fails until
    then) and follows the change feed: pushed on PostgreSQL, polled every
    ``settings.refresh_interval`` seconds as the fallback."""

    def __init__(self, settings: Settings) -> None:
        from hashwatch.matchwork import limit_library_threads

        # before the index is loaded: its arrays are the blocks the threshold is about
        self.malloc_tuned = tune_allocator(settings.malloc_mmap_threshold,
                                           settings.malloc_arena_max)

        # parallelism is across worker processes (and their request threads): the keypoint
        # tier's OpenCV calls get no thread pool of their own in each worker
        limit_library_threads()
        self.settings = settings
        self.store = Store.open(settings.db)
        self.verifier = KeyVerifier(self.store)
        self.auditor = AuditWriter(self.store)
        self.auth_failures = FailedAuthLog(self.auditor)
        self.decoder = _decoder(settings)
        self.webhook_policy = settings.webhook_policy()
        workers = max(1, int(os.environ.get("HASHWATCH_WORKERS", "1")))
        self.workers = workers
        self.limiter = RateLimiter(settings.rate_limit / workers, settings.rate_burst_seconds)
        self.allow = review_mod.AllowList(self.store)
        self.matcher: Any = None
        self.ready = threading.Event()
        self.load_error: str | None = None
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._purger: threading.Thread | None = None
        self.last_refresh = 0.0
        self.delivery: wh.DeliveryWorker | None = None
        # one feed replay at a time: the poller and a request's refresh_now() must not
        # interleave their reads of the feed position
        self._refresh_lock = threading.Lock()
        self._refresh_began = 0.0
        self._wake = threading.Event()  # a change committed somewhere: refresh now
        self._tiers_wake = threading.Event()
        self._tiers: threading.Thread | None = None
        self._reconcile_wake = threading.Event()
        self._reconcile_lock = threading.Lock()
        self._reconciler: threading.Thread | None = None
        self.listener: Any = None
        # names this worker in readiness and in the reconciliation requests it sends
        self.worker_id = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.reconcile_report: Any = None
        # counters for /metrics (this worker, since it started)
        self.counters = {"feed_refreshes": 0, "feed_applied": 0, "feed_errors": 0,
                         "reconcile_runs": 0, "reconcile_differences": 0}
        self._save_tried = 0.0
        # notification -> applied, and refresh durations (see the module docstring)
        self.feed_freshness = Latency()
        self.feed_refresh_time = Latency()
        self.feed_refresh_cpu = Latency()  # this thread's CPU time per refresh: wall far
        # above it means the worker waited for a core (or the GIL), not for work
        self._notified_at: float | None = None  # the oldest notification not yet served

    def start(self) -> None:
        if self.settings.gil_switch_interval > 0:
            import sys

            sys.setswitchinterval(self.settings.gil_switch_interval)
        self._poller = threading.Thread(target=self._poll, name="hashwatch-refresh", daemon=True)
        self._poller.start()
        self._tiers = threading.Thread(target=self._tiers_loop, name="hashwatch-tiers",
                                       daemon=True)
        self._tiers.start()
        if self.store.dialect == "postgresql" and self.settings.feed_listen:
            from hashwatch.store.listen import FEED_CHANNEL, RECONCILE_CHANNEL, FeedListener

            self.listener = FeedListener(self.store.engine.url, self._on_notify,
                                         (FEED_CHANNEL, RECONCILE_CHANNEL))
            self.listener.start()
        if self.settings.reconcile_interval > 0:
            self._reconciler = threading.Thread(target=self._reconcile_loop,
                                                name="hashwatch-reconcile", daemon=True)
            self._reconciler.start()
        if self.settings.run_webhook_worker:
            self.delivery = wh.DeliveryWorker(
                self.store, timeout=self.settings.webhook_timeout,
                max_attempts=self.settings.webhook_max_attempts,
                backoff_base=self.settings.webhook_backoff_base,
                backoff_max=self.settings.webhook_backoff_max,
                poll_interval=self.settings.webhook_poll_interval,
                policy=self.webhook_policy, lanes=self.settings.webhook_lanes,
                lease=self.settings.webhook_lease)
            self.delivery.start()
        self._purger = threading.Thread(target=self._purge_loop, name="hashwatch-purge",
                                        daemon=True)
        self._purger.start()

    def _purge_loop(self) -> None:
        """Delete decided review items' images once their retention is over."""
        while not self._stop.wait(self.settings.review_purge_interval):
            try:
                review_mod.purge_images(self.store, self.settings.review_image_retention)
            except Exception:
                log.exception("review image purge failed; retrying")

    def stop(self) -> None:
        self._stop.set()
        self.decoder.close()
        self.auth_failures.flush()
        self._wake.set()
        self._tiers_wake.set()
        self._reconcile_wake.set()
        if self.listener is not None:
            self.listener.stop()
        if self.delivery is not None:
            self.delivery.stop()
        for t in (self._poller, self._tiers, self._reconciler):
            if t is not None:
                t.join(timeout=10)
        self.auditor.close()
        self.store.close()

    def _on_notify(self, channel: str, payload: str) -> None:
        from hashwatch.store.listen import RECONCILE_CHANNEL

        if channel == RECONCILE_CHANNEL:
            if payload != self.worker_id:  # (the worker that asked has just reconciled)
                self._reconcile_wake.set()
        else:
            if self._notified_at is None:
                self._notified_at = time.monotonic()
            self._wake.set()

    def _poll(self) -> None:
        from hashwatch.matcher import Matcher

        try:
            self.matcher = Matcher(self.store, index_path=self.settings.index_file(),
                                   mmap=self.settings.index_mmap,
                                   vpdq_query_percent=self.settings.vpdq_query_percent,
                                   vpdq_compared_percent=self.settings.vpdq_compared_percent,
                                   hash_views=self.settings.hash_views or None)
            self.allow.refresh()
            self.last_refresh = time.time()
            freeze_startup_heap()
            self.ready.set()
        except Exception as exc:  # reported by readiness, not swallowed
            log.exception("index load failed")
            self.load_error = redact_text(f"{type(exc).__name__}: {exc}")[:300]
            return
        while not self._stop.is_set():
            if not self.matcher.feed_backlog:  # a backlog: go round again at once
                self._wake.wait(self.settings.refresh_interval)
            self._wake.clear()  # changes committed from here on wake the next round
            notified, self._notified_at = self._notified_at, None
            if self._stop.is_set():
                return
            try:
                self.refresh_now(tiers=False)
                if notified is not None:  # its commit is in the snapshot just applied
                    self.feed_freshness.observe(time.monotonic() - notified)
                self._tiers_wake.set()
                self._retry_save()
            except Exception:
                self.counters["feed_errors"] += 1
                log.exception("change-feed refresh failed; retrying")
                self._stop.wait(min(1.0, self.settings.refresh_interval))

    def refresh_now(self, *, tiers: bool = True) -> None:
        """Apply pending changes in this worker at once (after its own writes). Concurrent
        callers share refreshes: one that began after this call was made has read a
        snapshot that includes everything committed before the call. Bounded work (see the
        module docstring); ``tiers``: the keypoint and vPDQ tiers too, unless busy."""
        asked = time.monotonic()
        with self._refresh_lock:
            if self._refresh_began > asked:
                return
            began = self._refresh_began = time.monotonic()
            cpu = time.thread_time()
            if self.matcher is not None:
                self.counters["feed_applied"] += self.matcher.refresh(
                    complete=False, tiers=tiers, also=lambda snap: self.allow.refresh(snap.conn))
                self.counters["feed_refreshes"] += 1
            else:
                self.allow.refresh()
            self.last_refresh = time.time()
            self.feed_refresh_time.observe(time.monotonic() - began)
            self.feed_refresh_cpu.observe(time.thread_time() - cpu)

    def _tiers_loop(self) -> None:
        """The keypoint and vPDQ tiers follow the feed here, woken after each refresh."""
        while not self._stop.is_set():
            self._tiers_wake.wait(self.settings.refresh_interval)
            self._tiers_wake.clear()
            if self._stop.is_set():
                return
            if self.matcher is None:
                continue
            try:
                self.matcher.refresh_tiers()
            except Exception:
                self.counters["feed_errors"] += 1
                log.exception("keypoint/vPDQ tier refresh failed; retrying")
                self._stop.wait(min(1.0, self.settings.refresh_interval))

    def _retry_save(self) -> None:
        """Save the index again when its last save failed, at most every
        ``settings.index_save_retry`` seconds."""
        m = self.matcher
        if m is None or m.save_error is None:
            return
        now = time.monotonic()
        if now - self._save_tried >= self.settings.index_save_retry:
            self._save_tried = now
            if m.save():
                log.warning("index saved again after an earlier failure")

    # -- reconciliation ----------------------------------------------------------------
    def reconcile_now(self, *, repair: bool = True) -> Any:
        """Check this worker's index against the store now and repair any difference
        (``hashwatch.reconcile.Report``); None while the index is loading."""
        from hashwatch.reconcile import reconcile

        if self.matcher is None:
            return None
        with self._reconcile_lock:
            rep = reconcile(self.matcher, repair=repair)
            self.reconcile_report = rep
            self.counters["reconcile_runs"] += 1
            self.counters["reconcile_differences"] += rep.differences
            return rep

    def _reconcile_loop(self) -> None:
        interval = self.settings.reconcile_interval
        first = True
        while not self._stop.is_set():
            # the first check soon after the index is loaded, then every interval
            self._reconcile_wake.wait(min(interval, 30.0) if first else interval)
            self._reconcile_wake.clear()
            if self._stop.is_set():
                return
            if not self.ready.is_set() or (self.matcher is not None
                                           and self.matcher.feed_backlog):
                continue  # (while a bulk import is being absorbed: the next round)
            first = False
            try:
                self.reconcile_now()
            except Exception:
                log.exception("reconciliation failed; retrying at the next interval")

    def feed_status(self) -> dict[str, Any]:
        """What readiness shows about the change feed and the last reconciliation."""
        m = self.matcher
        push = "listen" if self.listener is not None else "poll"
        rep = self.reconcile_report
        return {
            "position": m.position if m is not None else None,
            "backlog": m.feed_backlog if m is not None else 0,
            "push": push,
            "listening": bool(self.listener is not None and self.listener.connected),
            "poll_interval": self.settings.refresh_interval,
            "last_refresh": self.last_refresh,
            # seconds: notification arrived -> applied, and refresh durations (recent)
            "notify_to_applied": self.feed_freshness.summary(),
            "refresh_seconds": self.feed_refresh_time.summary(),
            "refresh_cpu_seconds": self.feed_refresh_cpu.summary(),
            "reconcile": rep.as_dict() if rep is not None else None,
            "reconcile_differences_total": self.counters["reconcile_differences"],
            "index_save_error": m.save_error if m is not None else None,
            "index_save_failures": m.save_failures if m is not None else 0,
        }


def freeze_startup_heap() -> None:
    """Collect once, then move every object alive into the collector's permanent generation
    (``gc.freeze``, Python 3.7+), so later full collections walk only what was allocated
    since. The start-up heap (FastAPI, SQLAlchemy, NumPy, the matcher: ~130,000 tracked
    objects) cost every full collection 75-150 ms with the GIL held, about twice a minute
    under load, and more during a reconciliation: the feed refresh thread and every request
    thread stalled that long (BENCHMARKS.md, freshness). Frozen objects are still freed by
    reference counting; only cycles among them are never collected, and start-up leaves
    none worth the pause."""
    import gc

    gc.collect()
    gc.freeze()


def _decoder(settings: Settings) -> DecodePool | InlineDecoder:
    if not settings.decode_isolation:
        return InlineDecoder()
    return DecodePool(workers=settings.decode_workers, timeout=settings.decode_timeout,
                      memory_bytes=settings.decode_memory_mb * 1024 * 1024 or None,
                      pixel_budget=settings.decode_pixel_budget)
