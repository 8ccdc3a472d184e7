"""Service tables (API keys, webhooks, outbox, review queue, allow-list), in the store's
metadata so one Alembic history covers everything. Migration: 0003_service.

Timestamps follow the store: ISO-8601 UTC strings. The outbox keeps its retry clock as a
float (Unix seconds) because the delivery loop compares it on every poll.
"""

from __future__ import annotations

import sqlalchemy as sa

from hashwatch.store.schema import metadata

_BIG = sa.BigInteger().with_variant(sa.Integer, "sqlite")

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    # public lookup prefix of the key ("hw_<key_id>_<secret>"); the secret is never stored
    sa.Column("key_id", sa.String(32), nullable=False, unique=True),
    sa.Column("salt", sa.String(64), nullable=False),
    sa.Column("key_hash", sa.String(128), nullable=False),
    sa.Column("scopes", sa.String(200), nullable=False),
    sa.Column("rate_limit", sa.Float, nullable=True),  # requests/s; NULL = service default
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False, server_default=""),
    sa.Column("revoked_at", sa.String(32), nullable=True),
    # review queue the key's matches go to (match keys) or that it reviews (review keys);
    # NULL = "default". Migration 0007_review_scope.
    sa.Column("queue", sa.String(200), nullable=True),
)

webhooks = sa.Table(
    "webhooks",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("list_id", sa.Integer, sa.ForeignKey("hash_lists.id"), nullable=False),
    sa.Column("url", sa.String(2000), nullable=False),
    # HMAC key: must be readable to sign, so it is stored as issued (shown once to the caller)
    sa.Column("secret", sa.String(128), nullable=False),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False, server_default=""),
    sa.Column("deleted_at", sa.String(32), nullable=True),
    sa.Index("ix_webhooks_list", "list_id"),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", _BIG, primary_key=True),
    sa.Column("event_id", sa.String(64), nullable=False, unique=True),
    sa.Column("webhook_id", sa.Integer, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt", sa.Float, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("delivered_at", sa.String(32), nullable=True),
    sa.Column("last_error", sa.Text, nullable=False, server_default=""),
    sa.Index("ix_outbox_due", "status", "next_attempt"),
)

review_items = sa.Table(
    "review_items",
    metadata,
    sa.Column("id", _BIG, primary_key=True),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("submitted_by", sa.String(200), nullable=False),
    sa.Column("filename", sa.String(500), nullable=False, server_default=""),
    sa.Column("sha256", sa.String(64), nullable=False, server_default=""),
    sa.Column("md5", sa.String(32), nullable=False, server_default=""),
    sa.Column("pdq", sa.String(64), nullable=False, server_default=""),
    sa.Column("pdq_quality", sa.Integer, nullable=True),
    sa.Column("matches", sa.Text, nullable=False, server_default="[]"),
    # server-side blurred greyscale thumbnail (the default view) and a reduced clear
    # preview sent only on an explicit, audited reveal
    sa.Column("thumb", sa.LargeBinary, nullable=True),
    sa.Column("preview", sa.LargeBinary, nullable=True),
    sa.Column("status", sa.String(20), nullable=False, server_default="pending"),
    sa.Column("decided_by", sa.String(200), nullable=True),
    sa.Column("decided_at", sa.String(32), nullable=True),
    sa.Column("note", sa.Text, nullable=False, server_default=""),
    # what the API calls the item: random, so ids cannot be enumerated (0007_review_scope)
    sa.Column("public_id", sa.String(40), nullable=True, unique=True),
    sa.Column("queue", sa.String(200), nullable=False, server_default="default"),
    sa.Column("images_purged_at", sa.String(32), nullable=True),
    sa.Index("ix_review_status", "status", "id"),
    sa.Index("ix_review_queue", "queue", "status", "id"),
)

allow_list = sa.Table(
    "allow_list",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("signal_type", sa.String(40), nullable=False),
    sa.Column("value", sa.String(400), nullable=False),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("review_item_id", sa.BigInteger, nullable=True),
    sa.Column("note", sa.Text, nullable=False, server_default=""),
    # scope: the list entry whose perceptual match was reviewed; an allow-list row never
    # silences another entry, and never an exact match (0007_review_scope)
    sa.Column("entry_id", sa.BigInteger, nullable=True),
    # pending (proposed by a reviewer) -> active (approved by curate or a second person)
    # -> removed
    sa.Column("status", sa.String(16), nullable=False, server_default="active"),
    sa.Column("approved_by", sa.String(200), nullable=True),
    sa.Column("approved_at", sa.String(32), nullable=True),
    sa.Column("removed_by", sa.String(200), nullable=True),
    sa.Column("removed_at", sa.String(32), nullable=True),
    sa.UniqueConstraint("signal_type", "value", "entry_id", name="uq_allow_list_scope"),
)

__all__ = ["allow_list", "api_keys", "outbox", "review_items", "webhooks"]
