"""Optional fetch of an image by URL (off by default).

Only allow-listed hosts (exact, or ``*.example.org`` for sub-domains), http(s) only, a size
and a total-time limit (over every redirect, the headers included:
:func:`~hashwatch.service.destinations.bounded_request`), at most 3 redirects and only to
the same host, and the destination rules of :mod:`hashwatch.service.destinations` (never
loopback, private, link-local, metadata or IPv6 forms leading to them unless configured).
The host is resolved once, checked, and the connection is made to that checked address
(TLS still verifies the host name), so DNS rebinding cannot swap in an internal address.
"""

from __future__ import annotations

import time
from urllib.parse import urljoin

import httpx

from hashwatch.service.destinations import (
    DestinationError,
    DestinationPolicy,
    bounded_request,
    check_url,
    pin,
)


class FetchError(DestinationError):
    """A refused or failed fetch: ``status``, ``code``, ``message`` for the API answer."""


def host_allowed(host: str, allowed: list[str]) -> bool:
    host = host.lower().rstrip(".")
    for pattern in allowed:
        p = pattern.lower().strip().rstrip(".")
        if p.startswith("*.") and host.endswith(p[1:]) and host != p[2:]:
            return True
        if host == p:
            return True
    return False


def fetch(
    url: str, *, allowed_hosts: list[str], allow_private: bool = False,
    max_bytes: int = 20 * 1024 * 1024, timeout: float = 10.0, max_redirects: int = 3,
    policy: DestinationPolicy | None = None,
) -> bytes:
    """GET ``url`` under the rules above. Raises FetchError."""
    policy = policy or DestinationPolicy(allow_private=allow_private)
    deadline = time.monotonic() + timeout
    first_host: str | None = None
    for _ in range(max_redirects + 1):
        try:
            parts = check_url(url)
        except DestinationError as exc:
            raise FetchError(exc.status, exc.code, exc.message) from None
        host = parts.hostname or ""
        if first_host is None:
            first_host = host
        elif host.lower() != first_host.lower():
            raise FetchError(403, "redirect_not_allowed", "redirect to another host refused")
        if not host_allowed(host, allowed_hosts):
            raise FetchError(403, "host_not_allowed", f"host {host[:80]!r} is not allow-listed")
        try:
            target = pin(url, policy)
        except DestinationError as exc:
            code = "fetch_failed" if exc.code == "unresolvable_host" else exc.code
            raise FetchError(exc.status, code, exc.message) from None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError(504, "fetch_timeout", "URL fetch took too long")
        try:
            answer = bounded_request("GET", target, deadline=remaining, max_bytes=max_bytes,
                                     headers={"User-Agent": "hashwatch-fetch/1"})
        except DestinationError as exc:  # over max_bytes
            raise FetchError(exc.status, exc.code, f"remote file over {max_bytes} bytes") \
                from None
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise FetchError(504, "fetch_timeout", "URL fetch took too long") from exc
        except httpx.HTTPError as exc:
            raise FetchError(422, "fetch_failed", f"fetch failed: {type(exc).__name__}") from exc
        if answer.status in (301, 302, 303, 307, 308):
            url = urljoin(url, answer.headers.get("location", ""))
            continue
        if answer.status != 200:
            raise FetchError(422, "fetch_failed", f"remote answered HTTP {answer.status}")
        return answer.body
    raise FetchError(422, "fetch_failed", "too many redirects")
