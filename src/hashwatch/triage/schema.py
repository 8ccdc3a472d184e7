"""Triage tables in the main store: the case registry and analysts' grading votes.

Per-file results live in each case's own work database (``--out DIR/work.db``); the main
store only knows where a case is, and keeps the votes (evidence of who graded what, when),
which are append-only like the audit log.
"""

from __future__ import annotations

import sqlalchemy as sa

from hashwatch.store.schema import metadata

triage_cases = sa.Table(
    "triage_cases",
    metadata,
    sa.Column("case_id", sa.String(200), primary_key=True),
    sa.Column("out_dir", sa.Text, nullable=False),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("updated_at", sa.String(32), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False, server_default=""),
)

triage_votes = sa.Table(
    "triage_votes",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("case_id", sa.String(200), sa.ForeignKey("triage_cases.case_id"), nullable=False),
    sa.Column("target", sa.String(100), nullable=False),  # cluster:N | file:<sha256>
    sa.Column("category_scheme", sa.String(50), nullable=False),
    sa.Column("category_code", sa.String(50), nullable=False),
    sa.Column("analyst", sa.String(200), nullable=False),
    sa.Column("at", sa.String(32), nullable=False),
    sa.Column("note", sa.Text, nullable=False, server_default=""),
    sa.Index("ix_triage_votes_case_target", "case_id", "target"),
)
