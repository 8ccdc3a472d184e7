"""PostgreSQL: ``entries.list_id`` is checked once per statement instead of once per row.

The foreign key ``entries.list_id -> hash_lists.id`` ran one ``SELECT ... FOR KEY SHARE`` on
``hash_lists`` per inserted row (PostgreSQL's referential-integrity triggers are row-level):
about a quarter of the server's time in a 20-million-entry bulk import (BENCHMARKS.md, "Where
the PostgreSQL bulk import's server time goes"). Triggers keep the same integrity, set-based:

* ``entries_list_check``: AFTER INSERT, once per statement, reads the statement's new rows
  (a transition table), locks each distinct referenced list ``FOR KEY SHARE`` (what the
  foreign key's check locks, so a concurrent delete of that list waits for this transaction)
  and refuses the statement (SQLSTATE 23503, foreign_key_violation) if any list is missing.
* ``entries_list_change``: an UPDATE that changes ``list_id`` gets the same check per row
  (PostgreSQL allows no transition table on a column-specific trigger; hashwatch never
  changes ``list_id``).
* ``hash_lists_referenced``: BEFORE DELETE, and BEFORE UPDATE of ``id``, of a ``hash_lists``
  row: refused while any entry refers to it. A row trigger runs after the row is locked, so
  it sees entries committed by a transaction it waited for. (Lists are only ever
  soft-deleted; ``TRUNCATE hash_lists`` stays refused by ``local_features``' foreign key.)

SQLite keeps its foreign key (its check is cheap: same process, no SPI).

Revision ID: 0013_entries_list_guard
Revises: 0001
"""

from alembic import op

revision = "0013_entries_list_guard"
down_revision = "0001"
branch_labels = ("entries_list_guard",)
depends_on = None

_FK_NAME = "fk_entries_list_id_hash_lists"

_CHECK_STATEMENT = """
CREATE FUNCTION hashwatch_entries_list_check() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  ids integer[];
  n_found integer;
BEGIN
  SELECT array_agg(list_id) INTO ids FROM (SELECT DISTINCT list_id FROM new_entries) d;
  IF ids IS NULL THEN
    RETURN NULL;
  END IF;
  SELECT count(*) INTO n_found
    FROM (SELECT id FROM hash_lists WHERE id = ANY (ids) FOR KEY SHARE) h;
  IF n_found <> cardinality(ids) THEN
    RAISE EXCEPTION 'insert into entries refers to a hash list that does not exist'
      USING ERRCODE = 'foreign_key_violation';
  END IF;
  RETURN NULL;
END $$
"""

_CHECK_ROW = """
CREATE FUNCTION hashwatch_entries_list_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM 1 FROM hash_lists WHERE id = NEW.list_id FOR KEY SHARE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'update of entries refers to a hash list that does not exist'
      USING ERRCODE = 'foreign_key_violation';
  END IF;
  RETURN NULL;
END $$
"""

_REFERENCED = """
CREATE FUNCTION hashwatch_hash_lists_referenced() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM entries WHERE list_id = OLD.id) THEN
    RAISE EXCEPTION 'hash list % still has entries', OLD.id
      USING ERRCODE = 'foreign_key_violation';
  END IF;
  IF TG_OP = 'DELETE' THEN
    RETURN OLD;
  END IF;
  RETURN NEW;
END $$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_CHECK_STATEMENT)
    op.execute(_CHECK_ROW)
    op.execute(_REFERENCED)
    op.execute("CREATE TRIGGER entries_list_check AFTER INSERT ON entries "
               "REFERENCING NEW TABLE AS new_entries FOR EACH STATEMENT "
               "EXECUTE FUNCTION hashwatch_entries_list_check()")
    op.execute("CREATE TRIGGER entries_list_change AFTER UPDATE OF list_id ON entries "
               "FOR EACH ROW WHEN (OLD.list_id IS DISTINCT FROM NEW.list_id) "
               "EXECUTE FUNCTION hashwatch_entries_list_change()")
    op.execute("CREATE TRIGGER hash_lists_referenced BEFORE DELETE OR UPDATE OF id "
               "ON hash_lists FOR EACH ROW EXECUTE FUNCTION hashwatch_hash_lists_referenced()")
    # the foreign key's name depends on the naming convention it was created under
    op.execute("""
DO $$
DECLARE c text;
BEGIN
  FOR c IN SELECT conname FROM pg_constraint
            WHERE conrelid = 'entries'::regclass AND confrelid = 'hash_lists'::regclass
              AND contype = 'f'
  LOOP
    EXECUTE format('ALTER TABLE entries DROP CONSTRAINT %I', c);
  END LOOP;
END $$""")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS hash_lists_referenced ON hash_lists")
    op.execute("DROP TRIGGER IF EXISTS entries_list_change ON entries")
    op.execute("DROP TRIGGER IF EXISTS entries_list_check ON entries")
    op.execute("DROP FUNCTION IF EXISTS hashwatch_hash_lists_referenced()")
    op.execute("DROP FUNCTION IF EXISTS hashwatch_entries_list_change()")
    op.execute("DROP FUNCTION IF EXISTS hashwatch_entries_list_check()")
    op.execute(f"ALTER TABLE entries ADD CONSTRAINT {_FK_NAME} FOREIGN KEY (list_id) "
               "REFERENCES hash_lists (id)")
