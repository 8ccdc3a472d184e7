"""The audit log's DDL guard survives ``DROP SCHEMA public CASCADE`` and refuses child tables.

Found by the red-team pass of issue 13 (PostgreSQL, event triggers present):

* The event-trigger function lived in ``public``. ``DROP SCHEMA public CASCADE`` dropped it
  (and with it both event triggers) in the same command as ``audit_log``, so ``sql_drop``
  never ran and the whole audit log was gone. The owner of a schema may drop everything in
  it, whoever owns the objects, so a service role that owns its database (and so, on
  PostgreSQL 15, ``public``) could do this without being a superuser. The function now
  lives in its own schema, ``hashwatch_guard``, owned by the (superuser) migrating role:
  dropping ``public`` now runs the guard, which refuses it.
* ``CREATE TABLE t () INHERITS (audit_log)`` (or ``ALTER TABLE t INHERIT audit_log``) was
  allowed: rows inserted into ``t`` show up in every read of ``audit_log`` (forged
  entries), and can be deleted again, because triggers are not inherited. The guard now
  refuses any table inheriting from the audit log.

Only applies where 0006 created the event triggers (the migrating role is a superuser);
elsewhere it changes nothing.

Revision ID: 0011_audit_guard_schema
Revises: 0006_audit_guard
"""

from alembic import op

revision = "0011_audit_guard_schema"
down_revision = "0006_audit_guard"
branch_labels = ("audit_guard_schema",)
depends_on = None

SCHEMA = "hashwatch_guard"

_GUARD = """
CREATE OR REPLACE FUNCTION {schema}.audit_log_guard_ddl() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE r record;
BEGIN
  IF tg_event = 'sql_drop' THEN
    FOR r IN SELECT * FROM pg_event_trigger_dropped_objects() LOOP
      IF r.object_identity LIKE '%audit_log%' THEN
        RAISE EXCEPTION 'audit_log is append-only: % % refused', r.object_type,
          r.object_identity;
      END IF;
    END LOOP;
  ELSE
    FOR r IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
      -- by name, and by the table that carries the guard trigger (a RENAME changes the name)
      IF r.object_identity LIKE '%audit_log%' OR EXISTS (
          SELECT 1 FROM pg_trigger t WHERE t.tgrelid = r.objid
            AND t.tgname = 'audit_log_append_only') THEN
        RAISE EXCEPTION 'audit_log is append-only: % % refused', r.command_tag,
          r.object_identity;
      END IF;
    END LOOP;
    -- a child table's rows read as audit rows, and its own rows have no guard
    IF EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_trigger t ON t.tgrelid = i.inhparent
               WHERE t.tgname = 'audit_log_append_only') THEN
      RAISE EXCEPTION 'audit_log is append-only: a table inheriting from it is refused';
    END IF;
  END IF;
END $$
"""


def _guarded(bind: object) -> bool:
    """Whether 0006 created the event triggers here (PostgreSQL, superuser)."""
    return bool(bind.exec_driver_sql(  # type: ignore[attr-defined]
        "SELECT count(*) FROM pg_event_trigger WHERE evtname = 'audit_log_no_alter'").scalar())


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or not _guarded(bind):
        return
    # event triggers do not fire for ALTER EVENT TRIGGER; while this one is off, the
    # function can be moved and replaced (one transaction: nobody sees it off)
    op.execute("ALTER EVENT TRIGGER audit_log_no_alter DISABLE")
    op.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    op.execute(f"REVOKE ALL ON SCHEMA {SCHEMA} FROM PUBLIC")
    op.execute(f"ALTER FUNCTION public.audit_log_guard_ddl() SET SCHEMA {SCHEMA}")
    op.execute(_GUARD.format(schema=SCHEMA))
    op.execute("ALTER EVENT TRIGGER audit_log_no_alter ENABLE")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or not _guarded(bind):
        return
    op.execute("ALTER EVENT TRIGGER audit_log_no_alter DISABLE")
    op.execute(f"ALTER FUNCTION {SCHEMA}.audit_log_guard_ddl() SET SCHEMA public")
    op.execute(f"DROP SCHEMA IF EXISTS {SCHEMA}")
    op.execute("ALTER EVENT TRIGGER audit_log_no_alter ENABLE")
