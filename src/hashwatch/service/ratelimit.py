"""Per-key request rate limits: a token bucket per key, in process memory.

Each worker process limits on its own, so with N workers a key can reach N times its
rate at most; the service divides the configured rate by the worker count to keep the
total near the configured figure.
"""

from __future__ import annotations

import threading
import time


class RateLimiter:
    MAX_KEYS = 100_000  # buckets kept; beyond, the idle (full) ones are dropped

    def __init__(self, rate: float, burst_seconds: float = 2.0) -> None:
        self.rate = rate
        self.burst_seconds = burst_seconds
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last time)
        self._lock = threading.Lock()

    def check(self, key: str, rate: float | None = None, cost: float = 1.0) -> float:
        """Take ``cost`` tokens; return 0 when allowed, else seconds until it would be."""
        r = self.rate if rate is None else rate
        if r <= 0:
            return 0.0  # 0 = unlimited
        cap = max(r * self.burst_seconds, cost, 1.0)
        now = time.monotonic()
        with self._lock:
            if len(self._buckets) >= self.MAX_KEYS and key not in self._buckets:
                self._prune(now, r)
            tokens, last = self._buckets.get(key, (cap, now))
            tokens = min(cap, tokens + (now - last) * r)
            if tokens >= cost:
                self._buckets[key] = (tokens - cost, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (cost - tokens) / r

    def peek(self, key: str, rate: float | None = None, cost: float = 1.0) -> float:
        """As :meth:`check`, without taking anything: 0 when ``cost`` tokens are there."""
        r = self.rate if rate is None else rate
        if r <= 0:
            return 0.0
        cap = max(r * self.burst_seconds, cost, 1.0)
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (cap, now))
        tokens = min(cap, tokens + (now - last) * r)
        return 0.0 if tokens >= cost else (cost - tokens) / r

    def _prune(self, now: float, rate: float) -> None:
        """Drop buckets that have refilled (they hold no state a new bucket would not);
        if every key is busy (a flood of distinct keys), start afresh."""
        full = rate * self.burst_seconds
        idle = [k for k, (t, last) in self._buckets.items() if t + (now - last) * rate >= full]
        for k in idle:
            del self._buckets[k]
        if len(self._buckets) >= self.MAX_KEYS:
            self._buckets.clear()
