"""PostgreSQL: the entry identity's unique index leads with the value; entries of a signal type
other than PDQ are found through their own partial (signal type, id) index.

After 0014 the unique index was (signal type, value, list, category, variant). A national list
is one signal type, so every comparison in that index (each insertion, each NOT EXISTS probe
of a bulk import) first compared two equal signal-type strings before the value decided it.
Led by the value, the first column decides almost every comparison: -10 % of the server's
CPU in a bulk import's apply (BENCHMARKS.md, issue 12, bulk import). Lookups by hash
(``signal_type = ? AND value IN (...)``) and identity probes still read it.

Queries by signal type alone (``Store.iter_signal_values`` and ``iter_entries``, which load a
worker's PDQ and vPDQ indexes in id order, and the feed's reconciliation survey) used the old
index's leading column. For PDQ, the bulk of a national list, they read most of the table
anyway (in id order, through the primary key). For the other types, a few entries among
millions of PDQ ones, ``ix_entries_signal_id`` (signal type, id) ``WHERE signal_type <> 'pdq'``
serves them (``schema.NOT_PDQ``: the queries say so, as a literal, or PostgreSQL cannot use a
partial index). A PDQ entry costs it nothing; an index on every entry measured +1 us per row
and +8 % WAL in a bulk import, most of what the value-first order saves.

Rebuilding both indexes takes the time of two index builds over ``entries`` (minutes at 20
million entries) under an exclusive lock. SQLite keeps its indexes (see 0014).

Revision ID: 0016_identity_value_first
Revises: 0014_entries_identity_order
"""

from alembic import op

revision = "0016_identity_value_first"
down_revision = "0014_entries_identity_order"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE entries DROP CONSTRAINT uq_entries_identity")
    op.execute("ALTER TABLE entries ADD CONSTRAINT uq_entries_identity UNIQUE "
               "(value, signal_type, list_id, category_scheme, category_code, variant)")
    op.execute("CREATE INDEX ix_entries_signal_id ON entries (signal_type, id) "
               "WHERE signal_type <> 'pdq'")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP INDEX IF EXISTS ix_entries_signal_id")
    op.execute("ALTER TABLE entries DROP CONSTRAINT uq_entries_identity")
    op.execute("ALTER TABLE entries ADD CONSTRAINT uq_entries_identity UNIQUE "
               "(signal_type, value, list_id, category_scheme, category_code, variant)")
