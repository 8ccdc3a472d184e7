"""Initial schema: hash lists, entries, change feed, append-only audit log.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hash_lists",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("source", sa.String(500), nullable=False, server_default=""),
        sa.Column("jurisdiction", sa.String(100), nullable=False, server_default=""),
        sa.Column("category_scheme", sa.String(50), nullable=False, server_default=""),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.String(32), nullable=False),
        sa.Column("deleted_at", sa.String(32), nullable=True),
    )
    op.create_table(
        "entries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("list_id", sa.Integer, sa.ForeignKey("hash_lists.id"), nullable=False),
        sa.Column("signal_type", sa.String(40), nullable=False),
        sa.Column("value", sa.String(400), nullable=False),
        sa.Column("category_scheme", sa.String(50), nullable=False, server_default=""),
        sa.Column("category_code", sa.String(50), nullable=False, server_default=""),
        sa.Column("labels", sa.Text, nullable=False, server_default=""),
        sa.Column("source_ref", sa.Text, nullable=False, server_default=""),
        sa.Column("group_ref", sa.String(200), nullable=False, server_default=""),
        sa.Column("variant", sa.String(60), nullable=False, server_default=""),
        sa.Column("added_at", sa.String(32), nullable=False),
        sa.Column("added_by", sa.String(200), nullable=False, server_default=""),
        sa.Column("removed_at", sa.String(32), nullable=True),
        sa.UniqueConstraint(
            "list_id",
            "signal_type",
            "value",
            "category_scheme",
            "category_code",
            "variant",
            name="uq_entries_identity",
        ),
    )
    op.create_index("ix_entries_signal_value", "entries", ["signal_type", "value"])
    op.create_table(
        "changes",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("entry_id", sa.BigInteger, nullable=False),
        sa.Column("list_id", sa.Integer, nullable=False),
        sa.Column("op", sa.String(10), nullable=False),
        sa.Column("at", sa.String(32), nullable=False),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("at", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(60), nullable=False),
        sa.Column("list_id", sa.Integer, nullable=True),
        sa.Column("detail", sa.Text, nullable=False, server_default="{}"),
    )
    # The audit trail is evidence: the database itself refuses edits and deletions.
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_log_no_{verb.lower()} BEFORE {verb} ON audit_log "
                "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"
            )
    elif dialect == "postgresql":
        op.execute(
            "CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$"
        )
        op.execute(
            "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
            "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()"
        )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    op.drop_table("audit_log")
    op.drop_table("changes")
    op.drop_index("ix_entries_signal_value", table_name="entries")
    op.drop_table("entries")
    op.drop_table("hash_lists")
