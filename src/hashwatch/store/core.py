"""The Store: one small API over SQLAlchemy Core, identical on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from itertools import islice
from typing import Any

import sqlalchemy as sa

from hashwatch.store.connect import connect, migrate_schema
from hashwatch.store.feed import Snapshot, feed_id, open_snapshot, position_usable
from hashwatch.store.guards import (
    InvalidText,
    check_identifier,
)
from hashwatch.store.records import (
    AddResult,
    EntryIn,
    EntryRow,
    InvalidName,
    ListExists,
    ListInfo,
    ListNotFound,
    StoreError,
    _list_info,
    _row_to_entry,
    entry_row,
    utcnow,
)
from hashwatch.store.redact import redact_text
from hashwatch.store.schema import (
    GROUPED,
    audit_log,
    changes,
    entries,
    hash_lists,
    local_features,
    of_signal_type,
)

log = logging.getLogger("hashwatch.store")


_ENTRY_COLUMNS = [
    entries.c.id,
    entries.c.list_id,
    hash_lists.c.name.label("list_name"),
    entries.c.signal_type,
    entries.c.value,
    entries.c.category_scheme,
    entries.c.category_code,
    entries.c.labels,
    entries.c.source_ref,
    entries.c.group_ref,
    entries.c.variant,
    entries.c.added_at,
    entries.c.added_by,
    entries.c.removed_at,
]


def bump_version(conn: sa.Connection, list_id: int, now: str, *, new_version: bool = True
                 ) -> None:
    """Raise a list's version by one and set its time to ``now`` (inside the caller's
    transaction): every change of a list's content or state does, so a report's "list X
    version N" names one content. ``new_version=False``: the time only (the end of an
    import whose first batch already raised the version)."""
    values: dict[str, Any] = {"updated_at": now}
    if new_version:
        values["version"] = hash_lists.c.version + 1
    conn.execute(hash_lists.update().where(hash_lists.c.id == list_id).values(**values))


class Store:
    """Open with ``Store.open(path_or_url)``; migrations are applied on open."""

    BATCH = 2500  # x 11 parameters stays under SQLite's 32766-variable limit

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    # -- opening -------------------------------------------------------------------
    @classmethod
    def open(cls, target: str | os.PathLike[str] | None = None, *, migrate: bool = True,
             on_upgrade: Callable[[str, str], None] | None = None) -> Store:
        """Open (and migrate) a SQLite path or an SQLAlchemy URL. Raises StoreError, whose
        message never carries the URL's password.

        ``on_upgrade(current, target)`` (schema revisions) is called before an existing
        database is upgraded, so that a caller can say why the first open after an upgrade
        may take minutes (some migrations rebuild indexes of the entries table)."""
        engine, shown = connect(target)
        store = cls(engine)
        if migrate:
            try:
                store.migrate(on_upgrade)
            except sa.exc.DBAPIError as exc:
                engine.dispose()
                raise StoreError(f"cannot open database {shown}: "
                                 f"{redact_text(str(exc.orig))}") from None
        return store

    def migrate(self, on_upgrade: Callable[[str, str], None] | None = None) -> None:
        """Bring the schema to the newest revision (Alembic ``upgrade heads``);
        ``on_upgrade(current, target)`` first when an existing database is behind."""
        migrate_schema(self.engine, on_upgrade)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- audit ---------------------------------------------------------------------
    def _audit(
        self, conn: sa.Connection, actor: str, action: str, list_id: int | None, detail: dict
    ) -> None:
        conn.execute(
            audit_log.insert().values(
                at=utcnow(),
                actor=actor,
                action=action,
                list_id=list_id,
                detail=json.dumps(detail, sort_keys=True, ensure_ascii=False),
            )
        )

    def audit(
        self, actor: str, action: str, detail: dict | None = None, list_name: str | None = None
    ) -> None:
        """Record an action that is not a list change (e.g. a lookup)."""
        with self.engine.begin() as conn:
            list_id = self._list_row(conn, list_name).id if list_name else None
            self._audit(conn, actor, action, list_id, detail or {})

    def iter_audit(self, since_id: int = 0, limit: int | None = None) -> Iterator[dict[str, Any]]:
        q = audit_log.select().where(audit_log.c.id > since_id).order_by(audit_log.c.id)
        if limit:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            for row in conn.execute(q):
                d = dict(row._mapping)
                d["detail"] = json.loads(d["detail"])
                yield d

    # -- lists ---------------------------------------------------------------------
    def _list_row(self, conn: sa.Connection, name: str, *, include_deleted: bool = False) -> Any:
        q = hash_lists.select().where(hash_lists.c.name == name)
        if not include_deleted:
            q = q.where(hash_lists.c.deleted_at.is_(None))
        row = conn.execute(q).first()
        if row is None:
            raise ListNotFound(name)
        return row

    def create_list(
        self,
        name: str,
        *,
        source: str = "",
        jurisdiction: str = "",
        category_scheme: str = "",
        description: str = "",
        actor: str = "cli",
    ) -> ListInfo:
        try:
            name = check_identifier(name, "list name")
        except InvalidText as exc:
            raise InvalidName(f"invalid {exc}") from None
        now = utcnow()
        with self.engine.begin() as conn:
            existing = conn.execute(hash_lists.select().where(hash_lists.c.name == name)).first()
            if existing is not None:
                raise ListExists(name)
            res = conn.execute(
                hash_lists.insert().values(
                    name=name,
                    source=source,
                    jurisdiction=jurisdiction,
                    category_scheme=category_scheme.lower(),
                    description=description,
                    version=1,
                    enabled=True,
                    created_at=now,
                    updated_at=now,
                )
            )
            list_id = res.inserted_primary_key[0]
            self._audit(conn, actor, "list.create", list_id, {"name": name, "source": source})
            row = conn.execute(hash_lists.select().where(hash_lists.c.id == list_id)).one()
        return _list_info(row, 0)

    def get_list(self, name: str) -> ListInfo:
        with self.engine.connect() as conn:
            row = self._list_row(conn, name)
            count = conn.execute(
                sa.select(sa.func.count())
                .select_from(entries)
                .where(entries.c.list_id == row.id, entries.c.removed_at.is_(None))
            ).scalar_one()
        return _list_info(row, count)

    def lists(self, *, include_deleted: bool = False) -> list[ListInfo]:
        counts = (
            sa.select(entries.c.list_id, sa.func.count().label("n"))
            .where(entries.c.removed_at.is_(None))
            .group_by(entries.c.list_id)
            .subquery()
        )
        q = (
            sa.select(hash_lists, sa.func.coalesce(counts.c.n, 0).label("n"))
            .select_from(hash_lists.outerjoin(counts, counts.c.list_id == hash_lists.c.id))
            .order_by(hash_lists.c.name)
        )
        if not include_deleted:
            q = q.where(hash_lists.c.deleted_at.is_(None))
        with self.engine.connect() as conn:
            return [_list_info(r, r.n) for r in conn.execute(q)]

    def set_list_enabled(self, name: str, enabled: bool, *, actor: str = "cli") -> ListInfo:
        with self.engine.begin() as conn:
            row = self._list_row(conn, name)
            conn.execute(
                hash_lists.update()
                .where(hash_lists.c.id == row.id)
                .values(enabled=enabled, updated_at=utcnow(), version=row.version + 1)
            )
            self._audit(conn, actor, "list.enable" if enabled else "list.disable", row.id, {})
        return self.get_list(name)

    def delete_list(self, name: str, *, actor: str = "cli") -> None:
        """Soft delete: the list stops matching; its rows and audit history stay."""
        with self.engine.begin() as conn:
            row = self._list_row(conn, name)
            now = utcnow()
            conn.execute(
                hash_lists.update()
                .where(hash_lists.c.id == row.id)
                .values(deleted_at=now, enabled=False, updated_at=now, version=row.version + 1)
            )
            # the keypoint tier drops a deleted list's images (hashwatch.store.feed)
            conn.execute(changes.insert().values(entry_id=0, list_id=row.id, op="list", at=now))
            self._audit(conn, actor, "list.delete", row.id, {"name": name})

    # -- entries -------------------------------------------------------------------
    _INSERT_COLUMNS = (
        "list_id", "signal_type", "value", "category_scheme", "category_code", "labels",
        "source_ref", "group_ref", "variant", "added_at", "added_by",
    )  # fmt: skip

    def _insert_rows(self, conn: sa.Connection, rows: list[tuple]) -> list[tuple[int, str]]:
        """Multi-row INSERT ... ON CONFLICT DO NOTHING RETURNING id, signal_type (SQLite >=
        3.35 and PostgreSQL): one statement per batch, (id, signal type) of the rows actually
        inserted. Written as driver SQL because building it through the ORM-level compiler
        dominated import time."""
        if not rows:
            return []
        ph = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        one = "(" + ",".join([ph] * len(self._INSERT_COLUMNS)) + ")"
        sql = (
            f"INSERT INTO entries ({','.join(self._INSERT_COLUMNS)}) VALUES "
            + ",".join([one] * len(rows))
            + " ON CONFLICT DO NOTHING RETURNING id, signal_type"
        )
        params = tuple(v for r in rows for v in r)
        return [(r[0], r[1]) for r in conn.exec_driver_sql(sql, params)]

    def add_entries(
        self,
        list_name: str,
        items: Iterable[EntryIn],
        *,
        actor: str = "cli",
        action: str = "entries.add",
        detail: dict | None = None,
        on_batch: Any = None,
        collect_ids: bool = True,
    ) -> AddResult:
        """Add entries in batches (streaming: ``items`` may be a generator of millions).

        Identical entries are de-duplicated; an identical entry that had been removed is
        restored. Each batch commits on its own, so an interrupted import keeps its
        progress and re-running it adds only what is missing. ``collect_ids=False`` keeps
        memory flat on huge imports (``added_ids`` stays empty).
        """
        result = AddResult()
        with self.engine.connect() as conn:
            list_row = self._list_row(conn, list_name)
            # restoring needs a lookup per duplicate; skip it when nothing was ever removed
            may_restore = (
                conn.execute(
                    sa.select(changes.c.seq)
                    .where(changes.c.list_id == list_row.id, changes.c.op == "remove")
                    .limit(1)
                ).first()
                is not None
            )
        list_id = list_row.id
        known_types: set[str] = set()
        it = iter(items)
        bumped = False
        try:
            bumped = self._add_batches(list_id, it, known_types, result, actor, may_restore,
                                       collect_ids, on_batch)
        except BaseException as exc:
            if bumped or result.added or result.restored:
                self._audit_interrupted(list_id, actor, action, detail, result, exc)
            raise
        with self.engine.begin() as conn:
            if result.added or result.restored:
                # the version went up with the first batch, if bumped; the time is the last's
                bump_version(conn, list_id, utcnow(), new_version=not bumped)
            info = {
                "added": result.added,
                "duplicates": result.duplicates,
                "restored": result.restored,
            }
            info.update(detail or {})
            self._audit(conn, actor, action, list_id, info)
        return result

    def _add_batches(self, list_id: int, it: Any, known_types: set[str], result: AddResult,
                     actor: str, may_restore: bool, collect_ids: bool, on_batch: Any) -> bool:
        """``add_entries``' batches, each committed on its own; the list's version goes up in
        the first batch that changes the list, so a list interrupted mid-import never shows
        its old version with new content. Returns whether the version was raised."""
        from hashwatch.signals import get_signal_type  # lazy: keeps store importable alone

        bumped = False
        while True:
            batch = list(islice(it, self.BATCH))
            if not batch:
                break
            now = utcnow()
            rows = []
            for e in batch:
                if e.signal_type not in known_types:
                    get_signal_type(e.signal_type)  # raises on an unknown signal type
                    known_types.add(e.signal_type)
                rows.append(entry_row(list_id, e, now, actor))
            with self.engine.begin() as conn:
                inserted, restored_rows = self._write_batch(conn, list_id, rows,
                                                            may_restore, now)
                ids = [i for i, _sig in inserted]
                restored = [i for i, _sig in restored_rows]
                new_ids = ids + restored
                if new_ids and not bumped:
                    bump_version(conn, list_id, now)
                    bumped = True
            result.added += len(ids)
            result.restored += len(restored)
            result.duplicates += len(rows) - len(ids) - len(restored)
            per_batch = Counter(r[1] for r in rows)
            per_added = Counter(sig for _i, sig in inserted)
            per_restored = Counter(sig for _i, sig in restored_rows)
            for sig, n in per_batch.items():
                result.count(sig, added=per_added[sig], restored=per_restored[sig],
                             duplicates=n - per_added[sig] - per_restored[sig])
            if collect_ids:
                result.added_ids.extend(new_ids)
            if on_batch is not None:
                on_batch(len(batch))
        return bumped

    def _audit_interrupted(self, list_id: int, actor: str, action: str, detail: dict | None,
                           result: AddResult, exc: BaseException) -> None:
        """The audit row of an import stopped after some of it committed (Ctrl-C, a bad row,
        a lost connection): what was kept, and why it stopped. Best effort: the original
        error is what the caller sees."""
        info = {"added": result.added, "restored": result.restored,
                "interrupted": type(exc).__name__, **(detail or {})}
        try:
            with self.engine.begin() as conn:
                self._audit(conn, actor, action, list_id, info)
        except Exception as err:  # e.g. the database went away: the import's error matters
            log.warning("could not audit the interrupted import into list %d: %s", list_id,
                        type(err).__name__)

    def _write_batch(
        self, conn: sa.Connection, list_id: int, rows: list[tuple], may_restore: bool, now: str
    ) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
        """One batch of ``add_entries`` inside the caller's transaction: insert new rows,
        restore removed identical ones, and record both in the change feed. Returns
        ((id, signal type) added, (id, signal type) restored)."""
        inserted = self._insert_rows(conn, rows)
        restored = (
            self._restore_removed(conn, list_id, rows)
            if may_restore and len(inserted) < len(rows)
            else []
        )
        new_ids = [i for i, _sig in inserted + restored]
        if new_ids:
            conn.execute(
                changes.insert(),
                [{"entry_id": i, "list_id": list_id, "op": "add", "at": now} for i in new_ids],
            )
        return inserted, restored

    def _restore_removed(self, conn: sa.Connection, list_id: int, rows: list[tuple]
                         ) -> list[tuple[int, str]]:
        """Un-remove identical entries that had been removed (one indexed lookup per
        duplicate; only called for lists that have ever had a removal): (id, signal type)."""
        restored: list[tuple[int, str]] = []
        for r in rows:
            _lid, sig, value, scheme, code, _labels, _ref, _group, variant = r[:9]
            row = conn.execute(
                sa.select(entries.c.id).where(
                    entries.c.list_id == list_id,
                    entries.c.signal_type == sig,
                    entries.c.value == value,
                    entries.c.category_scheme == scheme,
                    entries.c.category_code == code,
                    entries.c.variant == variant,
                    entries.c.removed_at.is_not(None),
                )
            ).first()
            if row is not None:
                conn.execute(entries.update().where(entries.c.id == row.id).values(removed_at=None))
                restored.append((row.id, sig))
        return restored

    def remove_entries(
        self, list_name: str, entry_ids: Sequence[int], *, actor: str = "cli"
    ) -> int:
        now = utcnow()
        with self.engine.begin() as conn:
            row = self._list_row(conn, list_name)
            ids = [
                r.id
                for r in conn.execute(
                    sa.select(entries.c.id).where(
                        entries.c.list_id == row.id,
                        entries.c.id.in_(list(entry_ids)),
                        entries.c.removed_at.is_(None),
                    )
                )
            ]
            if ids:
                self._remove_in(conn, row.id, ids, now)
                bump_version(conn, row.id, now)
            self._audit(conn, actor, "entries.remove", row.id, {"removed": len(ids)})
        return len(ids)

    def _remove_in(self, conn: sa.Connection, list_id: int, ids: list[int], now: str) -> None:
        """Mark live entries removed and record them in the change feed, inside the caller's
        transaction."""
        conn.execute(entries.update().where(entries.c.id.in_(ids)).values(removed_at=now))
        conn.execute(
            changes.insert(),
            [{"entry_id": i, "list_id": list_id, "op": "remove", "at": now} for i in ids],
        )

    def _entry_query(self, *, active_only: bool = True) -> sa.Select:
        q = sa.select(*_ENTRY_COLUMNS).select_from(
            entries.join(hash_lists, hash_lists.c.id == entries.c.list_id)
        )
        if active_only:
            q = q.where(
                entries.c.removed_at.is_(None),
                hash_lists.c.deleted_at.is_(None),
                hash_lists.c.enabled == sa.true(),
            )
        return q

    def lookup(
        self, signal_type: str, values: Sequence[str], *, lists: Sequence[str] | None = None
    ) -> list[EntryRow]:
        """Active entries whose value equals one of ``values`` (exact signals)."""
        out: list[EntryRow] = []
        with self.engine.connect() as conn:
            for start in range(0, len(values), 500):
                q = self._entry_query().where(
                    entries.c.signal_type == signal_type,
                    entries.c.value.in_(list(values[start : start + 500])),
                )
                if lists:
                    q = q.where(hash_lists.c.name.in_(list(lists)))
                out.extend(_row_to_entry(r) for r in conn.execute(q.order_by(entries.c.id)))
        return out

    def get_entries(self, ids: Sequence[int], *, active_only: bool = True) -> dict[int, EntryRow]:
        out: dict[int, EntryRow] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                q = self._entry_query(active_only=active_only).where(
                    entries.c.id.in_([int(i) for i in ids[start : start + 500]])
                )
                for r in conn.execute(q):
                    out[r.id] = _row_to_entry(r)
        return out

    def iter_entries(
        self,
        *,
        list_name: str | None = None,
        signal_type: str | None = None,
        active_only: bool = True,
        batch: int = 10_000,
        after_id: int = 0,
    ) -> Iterator[EntryRow]:
        """Stream entries with ids above ``after_id`` in id order (keyset pagination:
        constant memory, constant cost per page at any depth)."""
        with self.engine.connect() as conn:
            list_id = self._list_row(conn, list_name).id if list_name else None
        last = after_id
        while True:
            q = self._entry_query(active_only=active_only).where(entries.c.id > last)
            if list_id is not None:
                q = q.where(entries.c.list_id == list_id)
            if signal_type is not None:
                q = q.where(*of_signal_type(signal_type))
            with self.engine.connect() as conn:
                rows = conn.execute(q.order_by(entries.c.id).limit(batch)).all()
            if not rows:
                return
            for r in rows:
                yield _row_to_entry(r)
            last = rows[-1].id

    def iter_signal_values(
        self, signal_type: str, *, after_id: int = 0, batch: int = 200_000
    ) -> Iterator[list[tuple[int, str]]]:
        """(entry id, value) of every non-removed entry of a signal type, in id order,
        batched: what an index is built from. List state (enabled/deleted) is applied at
        match time, so toggling a list never needs an index rebuild."""
        last = after_id
        while True:
            q = (
                sa.select(entries.c.id, entries.c.value)
                .where(
                    *of_signal_type(signal_type),
                    entries.c.removed_at.is_(None),
                    entries.c.id > last,
                )
                .order_by(entries.c.id)
                .limit(batch)
            )
            with self.engine.connect() as conn:
                rows = [(r.id, r.value) for r in conn.execute(q)]
            if not rows:
                return
            yield rows
            last = rows[-1][0]

    # -- local features (robust matching) -------------------------------------------
    def add_local_features(
        self, list_name: str, items: Iterable[tuple[str, bytes]], *, actor: str = "cli"
    ) -> int:
        """Store local features per known image (``group_ref`` → blob); one per group. Each
        new row gets a change-feed row (op "features") in the same transaction, so every
        worker's keypoint tier picks it up in commit order (``hashwatch.store.feed``)."""
        with self.engine.begin() as conn:
            list_id = self._list_row(conn, list_name).id
            added = self._write_local_features(conn, list_id, items, utcnow())
            if added:
                self._audit(conn, actor, "local_features.add", list_id, {"added": added})
        return added

    def _write_local_features(self, conn: sa.Connection, list_id: int,
                              items: Iterable[tuple[str, bytes]], now: str) -> int:
        """Insert local-feature rows (one per group; existing groups are kept) and their
        change-feed rows, inside the caller's transaction; returns the rows inserted."""
        from sqlalchemy.dialects import postgresql, sqlite

        dialect_insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        new_ids: list[int] = []
        for group, data in items:
            row = conn.execute(
                dialect_insert(local_features)
                .values(list_id=list_id, group_ref=group, data=data, added_at=now)
                .on_conflict_do_nothing()
                .returning(local_features.c.id)
            ).first()
            if row is not None:
                new_ids.append(int(row[0]))
        if new_ids:
            conn.execute(changes.insert(), [{"entry_id": i, "list_id": list_id,
                                             "op": "features", "at": now} for i in new_ids])
        return len(new_ids)

    def local_feature_groups(self, ids: Sequence[int]) -> dict[int, tuple[int, str]]:
        """Local-feature row id -> (list_id, group_ref), for the rows that exist."""
        out: dict[int, tuple[int, str]] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                q = sa.select(local_features.c.id, local_features.c.list_id,
                              local_features.c.group_ref).where(
                    local_features.c.id.in_([int(i) for i in ids[start:start + 500]]))
                for r in conn.execute(q):
                    out[r.id] = (r.list_id, r.group_ref)
        return out

    def group_entries(self, list_id: int, group_ref: str) -> list[EntryRow]:
        """Active entries of one known image in one (enabled) list."""
        if not group_ref:
            return []  # entries without a group are not one picture's
        q = self._entry_query().where(
            entries.c.list_id == list_id, entries.c.group_ref == group_ref,
            GROUPED,
        )
        with self.engine.connect() as conn:
            return [_row_to_entry(r) for r in conn.execute(q.order_by(entries.c.id))]

    # -- change feed ---------------------------------------------------------------
    def snapshot(self) -> AbstractContextManager[Snapshot]:
        """A consistent read view and its change-feed position (``hashwatch.store.feed``):
        ``with store.snapshot() as snap: snap.changed(position)``."""
        return open_snapshot(self.engine)

    def last_change(self) -> int:
        """The largest change-log number committed: a cheap "did any list change" marker.
        Not a feed position (on PostgreSQL, numbers become visible out of order): readers
        of the changes use :meth:`snapshot`."""
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.coalesce(sa.func.max(changes.c.seq), 0))).scalar_one()

    def feed_id(self) -> str:
        """The token naming this database's feed: a saved index replays only its own."""
        with self.engine.begin() as conn:
            return feed_id(conn)

    def position_usable(self, position: str) -> bool:
        """Whether a saved feed position can be replayed from on this database."""
        with self.engine.connect() as conn:
            return position_usable(conn, position)

    # -- stats ---------------------------------------------------------------------
    def stats(self) -> list[dict[str, Any]]:
        q = (
            sa.select(hash_lists.c.name, entries.c.signal_type, sa.func.count().label("n"))
            .select_from(entries.join(hash_lists, hash_lists.c.id == entries.c.list_id))
            .where(entries.c.removed_at.is_(None), hash_lists.c.deleted_at.is_(None))
            .group_by(hash_lists.c.name, entries.c.signal_type)
            .order_by(hash_lists.c.name, entries.c.signal_type)
        )
        with self.engine.connect() as conn:
            return [
                {"list": r.name, "signal_type": r.signal_type, "entries": r.n}
                for r in conn.execute(q)
            ]
