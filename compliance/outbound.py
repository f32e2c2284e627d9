"""Outbound HTTP that a tenant can aim: SIEM streams (and later webhooks).

A tenant must not be able to point Levqor at the internal network. A destination is
accepted only when it is HTTPS (plain HTTP only for hosts on LEVQOR_OUTBOUND_ALLOW_HOSTS)
and none of its addresses is private, loopback, link-local, multicast or reserved
(unless the host is on that allow-list). Addresses are checked when the stream is saved
and again, freshly resolved, on every delivery (DNS can change), and the request goes
to the checked address, so a rebinding resolver cannot slip one past.
"""
from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

import requests
from django.conf import settings

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
        internal = (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved
                    or ip.is_unspecified)
        if internal and not allowed:
            raise DestinationRefused(f"{host} resolves to an internal address ({ip}); refused")
    return host, port, addresses[0]


def post(url: str, *, body: bytes, headers: dict, timeout: float) -> requests.Response:
    """POST after vetting the destination again, to the vetted address."""
    host, port, address = check_destination(url)
    parts = urlsplit(url)
    if parts.scheme == "http":
        # Pin the connection to the vetted address; the Host header keeps virtual hosting.
        ip = ipaddress.ip_address(address)
        netloc = f"[{address}]:{port}" if ip.version == 6 else f"{address}:{port}"
        target = parts._replace(netloc=netloc).geturl()
        headers = {**headers, "Host": parts.netloc}
    else:
        target = url  # TLS verifies the name; the vetted resolution above stands
    return requests.post(target, data=body, headers=headers, timeout=timeout, allow_redirects=False)
