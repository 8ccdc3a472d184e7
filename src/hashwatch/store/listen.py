"""Push notifications from PostgreSQL: a thread that LISTENs and calls back on each NOTIFY.

Every insert into ``changes`` sends ``NOTIFY hashwatch_feed`` (a statement trigger, migration
0009_feed); PostgreSQL delivers it when the writing transaction commits, so a listener learns
of a committed change within a round trip instead of at its next poll. Notifications carry
no data (the feed is read with ``Store.snapshot()``), so a lost or coalesced one costs at most
one poll interval: callers keep polling as the fallback, and the listener reports each
(re)connection as a notification because anything may have been missed while it was down.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

import sqlalchemy as sa

log = logging.getLogger(__name__)

FEED_CHANNEL = "hashwatch_feed"
RECONCILE_CHANNEL = "hashwatch_reconcile"


def conninfo(url: sa.URL) -> str:
    """A libpq URI for psycopg from a SQLAlchemy URL (password included: never log it)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def notify(engine: sa.Engine, channel: str, payload: str = "") -> None:
    """Send a notification (delivered to listeners when this short transaction commits)."""
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_notify(:c, :p)"), {"c": channel, "p": payload})


class FeedListener:
    """``on_notify(channel, payload)`` for each notification on ``channels`` (and once per
    channel with an empty payload after each (re)connect: what was sent meanwhile), from a
    daemon thread with its own connection; reconnects with capped exponential backoff
    (0.2 s .. 5 s). ``connected`` tells whether it currently listens."""

    def __init__(self, url: sa.URL, on_notify: Callable[[str, str], None],
                 channels: Sequence[str] = (FEED_CHANNEL,), *, wait: float = 1.0) -> None:
        self._conninfo = conninfo(url)
        self.on_notify = on_notify
        self.channels = tuple(channels)
        self.wait = wait
        self.connected = False
        self.notifications = 0
        self.reconnects = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="hashwatch-listen", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        import psycopg

        backoff = 0.2
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as conn:
                    for ch in self.channels:
                        conn.execute(f'LISTEN "{ch}"')
                    self.connected = True
                    backoff = 0.2
                    for ch in self.channels:  # changes while we were not listening
                        self.on_notify(ch, "")
                    while not self._stop.is_set():
                        for n in conn.notifies(timeout=self.wait):
                            self.notifications += 1
                            self.on_notify(n.channel, n.payload)
            except Exception as exc:  # connection lost, server restarting: poll meanwhile
                if not self._stop.is_set():
                    log.warning("change-feed listener disconnected (%s); retrying in %.1f s",
                                type(exc).__name__, backoff)
            self.connected = False
            if self._stop.wait(backoff):
                return
            self.reconnects += 1
            backoff = min(5.0, backoff * 2)
