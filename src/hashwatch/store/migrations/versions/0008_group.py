"""Index of entries by (list, group): one known picture's entries found without a scan.

A group is the entries of one known picture in one list (its crypto hashes, PDQ and PDQ
views). The local tier reads a matched picture's group (``Store.group_entries``) and the
HMA-compatible API resolves a bank content id to its group; without this index both read
every entry of the list (seconds at 20M entries).

Revision ID: 0008_group
Revises: 0001
"""

from alembic import op

revision = "0008_group"
down_revision = "0001"
branch_labels = ("group",)
depends_on = None


def upgrade() -> None:
    op.create_index("ix_entries_group", "entries", ["list_id", "group_ref"])


def downgrade() -> None:
    op.drop_index("ix_entries_group", table_name="entries")
