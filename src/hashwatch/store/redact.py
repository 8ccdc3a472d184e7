"""Secrets out of messages: database URLs and connection strings with passwords.

Every error and log line that may carry a database URL (the CLI's ``--db``, the service's
start-up, driver errors that quote the connection string) goes through
:func:`redact_text`, so a password is never printed.
"""

from __future__ import annotations

import re

# scheme://user:password@host  ->  scheme://user:***@host (the user info runs to the last
# "@" of the authority, so a raw "@" inside a password is covered too)
_URL_AUTHORITY = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<auth>[^/\s?#]*)")
# libpq key=value strings and query parameters: password=..., sslpassword=...
_KV_PASSWORD = re.compile(r"(?i)(?P<head>\b(?:ssl)?password\s*=\s*)('[^']*'|[^\s&;]+)")


def redact_text(text: str) -> str:
    """``text`` with every URL password and ``password=`` value replaced by ``***``."""
    def _auth(m: re.Match[str]) -> str:
        auth = m.group("auth")
        if "@" not in auth:
            return m.group(0)
        userinfo, host = auth.rsplit("@", 1)
        if ":" not in userinfo:  # a lone token in the user part is a secret too
            return f"{m.group('scheme')}***@{host}"
        return f"{m.group('scheme')}{userinfo.split(':', 1)[0]}:***@{host}"

    text = _URL_AUTHORITY.sub(_auth, text)
    return _KV_PASSWORD.sub(lambda m: m.group("head") + "***", text)


def redact_url(url: object) -> str:
    """A database target (path or URL) safe to print."""
    return redact_text(str(url))


__all__ = ["redact_text", "redact_url"]


_installed = False


def install_log_redaction() -> None:
    """Redact every log record of this process, whichever logger or handler it goes
    through (uvicorn's included): message, arguments and exception text are rendered
    once, at creation, with :func:`redact_text` applied. Idempotent."""
    import logging
    import traceback

    global _installed
    if _installed:
        return
    _installed = True
    base = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = base(*args, **kwargs)
        try:
            msg = record.getMessage()
        except Exception:  # a bad format string stays the handler's problem
            return record
        red = redact_text(msg)
        if red != msg or record.args:
            record.msg, record.args = red, None
        if record.exc_info and record.exc_info[1] is not None:
            text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_text = redact_text(text)
            record.exc_info = None  # the handler prints exc_text, already redacted
        return record

    logging.setLogRecordFactory(factory)
