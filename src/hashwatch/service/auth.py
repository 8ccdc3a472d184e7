"""API keys with scopes, stored only as salted hashes.

A key reads ``hw_<key_id>_<secret>``: ``key_id`` (public, 12 hex digits) finds the row,
the 256-bit random ``secret`` is checked against ``sha256(salt || secret)``. A fast hash
is enough because the secret is random and long (no dictionary to try); scrypt would put
tens of milliseconds on every request. Verified rows are cached for a few seconds, so a
revocation takes effect on every worker within ``CACHE_SECONDS``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass

import sqlalchemy as sa

from hashwatch.service.schema import api_keys
from hashwatch.store import Store, StoreError
from hashwatch.store.guards import InvalidText, check_identifier
from hashwatch.store.records import utcnow

SCOPES = ("hash", "match", "curate", "review", "admin")
CACHE_SECONDS = 5.0
_KEY_RE = re.compile(r"^hw_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,199}$")


class KeyError_(StoreError):
    """A key operation that cannot be done as asked."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name (the audit actor) and its scopes."""

    name: str
    key_id: str
    scopes: frozenset[str]
    rate_limit: float | None = None
    queue: str = "default"  # the review queue its matches go to / that it reviews

    def has(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def parse_scopes(text: str | list[str] | tuple[str, ...]) -> list[str]:
    items = text.split(",") if isinstance(text, str) else list(text)
    scopes = sorted({s.strip().lower() for s in items if s.strip()})
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise KeyError_(
            f"invalid scopes {', '.join(bad) or '(none)'}: choose from {', '.join(SCOPES)}"
        )
    return scopes


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def create_key(
    store: Store, name: str, scopes: str | list[str], *, actor: str = "cli",
    rate_limit: float | None = None, queue: str | None = None,
) -> str:
    """Create a key and return it (the only time it is ever visible). ``queue``: the
    review queue its matches go to (match keys) or that it reviews (review keys)."""
    if not _NAME_RE.match(name or ""):
        raise KeyError_("invalid key name (letters, digits, _ . @ -; up to 200)")
    if rate_limit is not None and not (0 <= rate_limit < 1e9):
        raise KeyError_("invalid rate_limit (0 <= requests/s < 1e9)")
    if queue is not None:
        try:
            queue = check_identifier(queue, "queue")
        except InvalidText as exc:
            raise KeyError_(f"invalid {exc}") from None
    scope_list = parse_scopes(scopes)
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    with store.engine.begin() as conn:
        if conn.execute(sa.select(api_keys.c.id).where(api_keys.c.name == name)).first():
            raise KeyError_("a key of that name already exists (revoked keys keep their name)")
        conn.execute(
            api_keys.insert().values(
                name=name, key_id=key_id, salt=salt, key_hash=_digest(salt, secret),
                scopes=",".join(scope_list), rate_limit=rate_limit, created_at=utcnow(),
                created_by=actor, queue=queue,
            )
        )
    store.audit(actor, "key.create", {"name": name, "scopes": scope_list, "queue": queue})
    return f"hw_{key_id}_{secret}"


def revoke_key(store: Store, name: str, *, actor: str = "cli") -> None:
    with store.engine.begin() as conn:
        row = conn.execute(
            sa.select(api_keys.c.id, api_keys.c.revoked_at).where(api_keys.c.name == name)
        ).first()
        if row is None:
            raise KeyError_(f"no key named {name[:64]!r}")
        if row.revoked_at is None:
            conn.execute(
                api_keys.update().where(api_keys.c.id == row.id).values(revoked_at=utcnow())
            )
    store.audit(actor, "key.revoke", {"name": name})


def list_keys(store: Store) -> list[dict]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(api_keys.c.name, api_keys.c.key_id, api_keys.c.scopes,
                      api_keys.c.rate_limit, api_keys.c.created_at, api_keys.c.created_by,
                      api_keys.c.revoked_at, api_keys.c.queue).order_by(api_keys.c.name)
        ).all()
    return [
        {"name": r.name, "key_id": r.key_id, "scopes": r.scopes.split(","),
         "rate_limit": r.rate_limit, "created_at": r.created_at, "created_by": r.created_by,
         "revoked_at": r.revoked_at, "queue": r.queue or "default"}
        for r in rows
    ]


class KeyVerifier:
    """Checks presented keys against the table, with a short per-process cache."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: dict[str, tuple[float, object]] = {}
        self._lock = threading.Lock()
        self._known: frozenset[str] = frozenset()  # key ids that exist (revoked ones too)
        self._known_at = float("-inf")

    def _row(self, key_id: str) -> object:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key_id)
            if hit is not None and now - hit[0] < CACHE_SECONDS:
                return hit[1]
        with self.store.engine.connect() as conn:
            row = conn.execute(api_keys.select().where(api_keys.c.key_id == key_id)).first()
        with self._lock:
            if len(self._cache) > 10_000:  # unbounded growth from random key ids
                self._cache.clear()
            self._cache[key_id] = (now, row)
        return row

    def is_known_key(self, presented: str) -> bool:
        """Whether ``presented`` names an existing key (by its public id; the secret is not
        checked). Answered from a set of every key id, reloaded at most every
        ``CACHE_SECONDS``: the failed-authentication throttle uses it to keep checking the
        keys of real clients that share an address with a flood, without a database lookup
        per flooding request."""
        m = _KEY_RE.match(presented.strip())
        if not m:
            return False
        key_id = m.group(1)
        now = time.monotonic()
        with self._lock:
            known, fresh = self._known, now - self._known_at < CACHE_SECONDS
        if key_id in known or fresh:
            return key_id in known
        with self.store.engine.connect() as conn:
            ids = frozenset(conn.execute(sa.select(api_keys.c.key_id)).scalars())
        with self._lock:
            self._known, self._known_at = ids, now
        return key_id in ids

    def verify(self, presented: str) -> Principal | None:
        m = _KEY_RE.match(presented.strip())
        if not m:
            return None
        key_id, secret = m.groups()
        row = self._row(key_id)
        if row is None or row.revoked_at is not None:  # type: ignore[attr-defined]
            return None
        if not hmac.compare_digest(_digest(row.salt, secret), row.key_hash):  # type: ignore[attr-defined]
            return None
        return Principal(
            name=row.name,  # type: ignore[attr-defined]
            key_id=key_id,
            scopes=frozenset(row.scopes.split(",")),  # type: ignore[attr-defined]
            rate_limit=row.rate_limit,  # type: ignore[attr-defined]
            queue=row.queue or "default",  # type: ignore[attr-defined]
        )

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()
