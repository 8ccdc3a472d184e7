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
4. **JSON**: a body FastAPI would parse as JSON (:func:`is_json_content_type`: the same
   rule) is read (bounded by 2.) and checked as a whole by :func:`load_json`, the one
   strict reader every JSON the service parses goes through: UTF-8 only (RFC 8259 §8.1),
   at most ``MAX_JSON_VALUES`` values (a ``413`` before parsing), no ``NaN`` /
   ``Infinity`` / numbers that overflow to infinity, integers within 64 bits, strings
   without NUL or unpaired surrogates, nesting at most ``MAX_JSON_DEPTH``: each a ``422``
   naming the field (a JSON pointer) and the problem, never echoing the value. Big bodies
   are checked in a worker thread, so the event loop keeps serving other requests.

Then the route runs with the body replayed unchanged.
"""

from __future__ import annotations

import email.message
import json
import logging
import math
import unicodedata
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hashwatch.store.guards import text_problem

log = logging.getLogger("hashwatch.service")

IMPORT_MAX_BYTES = 4 * 1024 * 1024 * 1024  # bulk list imports may be large; streamed to disk
MAX_JSON_DEPTH = 32
# values (counted as commas, before parsing) a JSON body may hold: the largest legitimate
# request, 10,000 entries with 50 labels each, has about 550,000; a body of bare numbers
# costs the checker a Python call per value, so the bound is on values, not bytes
MAX_JSON_VALUES = 1_000_000
OFFLOAD_JSON_BYTES = 256 * 1024  # bodies above this are checked off the event loop
_INT_LIMIT = 2**63
SNIPPET = 32  # the most of any input an error message repeats


def safe_text(text: str) -> str:
    """``text`` with unpaired surrogates and other unprintable characters written as
    ``\\uXXXX``, so a message that repeats input can always be encoded."""
    if text.isascii() and text.isprintable():
        return text
    return "".join(c if c.isprintable() and not 0xD800 <= ord(c) <= 0xDFFF
                   else f"\\u{ord(c):04x}" for c in text)


def snippet(text: object, n: int = SNIPPET) -> str:
    """At most ``n`` characters of ``text``, control characters escaped (for messages)."""
    s = str(text)
    return safe_text(s[:n]) + ("…" if len(s) > n else "")


def is_json_content_type(value: str | None) -> bool:
    """Whether a body with this ``Content-Type`` is parsed as JSON: FastAPI's own rule
    (``application/json`` or ``application/<anything>+json``, parameters ignored), so the
    guard checks exactly the bodies the routes will parse."""
    if not value:
        return False
    m = email.message.Message()
    m["content-type"] = value
    if m.get_content_maintype() != "application":
        return False
    sub = m.get_content_subtype()
    return sub == "json" or sub.endswith("+json")


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None,
           **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": safe_text(message), **extra}},
                        status_code=status, headers=headers)


class JsonRefused(ValueError):
    """A document or request line refused by the guard: ``field`` (a JSON pointer, ``""``
    for the whole body, or ``path``/``query``), ``problem`` (words, never the value) and
    the HTTP ``status``."""

    def __init__(self, field: str, problem: str, status: int = 422) -> None:
        super().__init__(f"{field or 'body'}: {problem}")
        self.field, self.problem, self.status = field, problem, status


_Refused = JsonRefused


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


def load_json(body: bytes | str) -> Any:
    """Parse ``body`` strictly (the module docstring, item 4) and return the document.

    Raises :class:`JsonRefused` for a hostile document (``status`` 413 for too many values,
    422 otherwise) and ``ValueError`` for text that is not JSON at all."""
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else bytes(body)
    if raw.count(b",") >= MAX_JSON_VALUES:
        raise JsonRefused("", f"more than {MAX_JSON_VALUES} values", 413)
    try:
        text = raw.decode("utf-8")  # strict: UTF-16/32 and encoded surrogates are refused
    except UnicodeDecodeError:
        raise JsonRefused("", "the body is not UTF-8") from None

    def bad_constant(name: str) -> Any:
        raise JsonRefused("", f"non-finite number {name} (JSON has none)")

    def parse_float(text: str) -> float:
        v = float(text)
        if not math.isfinite(v):
            raise JsonRefused("", "number out of range (overflows to infinity)")
        return v

    def parse_int(text: str) -> int:
        if len(text.lstrip("-")) > 19:
            raise JsonRefused("", "integer out of range (beyond 64 bits)")
        v = int(text)
        if not -_INT_LIMIT <= v < _INT_LIMIT:
            raise JsonRefused("", "integer out of range (beyond 64 bits)")
        return v

    try:
        doc = json.loads(text, parse_constant=bad_constant, parse_float=parse_float,
                         parse_int=parse_int)
    except RecursionError:
        raise JsonRefused("", f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    # after a strict UTF-8 decode, NUL and unpaired surrogates reach a parsed string only
    # through a \\u escape (a raw NUL is a JSON syntax error): without one, only the depth
    # needs checking, over containers. One breadth-first pass, level by level, costs about a
    # fifth of a walk that carries each node's path (0.2 s against 1.0 s of CPU for a
    # 16 MiB body of 490,000 objects); the path is only worked out for a document refused.
    strings = b"\\u" in raw
    if not _fine(doc, strings):
        _refuse_with_path(doc, strings)
    return doc


def _fine(doc: Any, strings: bool) -> bool:
    """Whether ``doc`` nests containers at most ``MAX_JSON_DEPTH`` deep and (``strings``)
    holds no string or member name with a :func:`text_problem`."""
    level, depth = [doc], 0
    while level:
        if depth > MAX_JSON_DEPTH:
            return False
        nxt: list[Any] = []
        for node in level:
            if type(node) is dict:
                if strings and any(text_problem(k) for k in node):
                    return False
                values: Any = node.values()
            elif type(node) is list:
                values = node
            else:  # a scalar at the top
                values = [node]
            if strings:
                for v in values:
                    if type(v) is str:
                        if text_problem(v):
                            return False
                    elif type(v) is dict or type(v) is list:
                        nxt.append(v)
            else:
                nxt += [v for v in values if type(v) is dict or type(v) is list]
        level, depth = nxt, depth + 1
    return True


def _refuse_with_path(doc: Any, strings: bool) -> None:
    """Raise :class:`JsonRefused` naming (a JSON pointer) the first problem :func:`_fine`
    found in ``doc``."""
    stack: list[tuple[Any, list[str | int]]] = [(doc, [])]
    while stack:
        node, path = stack.pop()
        if len(path) > MAX_JSON_DEPTH:
            raise JsonRefused(_pointer(path[:MAX_JSON_DEPTH]),
                              f"nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(node, str):
            problem = text_problem(node)
            if problem:
                raise JsonRefused(_pointer(path), problem)
        elif isinstance(node, dict):
            for k, v in node.items():
                if strings:
                    problem = text_problem(k)
                    if problem:
                        raise JsonRefused(_pointer(path), f"a member name {problem}")
                if strings or isinstance(v, dict | list):
                    stack.append((v, [*path, k]))
        elif isinstance(node, list):
            stack.extend((v, [*path, i]) for i, v in enumerate(node)
                         if strings or isinstance(v, dict | list))
    raise JsonRefused("", "refused")  # not reached: _fine found a problem this walk names


def check_json(body: bytes) -> None:
    """:func:`load_json` without keeping the document (the guard's check)."""
    load_json(body)


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
        is_json = is_json_content_type(headers.get("content-type"))
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
            if len(raw) > OFFLOAD_JSON_BYTES:  # up to a second of CPU: not in the loop
                await run_in_threadpool(check_json, raw)
            elif raw:
                check_json(raw)
        except JsonRefused as exc:
            if exc.status == 413:
                await _error(413, "too_large", f"request body with {exc.problem}")(
                    scope, receive, send)
                return
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


__all__ = ["IMPORT_MAX_BYTES", "MAX_JSON_VALUES", "PUBLIC_PATHS", "BodyTooLarge", "JsonRefused",
           "RequestGuard", "check_json", "check_request_line", "is_json_content_type",
           "load_json", "needs_api_key", "safe_text", "snippet"]
