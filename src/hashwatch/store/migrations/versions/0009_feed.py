"""Commit-ordered change feed: the committing transaction of every change, a feed identity,
and a push notification on PostgreSQL.

* ``changes.txid`` (PostgreSQL only): the top-level transaction id (``xid8``) that wrote the
  change, filled by its default ``pg_current_xact_id()``. Feed readers compare it with
  snapshots (``pg_visible_in_snapshot``) instead of trusting ``seq`` order, which on
  PostgreSQL is insert order, not commit order (see ``hashwatch.store.feed``). Existing rows
  keep NULL: an index saved before this migration is rebuilt once.
* ``feed_meta``: one random token naming this database's feed, so a saved index is never
  replayed against another database.
* A statement-level trigger on ``changes`` sends ``NOTIFY hashwatch_feed`` (PostgreSQL): it
  is delivered when the writing transaction commits, so service workers refresh at once.

Revision ID: 0009_feed
Revises: 0001
"""

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0009_feed"
down_revision = "0001"
branch_labels = ("feed",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feed_meta",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("feed_id", sa.String(64), nullable=False),
    )
    op.execute(sa.text("INSERT INTO feed_meta (id, feed_id) VALUES (1, :t)").bindparams(
        t=secrets.token_hex(16)))
    if op.get_bind().dialect.name != "postgresql":
        return
    # nullable, default set afterwards: no table rewrite, old rows stay NULL
    op.execute("ALTER TABLE changes ADD COLUMN txid xid8")
    op.execute("ALTER TABLE changes ALTER COLUMN txid SET DEFAULT pg_current_xact_id()")
    op.execute("CREATE INDEX ix_changes_txid ON changes (txid) WHERE txid IS NOT NULL")
    op.execute(
        "CREATE FUNCTION hashwatch_feed_notify() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_notify('hashwatch_feed', ''); RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER changes_notify AFTER INSERT ON changes "
        "FOR EACH STATEMENT EXECUTE FUNCTION hashwatch_feed_notify()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS changes_notify ON changes")
        op.execute("DROP FUNCTION IF EXISTS hashwatch_feed_notify()")
        op.execute("DROP INDEX IF EXISTS ix_changes_txid")
        op.execute("ALTER TABLE changes DROP COLUMN txid")
    op.drop_table("feed_meta")
