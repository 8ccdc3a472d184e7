"""Optional fetch of an image by URL (off by default).

Only allow-listed hosts (exact, or ``*.example.org`` for sub-domains), http(s) only, a size
and a total-time limit, at most 3 redirects and only to the same host, and never to
private, loopback, link-local or otherwise non-public addresses unless configured. The
host is resolved once, checked, and the connection is made to that checked address (TLS
still verifies the host name), so DNS rebinding cannot swap in an internal address.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx


class FetchError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def host_allowed(host: str, allowed: list[str]) -> bool:
    host = host.lower().rstrip(".")
    for pattern in allowed:
        p = pattern.lower().strip().rstrip(".")
        if p.startswith("*.") and host.endswith(p[1:]) and host != p[2:]:
            return True
        if host == p:
            return True
    return False


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def resolve_checked(host: str, port: int, allow_private: bool) -> str:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(422, "fetch_failed", f"cannot resolve host {host!r}") from exc
    addrs = [ipaddress.ip_address(i[4][0].split("%")[0]) for i in infos]
    if not addrs:
        raise FetchError(422, "fetch_failed", f"cannot resolve host {host!r}")
    if not allow_private and not all(_public(a) for a in addrs):
        raise FetchError(403, "address_not_allowed",
                         f"host {host!r} resolves to a non-public address")
    return str(addrs[0])


def fetch(
    url: str, *, allowed_hosts: list[str], allow_private: bool = False,
    max_bytes: int = 20 * 1024 * 1024, timeout: float = 10.0, max_redirects: int = 3,
) -> bytes:
    deadline = time.monotonic() + timeout
    first_host: str | None = None
    for _ in range(max_redirects + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchError(422, "bad_url", "only absolute http:// and https:// URLs")
        if parts.username or parts.password:
            raise FetchError(422, "bad_url", "credentials in URLs are not accepted")
        host = parts.hostname
        if first_host is None:
            first_host = host
        elif host.lower() != first_host.lower():
            raise FetchError(403, "redirect_not_allowed", "redirect to another host refused")
        if not host_allowed(host, allowed_hosts):
            raise FetchError(403, "host_not_allowed", f"host {host!r} is not allow-listed")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        ip = resolve_checked(host, port, allow_private)
        netloc_ip = f"[{ip}]" if ":" in ip else ip
        pinned = urlunsplit((parts.scheme, f"{netloc_ip}:{port}", parts.path or "/",
                             parts.query, ""))
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError(504, "fetch_timeout", "URL fetch took too long")
        headers = {"Host": parts.netloc.rsplit("@", 1)[-1], "User-Agent": "hashwatch-fetch/1"}
        ext = {"sni_hostname": host} if parts.scheme == "https" else {}
        try:
            with httpx.Client(timeout=remaining, follow_redirects=False) as client, \
                    client.stream("GET", pinned, headers=headers, extensions=ext) as resp:
                if resp.status_code in (301, 302, 303, 307, 308):
                    loc = resp.headers.get("location", "")
                    url = urljoin(url, loc)
                    continue
                if resp.status_code != 200:
                    raise FetchError(422, "fetch_failed",
                                     f"remote answered HTTP {resp.status_code}")
                declared = resp.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > max_bytes:
                    raise FetchError(413, "too_large", f"remote file over {max_bytes} bytes")
                buf = bytearray()
                for chunk in resp.iter_bytes():
                    buf += chunk
                    if len(buf) > max_bytes:
                        raise FetchError(413, "too_large", f"remote file over {max_bytes} bytes")
                    if time.monotonic() > deadline:
                        raise FetchError(504, "fetch_timeout", "URL fetch took too long")
                return bytes(buf)
        except httpx.TimeoutException as exc:
            raise FetchError(504, "fetch_timeout", "URL fetch took too long") from exc
        except httpx.HTTPError as exc:
            raise FetchError(422, "fetch_failed", f"fetch failed: {type(exc).__name__}") from exc
    raise FetchError(422, "fetch_failed", "too many redirects")
