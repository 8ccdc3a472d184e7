"""Review queues, unguessable review ids, image retention, scoped allow-list.

* ``api_keys.queue``: the review queue a key's matches go to / that a reviewer reviews.
* ``review_items.public_id`` (random, what the API shows), ``queue``,
  ``images_purged_at`` (thumbnail and clear preview deleted after the retention).
* ``allow_list``: scoped to the list entry whose perceptual match was reviewed
  (``entry_id``), with a status (pending -> active -> removed) and who approved or removed
  it. Rows made before this (unscoped) become one scoped row per perceptual match of
  their review item, as they were decided by a reviewer alone: pending, awaiting curate
  approval or a second reviewer.

Revision ID: 0007_review_scope
Revises: 0003_service
"""

import json
import secrets

import sqlalchemy as sa
from alembic import op

revision = "0007_review_scope"
down_revision = "0003_service"
branch_labels = ("review_scope",)
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as b:
        b.add_column(sa.Column("queue", sa.String(200), nullable=True))
    with op.batch_alter_table("review_items") as b:
        b.add_column(sa.Column("public_id", sa.String(40), nullable=True))
        b.add_column(sa.Column("queue", sa.String(200), nullable=False,
                               server_default="default"))
        b.add_column(sa.Column("images_purged_at", sa.String(32), nullable=True))
        b.create_unique_constraint("uq_review_items_public_id", ["public_id"])
        b.create_index("ix_review_queue", ["queue", "status", "id"])
    conn = op.get_bind()
    items = sa.table("review_items", sa.column("id"), sa.column("public_id"),
                     sa.column("matches"))
    for (rid,) in conn.execute(sa.select(items.c.id)).all():
        conn.execute(items.update().where(items.c.id == rid)
                     .values(public_id="ri_" + secrets.token_urlsafe(16)))
    with op.batch_alter_table("allow_list") as b:
        b.add_column(sa.Column("entry_id", sa.BigInteger, nullable=True))
        b.add_column(sa.Column("status", sa.String(16), nullable=False,
                               server_default="active"))
        b.add_column(sa.Column("approved_by", sa.String(200), nullable=True))
        b.add_column(sa.Column("approved_at", sa.String(32), nullable=True))
        b.add_column(sa.Column("removed_by", sa.String(200), nullable=True))
        b.add_column(sa.Column("removed_at", sa.String(32), nullable=True))
        b.drop_constraint("uq_allow_list_value", type_="unique")
        b.create_unique_constraint("uq_allow_list_scope", ["signal_type", "value", "entry_id"])
    allow = sa.table("allow_list", sa.column("id"), sa.column("signal_type"),
                     sa.column("value"), sa.column("created_at"), sa.column("created_by"),
                     sa.column("review_item_id"), sa.column("note"), sa.column("entry_id"),
                     sa.column("status"))
    old = conn.execute(sa.select(allow).where(allow.c.entry_id.is_(None))).all()
    for r in old:
        m = conn.execute(sa.select(items.c.matches)
                         .where(items.c.id == r.review_item_id)).scalar()
        entries = sorted({x["entry_id"] for x in json.loads(m or "[]")
                          if not x.get("exact") and x.get("entry_id") is not None})
        for eid in entries:
            conn.execute(allow.insert().values(
                signal_type=r.signal_type, value=r.value, created_at=r.created_at,
                created_by=r.created_by, review_item_id=r.review_item_id, note=r.note,
                entry_id=eid, status="pending"))
        conn.execute(allow.delete().where(allow.c.id == r.id))


def downgrade() -> None:
    with op.batch_alter_table("allow_list") as b:
        b.drop_constraint("uq_allow_list_scope", type_="unique")
        for c in ("removed_at", "removed_by", "approved_at", "approved_by", "status",
                  "entry_id"):
            b.drop_column(c)
    with op.batch_alter_table("review_items") as b:
        b.drop_index("ix_review_queue")
        b.drop_constraint("uq_review_items_public_id", type_="unique")
        for c in ("images_purged_at", "queue", "public_id"):
            b.drop_column(c)
    with op.batch_alter_table("api_keys") as b:
        b.drop_column("queue")
