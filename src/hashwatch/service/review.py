"""Review queue and allow-list.

Matched uploads become review items holding a blurred greyscale thumbnail (the default
view) and a reduced clear preview (sent only on an explicit, audited reveal). A reviewer
confirms, rejects as a false positive, or escalates; every decision is audited.

Queues: an item goes to the review queue of the key that submitted the upload
(``api_keys.queue``, ``"default"`` when unset); a review key sees, fetches and decides
only items of its own queue (an admin key sees all). Items are named by a random public
id (``ri_`` + 128 bits), never by their row number, so ids cannot be enumerated; an item
of another queue answers exactly as a missing one does.

Retention: the thumbnail and the clear preview are deleted ``retention`` seconds after the
decision (default one hour; 0 = at the decision) by :func:`purge_images`, which the
service runs on a schedule. The decision record and the hashes stay.

Allow-list model: a false positive can be allow-listed, but only for what was reviewed: a
*perceptual* match between this content and one list entry. Each allow-list row is
``(sha256 or pdq of the content, entry_id)``: it silences only perceptual matches of that
entry for identical bytes or a PDQ within ``ALLOW_PDQ_RADIUS``; an exact (cryptographic)
match of a curated entry is never silenced, and other entries still match. A reviewer's
proposal is *pending* until a key with curate scope, or a second reviewer, approves it;
a curate (or admin) key's decision is active at once. A reviewer lists and approves only
rows proposed from items of its own queue (the second person must be able to see the item;
another queue's row answers as a missing one); curate keys see them all. Rows are listed,
approved and removed through the API, and every change is audited.
"""

from __future__ import annotations

import json
import secrets
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import sqlalchemy as sa

from hashwatch.service.schema import allow_list, review_items
from hashwatch.store import Store
from hashwatch.store.records import utcnow

DECISIONS = ("confirm", "false_positive", "escalate")
STATUS_OF = {"confirm": "confirmed", "false_positive": "false_positive",
             "escalate": "escalated"}
ALLOW_PDQ_RADIUS = 16  # re-encodes/resizes of one picture sit well inside this
DEFAULT_QUEUE = "default"
PUBLIC_ID_PREFIX = "ri_"

_POP = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint16)


class ItemNotFound(Exception):
    pass


class AllowListError(Exception):
    """An allow-list change that cannot be made (``status``: the API's answer)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def new_public_id() -> str:
    return PUBLIC_ID_PREFIX + secrets.token_urlsafe(16)


def create_item(store: Store, *, submitted_by: str, filename: str, hashes: Any,
                matches: list[dict[str, Any]], thumb: bytes | None,
                preview: bytes | None, queue: str | None = None) -> str:
    """Store a review item; returns its public id."""
    public_id = new_public_id()
    with store.engine.begin() as conn:
        conn.execute(
            review_items.insert().values(
                created_at=utcnow(), submitted_by=submitted_by, filename=filename[:500],
                sha256=hashes.sha256 or "", md5=hashes.md5 or "", pdq=hashes.pdq or "",
                pdq_quality=hashes.pdq_quality, matches=json.dumps(matches),
                thumb=thumb, preview=preview, status="pending", public_id=public_id,
                queue=queue or DEFAULT_QUEUE,
            )
        )
    return public_id


def _item_dict(r: Any) -> dict[str, Any]:
    return {
        "id": r.public_id, "created_at": r.created_at, "submitted_by": r.submitted_by,
        "filename": r.filename, "sha256": r.sha256, "pdq": r.pdq,
        "pdq_quality": r.pdq_quality, "matches": json.loads(r.matches), "status": r.status,
        "decided_by": r.decided_by, "decided_at": r.decided_at, "note": r.note,
        "queue": r.queue, "images_purged_at": r.images_purged_at,
    }


_COLS = [c for c in review_items.c if c.name not in ("thumb", "preview")]


def _scoped(q: sa.Select, queue: str | None) -> sa.Select:
    """``queue`` None = every queue (admin)."""
    return q if queue is None else q.where(review_items.c.queue == queue)


def list_items(store: Store, status: str | None = "pending", limit: int = 50,
               after: str | None = None, *, queue: str | None = DEFAULT_QUEUE
               ) -> list[dict[str, Any]]:
    """Items of ``queue`` in creation order, after the item whose public id is ``after``."""
    q = _scoped(sa.select(*_COLS), queue)
    with store.engine.connect() as conn:
        if after:
            row = conn.execute(_scoped(sa.select(review_items.c.id), queue)
                               .where(review_items.c.public_id == after)).first()
            if row is None:
                raise ItemNotFound(after)
            q = q.where(review_items.c.id > row.id)
        if status:
            q = q.where(review_items.c.status == status)
        rows = conn.execute(q.order_by(review_items.c.id).limit(limit)).all()
    return [_item_dict(r) for r in rows]


def _row(conn: sa.Connection, public_id: str, queue: str | None, cols: list[Any]) -> Any:
    r = conn.execute(_scoped(sa.select(*cols), queue)
                     .where(review_items.c.public_id == public_id)).first()
    if r is None:
        raise ItemNotFound(public_id)
    return r


def get_item(store: Store, public_id: str, *, queue: str | None = DEFAULT_QUEUE
             ) -> dict[str, Any]:
    with store.engine.connect() as conn:
        return _item_dict(_row(conn, public_id, queue, _COLS))


def item_image(store: Store, public_id: str, which: str, *, queue: str | None = DEFAULT_QUEUE
               ) -> bytes | None:
    col = review_items.c.thumb if which == "thumb" else review_items.c.preview
    with store.engine.connect() as conn:
        return _row(conn, public_id, queue, [col])[0]


def decide(store: Store, public_id: str, decision: str, *, actor: str, note: str = "",
           allow: bool = False, queue: str | None = DEFAULT_QUEUE,
           can_curate: bool = False, retention: float | None = None) -> dict[str, Any]:
    """Record a decision. ``allow`` (false positives only) proposes allow-list rows for the
    item's perceptual matches: active at once when ``can_curate``, else pending.
    ``retention`` 0 deletes the images now. Raises ItemNotFound, ValueError."""
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {', '.join(DECISIONS)}")
    if allow and decision != "false_positive":
        raise ValueError("only a false positive can be allow-listed")
    item = get_item(store, public_id, queue=queue)
    scope = sorted({m["entry_id"] for m in item["matches"]
                    if not m.get("exact") and m.get("entry_id") is not None})
    if allow and not scope:
        raise ValueError("exact (cryptographic) list matches cannot be allow-listed: a key "
                         "with curate scope removes the entry from its list instead")
    now = utcnow()
    created: list[int] = []
    with store.engine.begin() as conn:
        conn.execute(
            review_items.update().where(review_items.c.public_id == public_id)
            .values(status=STATUS_OF[decision], decided_by=actor, decided_at=now,
                    note=note[:2000])
        )
        if allow:
            for sig in ("sha256", "pdq"):
                value = item[sig]
                if not value:
                    continue
                for eid in scope:
                    exists = conn.execute(
                        sa.select(allow_list.c.id, allow_list.c.status)
                        .where(allow_list.c.signal_type == sig, allow_list.c.value == value,
                               allow_list.c.entry_id == eid)).first()
                    values = dict(
                        status="active" if can_curate else "pending",
                        approved_by=actor if can_curate else None,
                        approved_at=now if can_curate else None,
                        removed_by=None, removed_at=None, created_by=actor, created_at=now,
                        review_item_id=_internal_id(conn, public_id), note=note[:2000])
                    if exists is None:
                        res = conn.execute(allow_list.insert().values(
                            signal_type=sig, value=value, entry_id=eid, **values))
                        created.append(int(res.inserted_primary_key[0]))
                    elif exists.status == "removed" or (can_curate and
                                                        exists.status == "pending"):
                        conn.execute(allow_list.update().where(allow_list.c.id == exists.id)
                                     .values(**values))
                        created.append(int(exists.id))
        store._audit(conn, actor, "review.decide", None, {
            "item": public_id, "decision": decision, "previous": item["status"],
            "allow_listed": allow, "allow_list_rows": created,
            "allow_list_status": ("active" if can_curate else "pending") if allow else None,
            "entries": [m.get("entry_id") for m in item["matches"]],
        })
    if retention is not None and retention <= 0:
        purge_images(store, 0, actor=actor)
    return get_item(store, public_id, queue=queue)


def _internal_id(conn: sa.Connection, public_id: str) -> int:
    return int(conn.execute(sa.select(review_items.c.id)
                            .where(review_items.c.public_id == public_id)).scalar_one())


def purge_images(store: Store, retention: float, *, actor: str = "retention",
                 now: datetime | None = None) -> int:
    """Delete the thumbnail and the clear preview of items decided more than
    ``retention`` seconds ago. Returns how many items lost their images (audited)."""
    at = now or datetime.now(UTC)
    cutoff = (at - timedelta(seconds=max(0.0, retention))).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    stamp = utcnow()
    with store.engine.begin() as conn:
        n = conn.execute(
            review_items.update()
            .where(review_items.c.decided_at.is_not(None),
                   review_items.c.decided_at <= cutoff,
                   sa.or_(review_items.c.thumb.is_not(None),
                          review_items.c.preview.is_not(None)))
            .values(thumb=None, preview=None, images_purged_at=stamp)
        ).rowcount
        if n:
            store._audit(conn, actor, "review.images_purged", None,
                         {"items": n, "retention_seconds": retention})
    return int(n or 0)


# -- allow-list -------------------------------------------------------------------------
_ALLOW_COLS = [allow_list.c.id, allow_list.c.signal_type, allow_list.c.value,
               allow_list.c.entry_id, allow_list.c.status, allow_list.c.created_at,
               allow_list.c.created_by, allow_list.c.approved_by, allow_list.c.approved_at,
               allow_list.c.removed_by, allow_list.c.removed_at, allow_list.c.note]


def _allow_dict(r: Any) -> dict[str, Any]:
    return dict(r._mapping)


def _allow_scoped(q: sa.Select, queue: str | None) -> sa.Select:
    """Rows proposed from items of ``queue`` (None: every row)."""
    if queue is None:
        return q
    return q.join(review_items, review_items.c.id == allow_list.c.review_item_id) \
        .where(review_items.c.queue == queue)


def list_allow(store: Store, status: str | None = None, limit: int = 100,
               after_id: int = 0, *, queue: str | None = None) -> list[dict[str, Any]]:
    """Allow-list rows in id order after ``after_id``; ``queue``: only rows proposed from
    that review queue's items (a reviewer's view)."""
    q = _allow_scoped(sa.select(*_ALLOW_COLS), queue).where(allow_list.c.id > after_id)
    if status:
        q = q.where(allow_list.c.status == status)
    with store.engine.connect() as conn:
        rows = conn.execute(q.order_by(allow_list.c.id).limit(limit)).all()
    return [_allow_dict(r) for r in rows]


def _allow_row(conn: sa.Connection, allow_id: int, queue: str | None = None) -> Any:
    r = conn.execute(_allow_scoped(sa.select(*_ALLOW_COLS), queue)
                     .where(allow_list.c.id == allow_id)).first()
    if r is None:
        raise AllowListError(404, "unknown_allow_entry", f"no allow-list entry {allow_id}")
    return r


def approve_allow(store: Store, allow_id: int, *, actor: str, can_curate: bool,
                  queue: str | None = None) -> dict[str, Any]:
    """Activate a pending row: a curate key, or a reviewer other than its proposer who
    reviews the queue the row was proposed from (``queue``; other rows are not found)."""
    with store.engine.begin() as conn:
        r = _allow_row(conn, allow_id, None if can_curate else queue)
        if r.status != "pending":
            raise AllowListError(409, "not_pending", f"allow-list entry {allow_id} is "
                                 f"{r.status}, not pending")
        if not can_curate and r.created_by == actor:
            raise AllowListError(403, "second_person_required",
                                 "a second reviewer (or a key with curate scope) must "
                                 "approve an allow-list entry")
        conn.execute(allow_list.update().where(allow_list.c.id == allow_id)
                     .values(status="active", approved_by=actor, approved_at=utcnow()))
        store._audit(conn, actor, "allow_list.approve", None,
                     {"id": allow_id, "entry_id": r.entry_id, "proposed_by": r.created_by})
        return _allow_dict(_allow_row(conn, allow_id))


def remove_allow(store: Store, allow_id: int, *, actor: str) -> dict[str, Any]:
    with store.engine.begin() as conn:
        r = _allow_row(conn, allow_id)
        if r.status == "removed":
            raise AllowListError(409, "already_removed", f"allow-list entry {allow_id} "
                                 "was removed already")
        conn.execute(allow_list.update().where(allow_list.c.id == allow_id)
                     .values(status="removed", removed_by=actor, removed_at=utcnow()))
        store._audit(conn, actor, "allow_list.remove", None,
                     {"id": allow_id, "entry_id": r.entry_id, "previous": r.status})
        return _allow_dict(_allow_row(conn, allow_id))


class AllowList:
    """In-memory view of the active allow-list rows, refreshed by the service's poll loop.

    :meth:`filter` removes the perceptual matches an active row covers and keeps the rest.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._marker: tuple[Any, ...] = (-1,)
        self._sha256: dict[int, set[str]] = {}
        self._pdq: dict[int, np.ndarray] = {}

    def refresh(self, conn: sa.Connection | None = None) -> None:
        """Reload the active rows when they changed. ``conn``: read on this connection (the
        service passes the change feed's snapshot, saving a connection and a transaction
        per refresh); None: a connection of its own."""
        if conn is None:
            with self.store.engine.connect() as own:
                self._refresh(own)
        else:
            self._refresh(conn)

    def _refresh(self, conn: sa.Connection) -> None:
        # The marker names the *set* of active rows (rows do not change while active), not
        # its newest member: on PostgreSQL changes commit out of order, so a max id or time
        # can stay put while an approval that committed late and a removal both land
        # between two refreshes (issue 12). Count, sum and sum of squares of the ids differ
        # for any change of up to two rows in and two out.
        ident = sa.cast(allow_list.c.id, sa.BigInteger)
        marker = tuple(int(x or 0) for x in conn.execute(
            sa.select(sa.func.count(), sa.func.sum(ident), sa.func.sum(ident * ident))
            .select_from(allow_list).where(allow_list.c.status == "active")
        ).one())
        if marker == self._marker:
            return
        rows = conn.execute(sa.select(allow_list.c.signal_type, allow_list.c.value,
                                      allow_list.c.entry_id)
                            .where(allow_list.c.status == "active",
                                   allow_list.c.entry_id.is_not(None))).all()
        sha: dict[int, set[str]] = {}
        pdq: dict[int, list[str]] = {}
        for sig, value, eid in rows:
            if sig == "sha256":
                sha.setdefault(int(eid), set()).add(value)
            elif sig == "pdq":
                pdq.setdefault(int(eid), []).append(value)
        codes = {eid: np.frombuffer(bytes.fromhex("".join(v)), dtype=np.uint8).reshape(-1, 32)
                 for eid, v in pdq.items()}
        with self._lock:
            self._sha256, self._pdq, self._marker = sha, codes, marker

    def _covers(self, entry_id: int, sha256: str | None, pdq: str | None) -> bool:
        with self._lock:
            sha_set, codes = self._sha256.get(entry_id), self._pdq.get(entry_id)
        if sha256 and sha_set and sha256 in sha_set:
            return True
        if pdq and codes is not None and len(pdq) == 64:
            q = np.frombuffer(bytes.fromhex(pdq), dtype=np.uint8)
            return bool((_POP[np.bitwise_xor(codes, q)].sum(axis=1) <= ALLOW_PDQ_RADIUS).any())
        return False

    def filter(self, matches: list[dict[str, Any]], sha256: str | None = None,
               pdq: str | None = None) -> tuple[list[dict[str, Any]], bool]:
        """(matches kept, whether any was silenced). Exact matches are always kept; a
        perceptual match is silenced only by an active row scoped to its entry. A video
        frame's match is judged by that frame's PDQ (``frame_pdq``)."""
        if not matches:
            return matches, False
        with self._lock:
            empty = not self._sha256 and not self._pdq
        if empty:
            return matches, False
        kept = []
        for m in matches:
            eid = m.get("entry_id")
            if not m.get("exact") and eid is not None and self._covers(
                    int(eid), sha256, m.get("frame_pdq") or pdq):
                continue
            kept.append(m)
        return kept, len(kept) != len(matches)
