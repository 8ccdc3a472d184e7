"""What every request passes before any router sees it (one ASGI middleware, so every
router — present or added later — is covered without per-route code).

In order, before a byte of the body is read or parsed:

1. **Request line**: a path or query string holding control characters (NUL included),
   unpaired surrogates or percent-escapes that are not UTF-8 is a ``422``.
2. **Size**: a ``Content-Length`` over the limit for the path is a ``413`` (JSON bodies:
   ``max_json_bytes``; list imports: ``IMPORT_MAX_BYTES``; other bodies, i.e. uploads:
   ``max_upload_bytes``). A chunked body is counted as it arrives and answered ``413`` the
   moment it passes the limit, whatever the route was doing with it.
3. **Authentication** (every path but :data:`PUBLIC_PATHS`): the API key is checked *before* the
   body is read, so an unauthenticated 50 MB body costs a header lookup and a ``401``.
   Failed attempts are recorded (:class:`~hashwatch.service.audit.FailedAuthLog`, bounded)
   and a source that keeps failing is answered ``429`` without a database lookup.
4. **JSON**: a JSON body is read (bounded by 2.) and checked as a whole: ``NaN`` /
   ``Infinity`` / numbers that overflow to infinity, integers outside 64 bits, strings with
   NUL or unpaired surrogates (with nesting deeper than ``MAX_JSON_DEPTH`` on the way),
   nesting beyond the parser's recursion limit: each a ``422``
   naming the field (a JSON pointer) and the problem, never echoing the value.

Then the route runs with the body replayed unchanged.
"""

from __future__ import annotations

import json
import logging
import math
import re
import unicodedata
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hashwatch.store.guards import text_problem

log = logging.getLogger("hashwatch.service")

IMPORT_MAX_BYTES = 4 * 1024 * 1024 * 1024  # bulk list imports may be large; streamed to disk
MAX_JSON_DEPTH = 32
_INT_LIMIT = 2**63
SNIPPET = 32  # the most of any input an error message repeats


def snippet(text: object, n: int = SNIPPET) -> str:
    """At most ``n`` characters of ``text``, control characters escaped (for messages)."""
    s = str(text)
    cut = s[:n]
    out = "".join(c if c.isprintable() and not 0xD800 <= ord(c) <= 0xDFFF
                  else f"\\u{ord(c):04x}" for c in cut)
    return out + ("…" if len(s) > n else "")


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None,
           **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, **extra}},
                        status_code=status, headers=headers)


class _Refused(Exception):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field, self.problem = field, problem


def _bad_char(s: str) -> str | None:
    for c in s:
        o = ord(c)
        if o < 0x20 or o == 0x7F:
            return f"contains a control character (U+{o:04X})"
        if 0xD800 <= o <= 0xDFFF:
            return "contains an unpaired UTF-16 surrogate"
        if o > 0x7F and unicodedata.category(c) in ("Cc", "Cf"):
            return f"contains a control or bidirectional-format character (U+{o:04X})"
    return None


def check_request_line(path: str, raw_path: bytes | None, query: bytes) -> None:
    """Raises _Refused for a path or query that no route should ever see."""
    try:
        decoded = unquote_to_bytes(raw_path).decode("utf-8") if raw_path else path
    except UnicodeDecodeError:
        raise _Refused("path", "percent-escapes that are not UTF-8") from None
    problem = _bad_char(decoded)
    if problem:
        raise _Refused("path", problem)
    if not query:
        return
    for part in query.split(b"&"):
        for i, piece in enumerate(part.split(b"=", 1)):
            try:
                text = unquote_to_bytes(piece.replace(b"+", b" ")).decode("utf-8")
            except UnicodeDecodeError:
                raise _Refused("query", "percent-escapes that are not UTF-8") from None
            problem = _bad_char(text)
            if problem:
                key = snippet(part.split(b"=")[0].decode("latin-1"), 40)
                raise _Refused("query" if i == 0 else f"query:{key}", problem)


def _pointer(path: list[str | int]) -> str:
    return "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in path)


def check_json(body: bytes) -> None:
    """Parse ``body`` and refuse hostile values (raises _Refused; lets syntax errors
    through as ValueError for the router's own 422)."""

    def bad_constant(name: str) -> Any:
        raise _Refused("", f"non-finite number {name} (JSON has none)")

    def parse_float(text: str) -> float:
        v = float(text)
        if not math.isfinite(v):
            raise _Refused("", "number out of range (overflows to infinity)")
        return v

    def parse_int(text: str) -> int:
        if len(text.lstrip("-")) > 19:
            raise _Refused("", "integer out of range (beyond 64 bits)")
        v = int(text)
        if not -_INT_LIMIT <= v < _INT_LIMIT:
            raise _Refused("", "integer out of range (beyond 64 bits)")
        return v

    try:
        doc = json.loads(body, parse_constant=bad_constant, parse_float=parse_float,
                         parse_int=parse_int)
    except RecursionError:
        raise _Refused("", f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    except UnicodeDecodeError:
        raise _Refused("", "the body is not UTF-8") from None
    # NUL and unpaired surrogates can only reach a parsed string through a \u escape (a
    # raw NUL byte is a JSON syntax error, a raw surrogate invalid UTF-8), so a body without
    # one needs no walk (the common case: 4x cheaper on a 1,000-hash request)
    if b"\\u" not in body:
        return
    # walk without recursion: depth, and every key and string value
    stack: list[tuple[Any, list[str | int]]] = [(doc, [])]
    while stack:
        node, path = stack.pop()
        if len(path) > MAX_JSON_DEPTH:
            raise _Refused(_pointer(path[:MAX_JSON_DEPTH]),
                           f"nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(node, str):
            problem = text_problem(node)
            if problem:
                raise _Refused(_pointer(path), problem)
        elif isinstance(node, dict):
            for k, v in node.items():
                problem = text_problem(k)
                if problem:
                    raise _Refused(_pointer(path), f"a member name {problem}")
                stack.append((v, [*path, k]))
        elif isinstance(node, list):
            stack.extend((v, [*path, i]) for i, v in enumerate(node))


# Paths answered without an API key. Everything else needs one: a router added later is
# covered unless it is listed here on purpose.
# (an entry ending in "/" is a prefix, others exact paths; /docs and /redoc are not served
# and answer 404 to anyone).
PUBLIC_PATHS = ("/v1/health/", "/static/", "/openapi.json", "/review", "/docs", "/redoc")
_PUBLIC_PREFIXES = tuple(p for p in PUBLIC_PATHS if p.endswith("/"))
_PUBLIC_EXACT = frozenset(p for p in PUBLIC_PATHS if not p.endswith("/"))


def needs_api_key(path: str) -> bool:
    """Deny by default: every path but the public ones (health, schema, review UI page
    and its static files, which carry no data) is authenticated before its body is read."""
    return not (path in _PUBLIC_EXACT or path.startswith(_PUBLIC_PREFIXES))


_JSON_TYPE = re.compile(rb"^application/([a-z0-9.+-]*\+)?json\s*(;|$)", re.I)


class RequestGuard:
    """The middleware described in the module docstring.

    ``authenticate(scope, headers)`` returns None when the request may go on (it may
    store the principal in ``scope["state"]``), or the response to send instead; it is
    called for protected paths only (see ``needs_key``)."""

    def __init__(self, app: ASGIApp, *, max_upload_bytes: int, max_json_bytes: int,
                 authenticate: Callable[[Scope, Headers], Any] | None = None,
                 needs_key: Callable[[str], bool] | None = None,
                 big_paths: tuple[str, ...] = ("/import",),
                 big_limit: int = IMPORT_MAX_BYTES) -> None:
        self.app = app
        self.max_upload_bytes = max_upload_bytes
        self.max_json_bytes = max_json_bytes
        self.authenticate = authenticate
        self.needs_key = needs_key or needs_api_key
        self.big_paths = big_paths
        self.big_limit = big_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        try:
            check_request_line(path, scope.get("raw_path"), scope.get("query_string", b""))
        except _Refused as exc:
            await _error(422, "invalid_request_line", f"the {exc.field} {exc.problem}",
                         field=exc.field, problem=exc.problem)(scope, receive, send)
            return
        headers = Headers(scope=scope)
        is_json = bool(_JSON_TYPE.match(headers.get("content-type", "").encode("latin-1")))
        if is_json:
            limit = self.max_json_bytes
        elif path.endswith(self.big_paths):
            limit = self.big_limit
        else:
            limit = self.max_upload_bytes
        declared = headers.get("content-length")
        if declared is not None:
            try:
                n = int(declared)
            except ValueError:
                n = -1
            if n < 0:
                await _error(400, "bad_content_length", "Content-Length is not a number")(
                    scope, receive, send)
                return
            if n > limit:
                await _error(413, "too_large", f"request body over {limit} bytes")(
                    scope, receive, send)
                return
        if self.authenticate is not None and self.needs_key(path):
            refusal = self.authenticate(scope, headers)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        if is_json and scope.get("method") in ("POST", "PUT", "PATCH", "DELETE"):
            await self._json(scope, receive, send, limit)
            return
        await self._counted(scope, receive, send, limit)

    async def _json(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        chunks: list[bytes] = []
        seen = 0
        more = True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body = msg.get("body", b"")
            seen += len(body)
            if seen > limit:
                await _error(413, "too_large", f"request body over {limit} bytes")(
                    scope, receive, send)
                return
            chunks.append(body)
            more = msg.get("more_body", False)
        raw = b"".join(chunks)
        try:
            if raw:
                check_json(raw)
        except _Refused as exc:
            field = exc.field or "body"
            await _error(422, "invalid_json_value", f"{field}: {exc.problem}", field=field,
                         problem=exc.problem)(scope, receive, send)
            return
        except ValueError:
            pass  # malformed JSON: the router's parser answers it (422, no echo)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _counted(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        seen = 0
        over = False
        started = False

        async def counting() -> Message:
            nonlocal seen, over
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    over = True
                    raise BodyTooLarge()
            return msg

        async def guarded_send(msg: Message) -> None:
            nonlocal started
            if over:
                # whatever the route made of the cut-off body (a parser's 400, a 500),
                # the answer is the 413 it is
                if not started:
                    started = True
                    resp = _error(413, "too_large", f"request body over {limit} bytes")
                    await resp({"type": "http"}, receive, send)
                return
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, counting, guarded_send)
        except BodyTooLarge:
            if not started:
                await _error(413, "too_large", f"request body over {limit} bytes")(
                    scope, receive, send)


class BodyTooLarge(Exception):
    """Raised into the route while a chunked body passes the limit."""


__all__ = ["IMPORT_MAX_BYTES", "PUBLIC_PATHS", "BodyTooLarge", "RequestGuard", "check_json",
           "check_request_line", "needs_api_key", "snippet"]
