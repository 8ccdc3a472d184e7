"""An index of the removals in the change feed, per list.

Adding entries asks whether the list ever had a removal (restoring a removed entry needs a
lookup per duplicate; lists that never lost an entry skip it). Without an index that question
scanned the whole change feed: after a 20-million-entry import, every single-entry update of
any list read 20 million change rows (~25% of a core for a writer adding one entry every
0.5 s, measured during the bulk-import benchmark). Partial: only removals are indexed.

Revision ID: 0012_changes_removals
Revises: 0001
"""

from alembic import op

revision = "0012_changes_removals"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX IF NOT EXISTS ix_changes_list_remove ON changes (list_id) "
                "WHERE op = 'remove'")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_changes_list_remove")
