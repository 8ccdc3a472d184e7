"""Service tables: API keys, webhooks, outbox, review queue, allow-list.

Revision ID: 0003_service
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_service"
down_revision = "0001"
branch_labels = ("service",)
depends_on = None

_BIG = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("key_id", sa.String(32), nullable=False, unique=True),
        sa.Column("salt", sa.String(64), nullable=False),
        sa.Column("key_hash", sa.String(128), nullable=False),
        sa.Column("scopes", sa.String(200), nullable=False),
        sa.Column("rate_limit", sa.Float, nullable=True),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False, server_default=""),
        sa.Column("revoked_at", sa.String(32), nullable=True),
    )
    op.create_table(
        "webhooks",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("list_id", sa.Integer, sa.ForeignKey("hash_lists.id"), nullable=False),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False, server_default=""),
        sa.Column("deleted_at", sa.String(32), nullable=True),
    )
    op.create_index("ix_webhooks_list", "webhooks", ["list_id"])
    op.create_table(
        "outbox",
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
    )
    op.create_index("ix_outbox_due", "outbox", ["status", "next_attempt"])
    op.create_table(
        "review_items",
        sa.Column("id", _BIG, primary_key=True),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("submitted_by", sa.String(200), nullable=False),
        sa.Column("filename", sa.String(500), nullable=False, server_default=""),
        sa.Column("sha256", sa.String(64), nullable=False, server_default=""),
        sa.Column("md5", sa.String(32), nullable=False, server_default=""),
        sa.Column("pdq", sa.String(64), nullable=False, server_default=""),
        sa.Column("pdq_quality", sa.Integer, nullable=True),
        sa.Column("matches", sa.Text, nullable=False, server_default="[]"),
        sa.Column("thumb", sa.LargeBinary, nullable=True),
        sa.Column("preview", sa.LargeBinary, nullable=True),
        sa.Column("status", sa.String(20), nullable=False, server_default="pending"),
        sa.Column("decided_by", sa.String(200), nullable=True),
        sa.Column("decided_at", sa.String(32), nullable=True),
        sa.Column("note", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("ix_review_status", "review_items", ["status", "id"])
    op.create_table(
        "allow_list",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("signal_type", sa.String(40), nullable=False),
        sa.Column("value", sa.String(400), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("review_item_id", sa.BigInteger, nullable=True),
        sa.Column("note", sa.Text, nullable=False, server_default=""),
        sa.UniqueConstraint("signal_type", "value", name="uq_allow_list_value"),
    )


def downgrade() -> None:
    op.drop_table("allow_list")
    op.drop_index("ix_review_status", table_name="review_items")
    op.drop_table("review_items")
    op.drop_index("ix_outbox_due", table_name="outbox")
    op.drop_table("outbox")
    op.drop_index("ix_webhooks_list", table_name="webhooks")
    op.drop_table("webhooks")
