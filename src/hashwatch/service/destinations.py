"""Where the service may connect: one rule set for fetched URLs and webhook deliveries.

A destination URL is ``http://`` or ``https://`` with a host and no user name or password
(credentials in URLs end up in logs, audit rows and error messages). Its host is resolved
and *every* address it resolves to must be allowed; the connection is then made to the
checked address (:func:`pin`), so a name that re-resolves to an internal address between
the check and the connection (DNS rebinding) cannot reach it.

An address is allowed when it is public (``is_global``, not multicast, not reserved) or
inside a network the operator listed explicitly. Addresses that carry an IPv4 address
inside IPv6 are judged by the IPv4 address they lead to as well: IPv4-mapped
(``::ffff:a.b.c.d``), IPv4-compatible (``::a.b.c.d``), NAT64 (RFC 6052 well-known prefix
``64:ff9b::/96`` and RFC 8215 local-use ``64:ff9b:1::/48``), 6to4 (RFC 3056 ``2002::/16``)
and Teredo (RFC 4380 ``2001::/32``: server and client). Python's ``ipaddress`` calls
``64:ff9b::7f00:1`` and ``2002:7f00:1::`` global although they lead to 127.0.0.1.

Requests to a checked destination go through :func:`bounded_request`: one total deadline
for the whole exchange (a per-read timeout never fires on a server that drips one header line
a second), a cap on the answer's bytes (none are read when the caller needs only the status),
no redirects followed and no content coding asked for (a compressed answer cannot expand).

Legacy IPv4 spellings that resolvers accept (``2130706433``, ``0x7f000001``,
``0177.0.0.1``, ``127.1``) are read as the address they mean (``inet_aton``'s rules)
before any name lookup, so they are refused even where no resolver is asked.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit, urlunsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_COMPAT = ipaddress.ip_network("::/96")  # deprecated IPv4-compatible addresses


class DestinationError(Exception):
    """A destination that the rules refuse. ``status`` / ``code`` are the API's answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class DestinationPolicy:
    """``allow_private``: any address (a closed network where every host is trusted).
    ``allowed_networks``: non-public networks allowed by name, e.g. a receiver on
    ``10.1.2.0/24``; everything else must be public."""

    allow_private: bool = False
    allowed_networks: tuple[IPNetwork, ...] = field(default_factory=tuple)

    @classmethod
    def from_settings(cls, allow_private: bool, networks: Iterable[str]) -> DestinationPolicy:
        """Raises ``ValueError`` for a network that does not parse."""
        return cls(allow_private, tuple(ipaddress.ip_network(n.strip(), strict=False)
                                        for n in networks if n.strip()))

    def allows(self, ip: IPAddress) -> bool:
        if self.allow_private:
            return True
        if any(ip.version == n.version and ip in n for n in self.allowed_networks):
            return True
        inner = embedded_ipv4(ip)
        if any(ip in n for n in _NAT64):  # the prefix is in ::/8 ("reserved"): judge the
            return all(_public(a) for a in inner)  # address it translates to
        return all(_public(a) for a in [ip, *inner])


def _public(ip: IPAddress) -> bool:
    return ip.is_global and not ip.is_multicast and not ip.is_reserved \
        and not ip.is_unspecified


def embedded_ipv4(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address leads to (mapped, compatible, NAT64, 6to4, Teredo)."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    out: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        out.append(ip.ipv4_mapped)
    if ip in _COMPAT and int(ip) > 1:
        out.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if any(ip in n for n in _NAT64):
        out.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip.sixtofour is not None:
        out.append(ip.sixtofour)
    if ip.teredo is not None:
        out.extend(ip.teredo)
    return out


def literal_ip(host: str) -> IPAddress | None:
    """The address a host string spells, if it is an address (any inet_aton form)."""
    h = host.strip("[]")
    try:
        return ipaddress.ip_address(h.split("%", 1)[0])
    except ValueError:
        pass
    if h and all(c in "0123456789abcdefxABCDEFX." for c in h):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(h))
        except OSError:
            return None
    return None


def check_url(url: str) -> SplitResult:
    """Shape rules (scheme, host, no credentials, sane port). Raises DestinationError."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise DestinationError(422, "bad_url", "the URL does not parse") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DestinationError(422, "bad_url", "only absolute http:// and https:// URLs")
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        raise DestinationError(422, "bad_url", "credentials in URLs are not accepted")
    if port == 0:
        raise DestinationError(422, "bad_url", "port 0 is not a destination")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise DestinationError(422, "bad_url", "control characters or spaces in the URL")
    return parts


def resolve_checked(host: str, port: int, policy: DestinationPolicy) -> str:
    """Resolve ``host`` and return one allowed address (as text). Every address the name
    resolves to must be allowed. Raises DestinationError (403 when refused, 422 when the
    name does not resolve)."""
    lit = literal_ip(host)
    if lit is not None:
        addrs: list[IPAddress] = [lit]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError, OSError):
            raise DestinationError(422, "unresolvable_host",
                                   "the host name does not resolve") from None
        addrs = []
        for info in infos:
            try:
                addrs.append(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
            except ValueError:
                continue
        if not addrs:
            raise DestinationError(422, "unresolvable_host", "the host name does not resolve")
    refused = [a for a in addrs if not policy.allows(a)]
    if refused:
        raise DestinationError(403, "address_not_allowed",
                               "the host resolves to a loopback, private, link-local or "
                               "otherwise non-public address")
    return str(addrs[0])


@dataclass(frozen=True)
class Pinned:
    """A request target bound to a checked address: connect to ``url``, send ``host`` as
    the Host header and ``extensions`` (TLS server name) to httpx."""

    url: str
    host_header: str
    extensions: dict[str, str]


def pin(url: str, policy: DestinationPolicy) -> Pinned:
    """Check ``url`` (shape and every resolved address) and bind it to the checked
    address. Raises DestinationError."""
    parts = check_url(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    ip = resolve_checked(host, port, policy)
    netloc_ip = f"[{ip}]" if ":" in ip else ip
    target = urlunsplit((parts.scheme, f"{netloc_ip}:{port}", parts.path or "/",
                         parts.query, ""))
    ext = {"sni_hostname": host} if parts.scheme == "https" else {}
    return Pinned(target, parts.netloc, ext)


@dataclass(frozen=True)
class Answer:
    """What :func:`bounded_request` got back: the status, the headers and at most
    ``max_bytes`` of the body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


_tls: ssl.SSLContext | None = None
_tls_lock = threading.Lock()


def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context for every request (building one reads the CA bundle)."""
    global _tls
    with _tls_lock:
        if _tls is None:
            import certifi

            _tls = ssl.create_default_context(cafile=certifi.where())
        return _tls


def bounded_request(method: str, target: Pinned, *, deadline: float,
                    headers: Mapping[str, str] | None = None, content: bytes | None = None,
                    max_bytes: int = 0) -> Answer:
    """Send one request to the checked address ``target`` (see :func:`pin`) and return its
    answer, all within ``deadline`` seconds: connecting, sending, the status line and
    headers and the body. At most ``max_bytes`` of the body are read (0: none, the
    connection is closed after the headers). Redirects are not followed and
    ``Accept-Encoding: identity`` is sent. Blocks the calling thread (it runs its own event
    loop: callable from worker threads, not from a running loop).

    Raises ``TimeoutError`` past the deadline, ``httpx.HTTPError`` for transport errors and
    :class:`DestinationError` (413 ``too_large``) for an answer over ``max_bytes``."""
    import httpx

    async def go() -> Answer:
        async with httpx.AsyncClient(verify=_tls_context(), follow_redirects=False,
                                     timeout=deadline) as client, \
                client.stream(method, target.url, content=content, extensions=target.extensions,
                              headers={"Host": target.host_header,
                                       "Accept-Encoding": "identity", **(headers or {})}
                              ) as resp:
            body = bytearray()
            if max_bytes > 0:
                declared = resp.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise DestinationError(413, "too_large",
                                           f"the answer is over {max_bytes} bytes")
                async for chunk in resp.aiter_raw():
                    body += chunk
                    if len(body) > max_bytes:
                        raise DestinationError(413, "too_large",
                                               f"the answer is over {max_bytes} bytes")
            return Answer(resp.status_code, dict(resp.headers), bytes(body))

    async def bounded() -> Answer:
        return await asyncio.wait_for(go(), deadline)

    return asyncio.run(bounded())


def redact_url(url: str) -> str:
    """The URL without user name and password (for logs and audit rows)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unparseable URL)"
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


__all__ = ["Answer", "DestinationError", "DestinationPolicy", "Pinned", "bounded_request",
           "check_url", "embedded_ipv4", "literal_ip", "pin", "redact_url", "resolve_checked"]
