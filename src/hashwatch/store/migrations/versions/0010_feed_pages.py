"""The change feed read in bounded pages: an index on (txid, seq) (PostgreSQL).

A worker absorbing a big window of the feed (a 20-million-entry bulk import commits its
change rows in one transaction) reads it page by page, ordered by (txid, seq), so no single
read holds its refresh lock for minutes (``hashwatch.store.feed``). This index serves both
the window's range (``txid >= xmin`` of the previous position) and the page order; it
replaces the index on ``txid`` alone.

Revision ID: 0010_feed_pages
Revises: 0009_feed
"""

from alembic import op

revision = "0010_feed_pages"
down_revision = "0009_feed"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite pages by seq, the primary key
    op.execute("CREATE INDEX ix_changes_txid_seq ON changes (txid, seq) WHERE txid IS NOT NULL")
    op.execute("DROP INDEX IF EXISTS ix_changes_txid")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE INDEX ix_changes_txid ON changes (txid) WHERE txid IS NOT NULL")
    op.execute("DROP INDEX IF EXISTS ix_changes_txid_seq")
