"""Local features (ORB keypoints) of known images, for the robust matcher's second tier.

Revision ID: 0004_local
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_local"
down_revision = "0001"
branch_labels = ("local",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "local_features",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("list_id", sa.Integer, sa.ForeignKey("hash_lists.id"), nullable=False),
        sa.Column("group_ref", sa.String(200), nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("added_at", sa.String(32), nullable=False),
        sa.UniqueConstraint("list_id", "group_ref", name="uq_local_features_group"),
    )


def downgrade() -> None:
    op.drop_table("local_features")
