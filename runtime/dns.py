"""The DNS step of a failover: point a region's database name at its new primary.

Levqor itself needs no DNS to fail over (the connection broker follows the region map),
but anything else that reaches a region's server by name (operators' tools, replicas
being rebuilt, reporting jobs) does. The step goes through this small interface so a
deployment plugs in its provider (Route 53, Cloud DNS, ...) with LEVQOR_DNS_BACKEND,
the dotted path of a class with a `repoint` method. The default only logs.
"""
from __future__ import annotations

import logging
from typing import Protocol

from django.conf import settings
from django.utils.module_loading import import_string

logger = logging.getLogger(__name__)


class DNSBackend(Protocol):
    def repoint(self, *, region: str, host: str, port: str) -> None:
        """Make the region's database name resolve to `host` (serving on `port`)."""


class LogOnlyDNS:
    """For deployments whose clients all go through Levqor: records what a provider would do."""

    def repoint(self, *, region: str, host: str, port: str) -> None:
        logger.warning("DNS: region %s primary is now %s:%s (log-only backend, no record changed)", region, host, port)


def backend() -> DNSBackend:
    return import_string(settings.LEVQOR_DNS_BACKEND)()
