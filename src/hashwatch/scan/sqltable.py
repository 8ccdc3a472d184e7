"""Scan results in a SQL table (PostgreSQL in production; any SQLAlchemy database works),
written idempotently: one transaction per shard replaces that shard's rows and records the
shard as written, so a shard written twice (a resumed or retried run) leaves one copy.

Tables (created when missing)::

    hashwatch_scan_results  (scan_id, file_id) primary key; shard, path, size, md5, sha1,
                            sha256, pdq, pdq_quality, width, height, state, error,
                            matches (JSON list of {list, entry_id, ref, signal, route,
                            distance, category, exact, inliers})
    hashwatch_scan_shards   (scan_id, shard) primary key; rows
"""

from __future__ import annotations

import sqlalchemy as sa

from .work import Row

_meta = sa.MetaData()
results = sa.Table(
    "hashwatch_scan_results", _meta,
    sa.Column("scan_id", sa.String(32), primary_key=True),
    sa.Column("file_id", sa.String(16), primary_key=True),
    sa.Column("shard", sa.Integer, nullable=False, index=True),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("size", sa.BigInteger),
    sa.Column("md5", sa.String(32)),
    sa.Column("sha1", sa.String(40)),
    sa.Column("sha256", sa.String(64)),
    sa.Column("pdq", sa.String(64)),
    sa.Column("pdq_quality", sa.Integer),
    sa.Column("width", sa.Integer),
    sa.Column("height", sa.Integer),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("matches", sa.JSON, nullable=False),
)
shards = sa.Table(
    "hashwatch_scan_shards", _meta,
    sa.Column("scan_id", sa.String(32), primary_key=True),
    sa.Column("shard", sa.Integer, primary_key=True),
    sa.Column("rows", sa.Integer, nullable=False),
)


class ResultsTable:
    """The scan ``scan_id``'s rows in the database at ``url`` (SQLAlchemy URL or SQLite
    path). Raises ``sqlalchemy.exc.SQLAlchemyError`` when the database cannot be reached."""

    def __init__(self, url: str, scan_id: str) -> None:
        if "://" not in url:
            url = f"sqlite:///{url}"
        self.engine = sa.create_engine(url, future=True)
        self.scan_id = scan_id
        _meta.create_all(self.engine, checkfirst=True)

    def done_shards(self) -> set[int]:
        with self.engine.connect() as conn:
            return {r[0] for r in conn.execute(
                sa.select(shards.c.shard).where(shards.c.scan_id == self.scan_id))}

    def write_shard(self, shard: int, rows: list[Row]) -> None:
        sid = self.scan_id
        with self.engine.begin() as conn:
            conn.execute(results.delete().where(results.c.scan_id == sid,
                                                results.c.shard == shard))
            conn.execute(shards.delete().where(shards.c.scan_id == sid,
                                               shards.c.shard == shard))
            if rows:
                conn.execute(results.insert(), [{**r, "scan_id": sid, "shard": shard}
                                                 for r in rows])
            conn.execute(shards.insert().values(scan_id=sid, shard=shard, rows=len(rows)))

    def count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(results).where(
                results.c.scan_id == self.scan_id)).scalar_one()

    def close(self) -> None:
        self.engine.dispose()
