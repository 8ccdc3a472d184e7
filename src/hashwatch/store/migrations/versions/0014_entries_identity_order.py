"""PostgreSQL: the entry identity's unique index leads with (signal type, value); the
separate (signal type, value) index goes.

Every lookup by hash (``Store.lookup``: ``signal_type = ? AND value IN (...)``) read
``ix_entries_signal_value``; every identity check (restores, the HMA API's
``entry_ids_for_values``) read ``uq_entries_identity`` (list, signal type, value, category,
variant). With the unique index ordered (signal type, value, list, category, variant) one
index serves both, and each inserted entry updates one wide index fewer: a fifth of the
index maintenance and of the WAL of a bulk import (BENCHMARKS.md, issue 12). Reads by list
alone keep their own indexes (``ix_entries_live``, ``ix_entries_group``).

Rebuilding the unique index takes the time of one index build over ``entries`` (minutes at
20 million entries) under an exclusive lock. SQLite keeps its indexes (its unique
constraint is part of the table definition; changing it means copying the table).

Revision ID: 0014_entries_identity_order
Revises: 0001
"""

from alembic import op

revision = "0014_entries_identity_order"
down_revision = "0001"
branch_labels = ("entries_identity_order",)
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE entries DROP CONSTRAINT uq_entries_identity")
    op.execute("ALTER TABLE entries ADD CONSTRAINT uq_entries_identity UNIQUE "
               "(signal_type, value, list_id, category_scheme, category_code, variant)")
    op.execute("DROP INDEX IF EXISTS ix_entries_signal_value")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE INDEX ix_entries_signal_value ON entries (signal_type, value)")
    op.execute("ALTER TABLE entries DROP CONSTRAINT uq_entries_identity")
    op.execute("ALTER TABLE entries ADD CONSTRAINT uq_entries_identity UNIQUE "
               "(list_id, signal_type, value, category_scheme, category_code, variant)")
