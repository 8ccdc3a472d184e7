"""Review queue and allow-list.

Matched uploads become review items holding a blurred greyscale thumbnail (the default
view) and a reduced clear preview (sent only on an explicit, audited reveal). A reviewer
confirms, rejects as a false positive, or escalates; every decision is audited. A false
positive can be allow-listed: its SHA-256 and PDQ are recorded, and content that is the
same (identical bytes, or a PDQ within ``ALLOW_PDQ_RADIUS``, i.e. a re-encode or resize of
it) no longer alerts: no webhook, no review item, no match in the API answer.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np
import sqlalchemy as sa

from hashwatch.service.schema import allow_list, review_items
from hashwatch.store import Store
from hashwatch.store.core import utcnow

DECISIONS = ("confirm", "false_positive", "escalate")
STATUS_OF = {"confirm": "confirmed", "false_positive": "false_positive",
             "escalate": "escalated"}
ALLOW_PDQ_RADIUS = 16  # re-encodes/resizes of one picture sit well inside this

_POP = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint16)


class ItemNotFound(Exception):
    pass


def create_item(store: Store, *, submitted_by: str, filename: str, hashes: Any,
                matches: list[dict[str, Any]], thumb: bytes | None,
                preview: bytes | None) -> int:
    with store.engine.begin() as conn:
        res = conn.execute(
            review_items.insert().values(
                created_at=utcnow(), submitted_by=submitted_by, filename=filename[:500],
                sha256=hashes.sha256 or "", md5=hashes.md5 or "", pdq=hashes.pdq or "",
                pdq_quality=hashes.pdq_quality, matches=json.dumps(matches),
                thumb=thumb, preview=preview, status="pending",
            )
        )
        return int(res.inserted_primary_key[0])


def _item_dict(r: Any) -> dict[str, Any]:
    return {
        "id": r.id, "created_at": r.created_at, "submitted_by": r.submitted_by,
        "filename": r.filename, "sha256": r.sha256, "pdq": r.pdq,
        "pdq_quality": r.pdq_quality, "matches": json.loads(r.matches), "status": r.status,
        "decided_by": r.decided_by, "decided_at": r.decided_at, "note": r.note,
    }


_COLS = [c for c in review_items.c if c.name not in ("thumb", "preview")]


def list_items(store: Store, status: str | None = "pending", limit: int = 50,
               after_id: int = 0) -> list[dict[str, Any]]:
    q = sa.select(*_COLS).where(review_items.c.id > after_id)
    if status:
        q = q.where(review_items.c.status == status)
    with store.engine.connect() as conn:
        rows = conn.execute(q.order_by(review_items.c.id).limit(limit)).all()
    return [_item_dict(r) for r in rows]


def get_item(store: Store, item_id: int) -> dict[str, Any]:
    with store.engine.connect() as conn:
        r = conn.execute(sa.select(*_COLS).where(review_items.c.id == item_id)).first()
    if r is None:
        raise ItemNotFound(item_id)
    return _item_dict(r)


def item_image(store: Store, item_id: int, which: str) -> bytes | None:
    col = review_items.c.thumb if which == "thumb" else review_items.c.preview
    with store.engine.connect() as conn:
        r = conn.execute(sa.select(col).where(review_items.c.id == item_id)).first()
    if r is None:
        raise ItemNotFound(item_id)
    return r[0]


def decide(store: Store, item_id: int, decision: str, *, actor: str, note: str = "",
           allow: bool = False) -> dict[str, Any]:
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {', '.join(DECISIONS)}")
    if allow and decision != "false_positive":
        raise ValueError("only a false positive can be allow-listed")
    item = get_item(store, item_id)
    now = utcnow()
    with store.engine.begin() as conn:
        conn.execute(
            review_items.update().where(review_items.c.id == item_id)
            .values(status=STATUS_OF[decision], decided_by=actor, decided_at=now,
                    note=note[:2000])
        )
        if allow:
            for sig in ("sha256", "pdq"):
                value = item[sig]
                if not value:
                    continue
                exists = conn.execute(
                    sa.select(allow_list.c.id).where(allow_list.c.signal_type == sig,
                                                     allow_list.c.value == value)
                ).first()
                if exists is None:
                    conn.execute(allow_list.insert().values(
                        signal_type=sig, value=value, created_at=now, created_by=actor,
                        review_item_id=item_id, note=note[:2000]))
    store.audit(actor, "review.decide", {
        "item": item_id, "decision": decision, "previous": item["status"],
        "allow_listed": allow, "entries": [m.get("entry_id") for m in item["matches"]],
    })
    return get_item(store, item_id)


class AllowList:
    """In-memory view of the allow-list, refreshed by the service's poll loop."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._marker: tuple[int, int] = (-1, -1)
        self._sha256: set[str] = set()
        self._pdq = np.zeros((0, 32), dtype=np.uint8)

    def refresh(self) -> None:
        with self.store.engine.connect() as conn:
            marker = tuple(conn.execute(
                sa.select(sa.func.coalesce(sa.func.max(allow_list.c.id), 0),
                          sa.func.count()).select_from(allow_list)
            ).one())
            if marker == self._marker:
                return
            rows = conn.execute(sa.select(allow_list.c.signal_type, allow_list.c.value)).all()
        sha = {v for s, v in rows if s == "sha256"}
        pdq = [v for s, v in rows if s == "pdq"]
        codes = (np.frombuffer(bytes.fromhex("".join(pdq)), dtype=np.uint8).reshape(-1, 32)
                 if pdq else np.zeros((0, 32), dtype=np.uint8))
        with self._lock:
            self._sha256, self._pdq, self._marker = sha, codes, marker  # type: ignore[assignment]

    def allowed(self, sha256: str | None = None, pdq: str | None = None) -> bool:
        with self._lock:
            sha_set, codes = self._sha256, self._pdq
        if sha256 and sha256 in sha_set:
            return True
        if pdq and len(codes):
            q = np.frombuffer(bytes.fromhex(pdq), dtype=np.uint8)
            d = _POP[np.bitwise_xor(codes, q)].sum(axis=1)
            return bool((d <= ALLOW_PDQ_RADIUS).any())
        return False
