"""The (list, group) index holds grouped entries only.

``ix_entries_group`` serves the lookups of one known picture's entries (``Store.group_entries``,
the HMA-compatible API's contents), which always name a group. Entries without a group (every
row of a plain hash list: a national list imported from a file) all had the same key, (list,
''), and still cost an insertion each: ~9 % of the server's CPU in a bulk import (2M lines,
BENCHMARKS.md, issue 12) and ~8 % of its WAL. Partial on ``group_ref <> ''``: the queries that
read it say so (PostgreSQL and SQLite only use a partial index for a query whose WHERE implies
the index's).

Revision ID: 0015_entries_group_partial
Revises: 0008_group
"""

from alembic import op

revision = "0015_entries_group_partial"
down_revision = "0008_group"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_entries_group", table_name="entries")
    op.execute("CREATE INDEX ix_entries_group ON entries (list_id, group_ref) "
               "WHERE group_ref <> ''")


def downgrade() -> None:
    op.drop_index("ix_entries_group", table_name="entries")
    op.create_index("ix_entries_group", "entries", ["list_id", "group_ref"])
