"""Outbound HTTP that a tenant can aim: SIEM streams (and later webhooks).

A tenant must not be able to point Levqor at the internal network. A destination is
accepted only when it is HTTPS (plain HTTP only for hosts on LEVQOR_OUTBOUND_ALLOW_HOSTS)
and none of its addresses is private, loopback, link-local, multicast or reserved
(unless the host is on that allow-list). Addresses are checked when the stream is saved
and again, freshly resolved, on every delivery (DNS can change), and the request goes
to the checked address (over https too, with TLS checked against the host name), so a
rebinding resolver cannot slip one past.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
import time
from urllib.parse import urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter

from levqor.errors import APIError


class DestinationRefused(APIError):
    def __init__(self, message: str):
        super().__init__("destination_refused", message, status_code=400)


def _allowed_hosts() -> set[str]:
    return {h.lower() for h in getattr(settings, "LEVQOR_OUTBOUND_ALLOW_HOSTS", ())}


def check_destination(url: str) -> tuple[str, int, str]:
    """(host, port, a vetted IP address) for `url`, or DestinationRefused."""
    if not isinstance(url, str) or len(url) > 2000:
        raise DestinationRefused("url must be a string of at most 2000 characters")
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not host:
        raise DestinationRefused("url must be an absolute https:// URL")
    if parts.username or parts.password:
        raise DestinationRefused("credentials in the URL are not accepted; use the stream's token")
    allowed = host in _allowed_hosts()
    if parts.scheme == "http" and not allowed:
        raise DestinationRefused("plain http is refused; use https")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise DestinationRefused("url has an invalid port") from None
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except socket.gaierror:
        raise DestinationRefused(f"{host} does not resolve") from None
    addresses = [info[4][0] for info in infos]
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if is_internal(ip) and not allowed:
            raise DestinationRefused(f"{host} resolves to an internal address ({ip}); refused")
    return host, port, addresses[0]


# IPv6 prefixes that carry an IPv4 address a gateway may translate to: NAT64 (RFC 6052,
# 8215). IPv4-mapped and 6to4 addresses have their own accessors on IPv6Address.
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def is_internal(ip) -> bool:
    """Anything but a globally routable unicast address. `is_global` (not `is_private`)
    also refuses shared address space 100.64.0.0/10, where Alibaba Cloud's metadata service
    (100.100.100.200) lives; an IPv4 address embedded in IPv6 is judged as itself."""
    if ip.version == 6:
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and any(ip in net for net in _NAT64):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return is_internal(embedded)
    return not ip.is_global or ip.is_multicast


class _PinnedHTTPS(HTTPAdapter):
    """Connects to the vetted address while TLS (SNI and the certificate check) speaks for
    the URL's host name, so a rebinding resolver cannot move the connection elsewhere
    between the check and the connect."""

    def __init__(self, hostname: str):
        self._hostname = hostname
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args, **kwargs):
        kwargs["server_hostname"] = self._hostname
        kwargs["assert_hostname"] = self._hostname
        super().init_poolmanager(*args, **kwargs)


def post(url: str, *, body: bytes, headers: dict, timeout: float) -> requests.Response:
    """POST after vetting the destination again, to the vetted address (http and https)."""
    host, port, address = check_destination(url)
    parts = urlsplit(url)
    # Pin the connection to the vetted address; the Host header keeps virtual hosting.
    ip = ipaddress.ip_address(address.split("%")[0])
    netloc = f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
    target = parts._replace(netloc=netloc).geturl()
    headers = {**headers, "Host": parts.netloc.rsplit("@", 1)[-1]}
    with requests.Session() as session:
        if parts.scheme == "https":
            session.mount("https://", _PinnedHTTPS(host))
        return session.post(target, data=body, headers=headers, timeout=timeout, allow_redirects=False)


def signed_json_headers(secret: str, body: bytes) -> dict[str, str]:
    """Levqor's webhook signature (SIEM webhook streams, the staff alert webhook): HMAC-SHA256
    over `<timestamp>.<body>`, sent with the timestamp so receivers can refuse replays."""
    timestamp = str(int(time.time()))
    signature = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Levqor-Timestamp": timestamp,
            "X-Levqor-Signature": f"sha256={signature}"}


# --- circuit breakers ------------------------------------------------------------------------
# The breakers live in runtime/breakers.py, above this app; they hook in here (runtime's
# AppConfig.ready calls register_guard) so that compliance can guard its outbound calls
# without importing the runtime. With nothing registered, `guard` guards nothing.


class CircuitOpen(APIError):
    """A dependency's circuit breaker is open: the call was not made."""

    def __init__(self, name: str, message: str, retry_after: float | None = None):
        details = {"dependency": name}
        headers = {}
        if retry_after is not None:
            details["retry_after"] = round(retry_after, 1)
            headers["Retry-After"] = str(max(1, int(retry_after + 0.999)))
        super().__init__("dependency_unavailable", message, status_code=503, details=details, headers=headers)
        self.name = name
        self.retry_after = retry_after


_guard_factory = None


def register_guard(factory) -> None:
    """`factory(name)` returns the context manager that guards one call to `name`."""
    global _guard_factory
    _guard_factory = factory


def guard(name: str, **options):
    from contextlib import nullcontext

    return _guard_factory(name, **options) if _guard_factory is not None else nullcontext(_NoBreaker())


class _NoBreaker:
    def failed(self, reason: str = "") -> None:
        pass
