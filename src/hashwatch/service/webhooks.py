"""Per-list webhooks with an outbox: match events are written to the ``outbox`` table in
the request that found the match, then delivered by a background worker, so an event is
never lost across restarts (at-least-once; receivers de-duplicate on the event id).

Signature: ``X-Hashwatch-Signature: v2=<hex HMAC-SHA256(secret, "<timestamp>.<event id>."
+ body)>`` with ``X-Hashwatch-Timestamp`` (Unix seconds, fresh on every attempt) and
``X-Hashwatch-Event-Id``. The MAC covers every header the receiver relies on, so neither
a fresh timestamp nor a new event id can be put on a captured body. A receiver recomputes
the HMAC, rejects timestamps outside a few minutes, and rejects event ids it has already
processed: :func:`verify_signature` and :class:`ReplayGuard` do exactly that.

Destinations follow :mod:`hashwatch.service.destinations` at creation and again at every
delivery, after resolving the name (the connection goes to the checked address). Each
destination is delivered in its own lane (one request at a time per webhook, many
webhooks at once), so a slow or dead receiver delays only its own events.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import sqlalchemy as sa

from hashwatch.service.destinations import (
    DestinationError,
    DestinationPolicy,
    bounded_request,
    check_url,
    pin,
    redact_url,
    resolve_checked,
)
from hashwatch.service.schema import outbox, webhooks
from hashwatch.store import Store
from hashwatch.store.records import utcnow
from hashwatch.store.schema import hash_lists

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Hashwatch-Signature"
TIMESTAMP_HEADER = "X-Hashwatch-Timestamp"
EVENT_HEADER = "X-Hashwatch-Event-Id"
LEASE_SECONDS = 60.0  # a claimed delivery that never finished is retried after this


SIGNATURE_VERSION = "v2"


def sign(secret: str, timestamp: int | str, event_id: str, body: bytes) -> str:
    """``v2=`` + hex HMAC-SHA256 over ``"<timestamp>.<event id>."`` + body."""
    msg = f"{timestamp}.{event_id}.".encode() + body
    return f"{SIGNATURE_VERSION}=" + hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


def verify_signature(
    secret: str, body: bytes, timestamp: str | None, signature: str | None,
    event_id: str | None, *, tolerance: float = 300.0, now: float | None = None,
) -> bool:
    """True when ``signature`` is ours over ``timestamp``, ``event_id`` and ``body`` and the
    timestamp is within ``tolerance`` seconds of now (an old capture replayed later is
    refused; a capture re-sent under a new event id fails the MAC)."""
    if not timestamp or not signature or not event_id:
        return False
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, ts, event_id, body).encode(),
                               signature.encode("utf-8", "replace"))


class ReplayGuard:
    """Remembers recently seen event ids (bounded) so a replay within the tolerance window
    is refused too."""

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, event_id: str) -> bool:
        with self._lock:
            if event_id in self._seen:
                return False
            self._seen[event_id] = None
            if len(self._seen) > self.size:
                self._seen.popitem(last=False)
            return True


# -- management -----------------------------------------------------------------------
def check_destination(url: str, policy: DestinationPolicy) -> None:
    """The destination rules at creation: shape, no credentials, and every address the
    host resolves to now. Raises DestinationError."""
    if len(url) > 2000:
        raise DestinationError(422, "bad_url", "webhook URLs are at most 2000 characters")
    parts = check_url(url)
    resolve_checked(parts.hostname or "",
                    parts.port or (443 if parts.scheme == "https" else 80), policy)


def create_webhook(store: Store, list_name: str, url: str, *, actor: str,
                   policy: DestinationPolicy | None = None) -> dict[str, Any]:
    """Add a webhook to a list; returns its id and signing secret (shown once).
    Raises DestinationError for a refused URL, ListNotFound for an unknown list."""
    check_destination(url, policy or DestinationPolicy())
    secret = secrets.token_urlsafe(32)
    info = store.get_list(list_name)  # raises ListNotFound
    with store.engine.begin() as conn:
        res = conn.execute(
            webhooks.insert().values(list_id=info.id, url=url, secret=secret,
                                     created_at=utcnow(), created_by=actor)
        )
        wid = res.inserted_primary_key[0]
    store.audit(actor, "webhook.create", {"id": wid, "url": url}, list_name=list_name)
    return {"id": wid, "list": list_name, "url": url, "secret": secret}


def list_webhooks(store: Store, list_name: str) -> list[dict[str, Any]]:
    info = store.get_list(list_name)
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(webhooks.c.id, webhooks.c.url, webhooks.c.created_at,
                      webhooks.c.created_by)
            .where(webhooks.c.list_id == info.id, webhooks.c.deleted_at.is_(None))
            .order_by(webhooks.c.id)
        ).all()
    return [{"id": r.id, "list": list_name, "url": redact_url(r.url), "created_at": r.created_at,
             "created_by": r.created_by} for r in rows]


def delete_webhook(store: Store, webhook_id: int, *, actor: str) -> bool:
    with store.engine.begin() as conn:
        res = conn.execute(
            webhooks.update()
            .where(webhooks.c.id == webhook_id, webhooks.c.deleted_at.is_(None))
            .values(deleted_at=utcnow())
        )
    if res.rowcount:
        store.audit(actor, "webhook.delete", {"id": webhook_id})
    return bool(res.rowcount)


# -- enqueue --------------------------------------------------------------------------
def overall_confidence(matches: Iterable[dict[str, Any]]) -> str | None:
    """``act`` when at least one match may be acted on automatically (exact or hash tier),
    ``review`` when every match needs a person first (keypoint tier), None without matches.
    Each match also carries its own ``tier`` and ``confidence``."""
    levels = {m.get("confidence", "act") for m in matches}
    if not levels:
        return None
    return "act" if "act" in levels else "review"


def enqueue_match_events(
    store: Store, matches: Iterable[dict[str, Any]], content: dict[str, Any]
) -> list[str]:
    """Write one outbox row per (webhook of a matched list). Returns the event ids."""
    by_list: dict[str, list[dict[str, Any]]] = {}
    for m in matches:
        by_list.setdefault(m["list"], []).append(m)
    if not by_list:
        return []
    with store.engine.begin() as conn:
        hooks = conn.execute(
            sa.select(webhooks.c.id, hash_lists.c.name)
            .select_from(webhooks.join(hash_lists, hash_lists.c.id == webhooks.c.list_id))
            .where(hash_lists.c.name.in_(list(by_list)), webhooks.c.deleted_at.is_(None))
        ).all()
        rows = []
        now = time.time()
        for h in hooks:
            event_id = secrets.token_hex(16)
            payload = {
                "id": event_id,
                "type": "match",
                "created_at": utcnow(),
                "list": h.name,
                "matches": by_list[h.name],
                "confidence": overall_confidence(by_list[h.name]),
                "content": content,
            }
            rows.append({"event_id": event_id, "webhook_id": h.id,
                         "payload": json.dumps(payload, sort_keys=True),
                         "created_at": utcnow(), "attempts": 0, "next_attempt": now,
                         "status": "pending"})
        if rows:
            conn.execute(outbox.insert(), rows)
    return [r["event_id"] for r in rows]


# -- delivery -------------------------------------------------------------------------
class DeliveryWorker:
    """Background thread delivering due outbox rows. Safe with several workers on one
    database: a row is claimed with a compare-and-set on its attempt counter.

    Each webhook is a lane: its due rows are delivered one after another by one pool
    thread, while other webhooks' lanes run beside it (up to ``lanes`` destinations at
    once). A failed delivery ends its lane's turn, so a dead receiver costs one timeout
    per backoff step, never a timeout per queued event, and never another lane's time.
    An attempt lasts at most ``timeout`` seconds in all and reads none of the answer's
    body (:func:`~hashwatch.service.destinations.bounded_request`): a receiver that drips
    its headers or answers an endless body holds its lane for ``timeout``, no longer."""

    def __init__(self, store: Store, *, timeout: float = 10.0, max_attempts: int = 12,
                 backoff_base: float = 2.0, backoff_max: float = 3600.0,
                 poll_interval: float = 1.0, policy: DestinationPolicy | None = None,
                 lanes: int = 32, lease: float = LEASE_SECONDS) -> None:
        self.store = store
        # a claimed delivery whose worker died is retried after this (keep it above timeout)
        self.lease = max(lease, timeout + 1.0)
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.poll_interval = poll_interval
        self.policy = policy or DestinationPolicy()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=max(1, lanes),
                                        thread_name_prefix="hashwatch-webhook-lane")
        self._busy: set[int] = set()  # webhook ids with a lane running
        self._busy_lock = threading.Lock()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="hashwatch-webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 5)
        self._pool.shutdown(wait=True)

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.deliver_due()
            except Exception:  # the loop must survive a database hiccup
                log.exception("webhook delivery loop error")
            self._wake.wait(self.poll_interval)
            self._wake.clear()

    def backoff(self, attempts: int) -> float:
        base = min(self.backoff_max, self.backoff_base * 2 ** (attempts - 1))
        return base * (0.75 + 0.5 * random.random())  # jitter: no thundering herd

    def deliver_due(self, limit: int = 200, wait: bool = False) -> int:
        """Start a lane for every webhook with due rows and no lane running; returns how
        many rows were handed to lanes. ``wait``: return only when those lanes finished."""
        now = time.time()
        with self._busy_lock:
            busy = set(self._busy)
        q = (sa.select(outbox.c.id, outbox.c.attempts, outbox.c.webhook_id)
             .where(outbox.c.status == "pending", outbox.c.next_attempt <= now)
             .order_by(outbox.c.next_attempt).limit(limit))
        if busy:
            q = q.where(outbox.c.webhook_id.not_in(sorted(busy)))
        with self.store.engine.connect() as conn:
            due = conn.execute(q).all()
        per_hook: dict[int, list[tuple[int, int]]] = {}
        for row in due:
            per_hook.setdefault(row.webhook_id, []).append((row.id, row.attempts))
        futures = []
        for hook_id, rows in per_hook.items():
            with self._busy_lock:
                if hook_id in self._busy:
                    continue
                self._busy.add(hook_id)
            try:
                futures.append(self._pool.submit(self._lane, hook_id, rows))
            except RuntimeError:  # pool shut down while stopping
                with self._busy_lock:
                    self._busy.discard(hook_id)
                break
        if wait:
            for f in futures:
                f.result()
        return sum(len(r) for r in per_hook.values())

    def _lane(self, hook_id: int, rows: list[tuple[int, int]]) -> None:
        try:
            for outbox_id, attempts in rows:
                if self._stop.is_set():
                    return
                now = time.time()
                with self.store.engine.begin() as conn:
                    claimed = conn.execute(
                        outbox.update()
                        .where(outbox.c.id == outbox_id, outbox.c.attempts == attempts,
                               outbox.c.status == "pending")
                        .values(attempts=attempts + 1, next_attempt=now + self.lease)
                    ).rowcount
                if claimed and not self._deliver_one(outbox_id, attempts + 1):
                    # the receiver failed: its other events wait for their own retry
                    # time instead of each costing another timeout now
                    return
        except Exception:
            log.exception("webhook lane %d failed", hook_id)
        finally:
            with self._busy_lock:
                self._busy.discard(hook_id)
            self._wake.set()  # rows that arrived meanwhile get a lane at once

    def _deliver_one(self, outbox_id: int, attempt: int) -> bool:
        """One attempt; True when the receiver took it (or the webhook is gone)."""
        with self.store.engine.connect() as conn:
            row = conn.execute(
                sa.select(outbox.c.event_id, outbox.c.payload, webhooks.c.url,
                          webhooks.c.secret, webhooks.c.deleted_at)
                .select_from(outbox.join(webhooks, webhooks.c.id == outbox.c.webhook_id))
                .where(outbox.c.id == outbox_id)
            ).first()
        if row is None or row.deleted_at is not None:
            self._finish(outbox_id, "cancelled", "webhook deleted")
            return True
        body = row.payload.encode()
        ts = int(time.time())
        error = ""
        try:
            # the rules again, after resolving the name now: a name that moved to an
            # internal address since creation is refused, and the request goes to the
            # address that was checked
            target = pin(row.url, self.policy)
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "hashwatch-webhook/2",
                TIMESTAMP_HEADER: str(ts),
                SIGNATURE_HEADER: sign(row.secret, ts, row.event_id, body),
                EVENT_HEADER: row.event_id,
            }
            answer = bounded_request("POST", target, deadline=self.timeout, headers=headers,
                                     content=body)
            if 200 <= answer.status < 300:
                self._finish(outbox_id, "delivered", "")
                return True
            error = f"HTTP {answer.status}"
        except DestinationError as exc:
            error = f"{exc.code}: {exc.message}"
        except TimeoutError:
            error = f"no answer within {self.timeout:g} s"
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        if attempt >= self.max_attempts:
            self._finish(outbox_id, "dead", error)
            log.warning("webhook event %s given up after %d attempts: %s", row.event_id,
                        attempt, error)
            return False
        with self.store.engine.begin() as conn:
            conn.execute(
                outbox.update().where(outbox.c.id == outbox_id)
                .values(next_attempt=time.time() + self.backoff(attempt), last_error=error)
            )
        return False

    def _finish(self, outbox_id: int, status: str, error: str) -> None:
        with self.store.engine.begin() as conn:
            conn.execute(
                outbox.update().where(outbox.c.id == outbox_id)
                .values(status=status, last_error=error,
                        delivered_at=utcnow() if status == "delivered" else None)
            )


def outbox_rows(store: Store, limit: int = 100) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(outbox.c.id, outbox.c.event_id, outbox.c.webhook_id, outbox.c.status,
                      outbox.c.attempts, outbox.c.last_error, outbox.c.created_at,
                      outbox.c.delivered_at).order_by(outbox.c.id.desc()).limit(limit)
        ).all()
    return [dict(r._mapping) for r in rows]
