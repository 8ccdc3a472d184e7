"""Guards every connection of a :class:`~hashwatch.store.Store` carries.

* Text the database cannot hold faithfully is refused before it is sent: a NUL character
  (PostgreSQL's text types cannot store it; SQLite truncates it in places) or an unpaired
  UTF-16 surrogate (not encodable as UTF-8). Every string parameter of every statement is
  checked, whatever code path built the statement, so no endpoint can reach the database
  with such text and fail with a driver error: it is an :class:`InvalidText` instead.
* Identifiers (list names, review queues) refuse control, format (bidirectional
  overrides, zero-width characters), separator and surrogate characters and path-like
  values: :func:`check_identifier`.
* On SQLite, an authorizer refuses statements that would remove or replace audit rows
  or the triggers that protect them (the triggers themselves are in the migrations).
"""

from __future__ import annotations

import re
import sqlite3
import unicodedata
from typing import Any

import sqlalchemy as sa


class InvalidText(ValueError):
    """A string the store refuses to write (``field`` names the parameter if known)."""

    def __init__(self, problem: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.problem = problem
        self.field = field


_SURROGATE = re.compile("[\ud800-\udfff]")


def text_problem(s: str) -> str | None:
    """Why ``s`` cannot be stored, or None."""
    if "\x00" in s:
        return "contains a NUL character"
    if not s.isascii() and _SURROGATE.search(s):
        return "contains an unpaired UTF-16 surrogate"
    return None


def _check_value(v: Any, key: object) -> None:
    if isinstance(v, str):
        problem = text_problem(v)
        if problem:
            raise InvalidText(problem, str(key) if isinstance(key, str) else None)


def _check_params(params: Any) -> None:
    if isinstance(params, dict):
        for k, v in params.items():
            _check_value(v, k)
    elif isinstance(params, list | tuple):
        for p in params:
            if isinstance(p, dict | list | tuple):
                _check_params(p)
            else:
                _check_value(p, None)


def install_text_guard(engine: sa.Engine) -> None:
    """Check every string parameter before it reaches the driver."""

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _guard(_conn: Any, _cursor: Any, _statement: str, parameters: Any, _context: Any,
               _executemany: bool) -> None:
        if parameters:
            _check_params(parameters)


# -- identifiers ----------------------------------------------------------------------
_BAD_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def check_identifier(value: str, what: str = "name", max_len: int = 200) -> str:
    """``value`` stripped of outer spaces, if it is a safe identifier: 1..max_len
    characters, no control/format (bidi override, zero-width)/separator/surrogate/private
    or unassigned characters, no ``/`` or ``\\``, not ``.``/``..`` and no ``..``.
    Raises :class:`InvalidText` naming the problem (never echoing the value)."""
    v = value.strip() if isinstance(value, str) else ""
    if not v or len(v) > max_len:
        raise InvalidText(f"must be 1-{max_len} characters", what)
    for c in v:
        if c in "/\\":
            raise InvalidText("must not contain '/' or '\\'", what)
        if unicodedata.category(c) in _BAD_CATEGORIES:
            raise InvalidText(f"must not contain control or invisible characters "
                              f"(U+{ord(c):04X})", what)
    if v in (".", "..") or ".." in v:
        raise InvalidText("must not be or contain '..'", what)
    return v


# -- SQLite: the audit log is append-only for every connection we open ------------------
AUDIT_TABLE = "audit_log"
_PROTECTED_TRIGGERS = ("audit_log_no_update", "audit_log_no_delete", "audit_log_no_replace")


def _authorizer(action: int, arg1: str | None, arg2: str | None, _db: str | None,
                _source: str | None) -> int:
    if action in (sqlite3.SQLITE_DELETE, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DROP_TABLE,
                  sqlite3.SQLITE_DROP_TEMP_TABLE) and arg1 == AUDIT_TABLE:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_ALTER_TABLE and arg2 == AUDIT_TABLE:
        return sqlite3.SQLITE_DENY
    if action in (sqlite3.SQLITE_DROP_TRIGGER, sqlite3.SQLITE_DROP_TEMP_TRIGGER) and (
            arg2 == AUDIT_TABLE or arg1 in _PROTECTED_TRIGGERS):
        return sqlite3.SQLITE_DENY
    if action in (sqlite3.SQLITE_CREATE_TRIGGER, sqlite3.SQLITE_CREATE_TEMP_TRIGGER) and \
            arg2 == AUDIT_TABLE and arg1 not in _PROTECTED_TRIGGERS:
        # a trigger of one's own on the log (BEFORE INSERT ... RAISE(IGNORE)) would drop
        # every later audit row without an error; only the guards' own (migrations) pass
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() == "writable_schema" \
            and arg2 is not None:
        # writable_schema lets sqlite_master (and so the triggers) be edited by hand
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def install_sqlite_authorizer(dbapi_conn: Any) -> None:
    """Refuse DELETE/UPDATE/DROP/ALTER on the audit log and its triggers, triggers of
    anyone else's on it, and ``PRAGMA writable_schema=...``, on this connection."""
    dbapi_conn.set_authorizer(_authorizer)


__all__ = ["InvalidText", "check_identifier", "install_sqlite_authorizer",
           "install_text_guard", "text_problem"]
