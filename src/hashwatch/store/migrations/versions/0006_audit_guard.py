"""The audit log holds against every statement that can remove or replace rows.

0001 refused row-level UPDATE and DELETE. This adds, per database:

* SQLite: ``INSERT OR REPLACE`` / ``REPLACE`` over an existing row (its implicit delete
  fires no DELETE trigger unless ``recursive_triggers`` is on) is refused by a BEFORE
  INSERT trigger; ``DROP``/``ALTER``/``DELETE``/``UPDATE`` and ``PRAGMA writable_schema``
  are refused on every connection hashwatch opens by an authorizer
  (``hashwatch.store.guards``). SQLite has no DDL triggers: a process that opens the file
  with its own SQLite library can still drop the table; file permissions (0600) are the
  guard there.
* PostgreSQL: statement-level triggers refuse ``TRUNCATE`` and every ``UPDATE``/``DELETE``
  statement (even one matching no row); ``INSERT ... ON CONFLICT DO UPDATE`` and ``MERGE``
  hit the row-level UPDATE/DELETE trigger. Event triggers (created when the migrating role
  is a superuser, the only role that may) refuse ``DROP`` of the table, its triggers or
  its function, and ``ALTER TABLE audit_log`` (``DISABLE TRIGGER``, ``RENAME``, ...) and
  ``CREATE OR REPLACE`` of the guard function. Only a superuser can lift them
  (``DROP EVENT TRIGGER``), which is also the only role that could bypass triggers
  (``session_replication_role``).

Revision ID: 0006_audit_guard
Revises: 0001
"""

import logging

from alembic import op

revision = "0006_audit_guard"
down_revision = "0001"
branch_labels = ("audit_guard",)
depends_on = None

log = logging.getLogger(__name__)

_PG_DDL_GUARD = """
CREATE FUNCTION audit_log_guard_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
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
  END IF;
END $$
"""


def upgrade() -> None:
    bind = op.get_bind()
    dialect = bind.dialect.name
    if dialect == "sqlite":
        op.execute(
            "CREATE TRIGGER audit_log_no_replace BEFORE INSERT ON audit_log "
            "WHEN NEW.id IS NOT NULL AND EXISTS (SELECT 1 FROM audit_log WHERE id = NEW.id) "
            "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"
        )
    elif dialect == "postgresql":
        op.execute(
            "CREATE TRIGGER audit_log_append_only_stmt BEFORE UPDATE OR DELETE OR TRUNCATE "
            "ON audit_log FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()"
        )
        superuser = bind.exec_driver_sql(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").scalar()
        if superuser:
            op.execute(_PG_DDL_GUARD)
            op.execute("CREATE EVENT TRIGGER audit_log_no_drop ON sql_drop "
                       "EXECUTE FUNCTION audit_log_guard_ddl()")
            op.execute("CREATE EVENT TRIGGER audit_log_no_alter ON ddl_command_end "
                       "EXECUTE FUNCTION audit_log_guard_ddl()")
        else:
            log.warning("not a superuser: the audit log's DROP/ALTER guard (event triggers) "
                        "was not created; have a superuser run the migration to add it")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP EVENT TRIGGER IF EXISTS audit_log_no_alter")
        op.execute("DROP EVENT TRIGGER IF EXISTS audit_log_no_drop")
        op.execute("DROP FUNCTION IF EXISTS audit_log_guard_ddl()")
        op.execute("DROP TRIGGER IF EXISTS audit_log_append_only_stmt ON audit_log")
    # SQLite: the authorizer refuses dropping the trigger; downgrading is not supported

