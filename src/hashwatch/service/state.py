"""The per-worker service state: store, key verifier, audit writer, rate limiter, allow-list,
the matcher (loaded in the background), the change-feed refresh loop, the decoding
processes, the failed-authentication log and the review-image purge schedule."""

import logging
import os
import threading
import time
from typing import Any

from hashwatch.service import review as review_mod
from hashwatch.service import webhooks as wh
from hashwatch.service.audit import AuditWriter, FailedAuthLog
from hashwatch.service.auth import KeyVerifier
from hashwatch.service.isolation import DecodePool, InlineDecoder
from hashwatch.service.ratelimit import RateLimiter
from hashwatch.service.settings import Settings
from hashwatch.store import Store
from hashwatch.store.redact import redact_text

log = logging.getLogger("hashwatch.service")


class Service:
    """One worker's state. ``start()`` loads the index in a thread (readiness fails until
    then) and follows the change feed every ``settings.refresh_interval`` seconds."""

    def __init__(self, settings: Settings) -> None:
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

    def start(self) -> None:
        self._poller = threading.Thread(target=self._poll, name="hashwatch-refresh", daemon=True)
        self._poller.start()
        if self.settings.run_webhook_worker:
            self.delivery = wh.DeliveryWorker(
                self.store, timeout=self.settings.webhook_timeout,
                max_attempts=self.settings.webhook_max_attempts,
                backoff_base=self.settings.webhook_backoff_base,
                backoff_max=self.settings.webhook_backoff_max,
                poll_interval=self.settings.webhook_poll_interval,
                policy=self.webhook_policy, lanes=self.settings.webhook_lanes)
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
        if self.delivery is not None:
            self.delivery.stop()
        if self._poller is not None:
            self._poller.join(timeout=10)
        self.auditor.close()
        self.store.close()

    def _poll(self) -> None:
        from hashwatch.matcher import Matcher

        try:
            self.matcher = Matcher(self.store, index_path=self.settings.index_file(),
                                   mmap=self.settings.index_mmap,
                                   vpdq_query_percent=self.settings.vpdq_query_percent,
                                   vpdq_compared_percent=self.settings.vpdq_compared_percent)
            self.allow.refresh()
            self.last_refresh = time.time()
            self.ready.set()
        except Exception as exc:  # reported by readiness, not swallowed
            log.exception("index load failed")
            self.load_error = redact_text(f"{type(exc).__name__}: {exc}")[:300]
            return
        while not self._stop.wait(self.settings.refresh_interval):
            try:
                self.refresh_now()
            except Exception:
                log.exception("change-feed refresh failed; retrying")

    def refresh_now(self) -> None:
        """Apply pending changes in this worker at once (after its own writes)."""
        with self._refresh_lock:
            if self.matcher is not None:
                self.matcher.refresh()
            self.allow.refresh()
            self.last_refresh = time.time()


def _decoder(settings: Settings) -> DecodePool | InlineDecoder:
    if not settings.decode_isolation:
        return InlineDecoder()
    return DecodePool(workers=settings.decode_workers, timeout=settings.decode_timeout,
                      memory_bytes=settings.decode_memory_mb * 1024 * 1024 or None,
                      pixel_budget=settings.decode_pixel_budget)
