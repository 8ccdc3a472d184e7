"""Triage: case registry and append-only grading votes.

Revision ID: 0002_triage
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_triage"
down_revision = "0001"
branch_labels = ("triage",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "triage_cases",
        sa.Column("case_id", sa.String(200), primary_key=True),
        sa.Column("out_dir", sa.Text, nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.String(32), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False, server_default=""),
    )
    op.create_table(
        "triage_votes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("case_id", sa.String(200), sa.ForeignKey("triage_cases.case_id"), nullable=False),
        sa.Column("target", sa.String(100), nullable=False),
        sa.Column("category_scheme", sa.String(50), nullable=False),
        sa.Column("category_code", sa.String(50), nullable=False),
        sa.Column("analyst", sa.String(200), nullable=False),
        sa.Column("at", sa.String(32), nullable=False),
        sa.Column("note", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("ix_triage_votes_case_target", "triage_votes", ["case_id", "target"])
    # Votes are evidence: never overwritten, never deleted (only new votes are added).
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER triage_votes_no_{verb.lower()} BEFORE {verb} ON triage_votes "
                "BEGIN SELECT RAISE(ABORT, 'triage_votes is append-only'); END"
            )
    elif dialect == "postgresql":
        op.execute(
            "CREATE FUNCTION triage_votes_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'triage_votes is append-only'; END $$"
        )
        op.execute(
            "CREATE TRIGGER triage_votes_append_only BEFORE UPDATE OR DELETE ON triage_votes "
            "FOR EACH ROW EXECUTE FUNCTION triage_votes_append_only()"
        )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS triage_votes_append_only ON triage_votes")
        op.execute("DROP FUNCTION IF EXISTS triage_votes_append_only()")
    op.drop_index("ix_triage_votes_case_target", table_name="triage_votes")
    op.drop_table("triage_votes")
    op.drop_table("triage_cases")
