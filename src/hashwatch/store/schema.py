"""Tables, as SQLAlchemy Core metadata. Portable SQL only (SQLite and PostgreSQL).

Timestamps are ISO-8601 UTC strings: sortable, portable, and unambiguous in exports.
Category columns use '' (not NULL) for "uncategorised" so that the unique constraint
de-duplicates uncategorised entries too (NULLs never compare equal in a UNIQUE index).
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

hash_lists = sa.Table(
    "hash_lists",
    metadata,
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

entries = sa.Table(
    "entries",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    # a foreign key on SQLite; PostgreSQL checks it per statement by triggers (migration 0013)
    sa.Column("list_id", sa.Integer, sa.ForeignKey("hash_lists.id"), nullable=False),
    sa.Column("signal_type", sa.String(40), nullable=False),
    sa.Column("value", sa.String(400), nullable=False),
    sa.Column("category_scheme", sa.String(50), nullable=False, server_default=""),
    sa.Column("category_code", sa.String(50), nullable=False, server_default=""),
    sa.Column("labels", sa.Text, nullable=False, server_default=""),
    sa.Column("source_ref", sa.Text, nullable=False, server_default=""),
    # entries derived from one known image (robust-matching variants) share a group_ref
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
    # PostgreSQL (migrations 0014, 0016): the unique index is (value, signal_type, list_id,
    # ...) and serves lookups by hash; reads of one signal type other than PDQ go through
    # ``ix_entries_signal_id`` (signal_type, id) WHERE signal_type <> 'pdq' (see NOT_PDQ);
    # this index exists on SQLite only
    sa.Index("ix_entries_signal_value", "signal_type", "value"),
    # live entries per list: list counts read this index only (migration 0005_live)
    sa.Index("ix_entries_live", "list_id", sqlite_where=sa.text("removed_at IS NULL"),
             postgresql_where=sa.text("removed_at IS NULL")),
    # one known picture's entries (group) in a list (migration 0008_group); grouped entries
    # only (0015): a query must say ``group_ref <> ''`` to use it
    sa.Index("ix_entries_group", "list_id", "group_ref",
             sqlite_where=sa.text("group_ref <> ''"), postgresql_where=sa.text("group_ref <> ''")),
)

# ``ix_entries_group`` is partial (migration 0015): a query reads it only when its WHERE says
# this too, so every lookup of a group adds it (PostgreSQL and SQLite alike). A literal, not a
# bound parameter: a prepared statement's generic plan cannot prove ``group_ref <> $1``.
GROUPED = entries.c.group_ref != sa.literal_column("''")

# PostgreSQL's ``ix_entries_signal_id`` (migration 0016) holds the entries of every signal type
# but PDQ (the bulk of a list, read whole anyway): a read of one other signal type adds this,
# as a literal for the same reason as GROUPED, so that it finds them without a scan.
NOT_PDQ = entries.c.signal_type != sa.literal_column("'pdq'")
NOT_PDQ_SQL = "signal_type <> 'pdq'"


def of_signal_type(signal_type: str) -> list[sa.ColumnElement[bool]]:
    """WHERE terms selecting one signal type's entries (``NOT_PDQ`` too when it is not PDQ)."""
    terms: list[sa.ColumnElement[bool]] = [entries.c.signal_type == signal_type]
    return terms if signal_type == "pdq" else [*terms, NOT_PDQ]


def of_signal_type_sql(signal_type: str) -> str:
    """:func:`of_signal_type` as SQL text for a raw statement on ``entries``, the signal type
    bound as ``:sig``."""
    return "signal_type = :sig" + ("" if signal_type == "pdq" else f" AND {NOT_PDQ_SQL}")

# Change feed: every change a worker follows. Indexes and service workers replay it to stay
# current without rebuilding (hashwatch.store.feed). ``op``: "add" / "remove" (``entry_id``:
# an entry), "features" (``entry_id``: a new ``local_features`` row, the keypoint tier's
# input), "list" (a list was deleted; ``entry_id`` 0).
changes = sa.Table(
    "changes",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("entry_id", sa.BigInteger, nullable=False),
    sa.Column("list_id", sa.Integer, nullable=False),
    sa.Column("op", sa.String(10), nullable=False),  # add | remove
    sa.Column("at", sa.String(32), nullable=False),
    # "did this list ever lose an entry?" without scanning the feed (migration 0012)
    sa.Index("ix_changes_list_remove", "list_id", sqlite_where=sa.text("op = 'remove'"),
             postgresql_where=sa.text("op = 'remove'")),
)

# Append-only (enforced by triggers created in the migration).
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("at", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(60), nullable=False),
    sa.Column("list_id", sa.Integer, nullable=True),
    sa.Column("detail", sa.Text, nullable=False, server_default="{}"),
)

# ORB keypoints of a known image (one row per image and list), for robust matching of
# crops and rotations that no hash survives. Created by migration 0004_local.
local_features = sa.Table(
    "local_features",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("list_id", sa.Integer, sa.ForeignKey("hash_lists.id"), nullable=False),
    sa.Column("group_ref", sa.String(200), nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("added_at", sa.String(32), nullable=False),
    sa.UniqueConstraint("list_id", "group_ref", name="uq_local_features_group"),
)
