"""Cold tenants: hibernated after LEVQOR_HIBERNATE_AFTER_DAYS without a request, woken by
their next one.

Idle means no request served for the tenant (API or portal) since `last_seen_at`, which the
batched metrics flush keeps (runtime/metrics.py), or since creation for a tenant never seen.

Hibernating a tenant drops what is held in memory for it: every process's cached tenants
and keys (through the tenancy generation; they refill on demand) and, in the process
running the task, the registered connection of its database (strategy B). Its rate-limit
bucket and load-shedding entry expire within a minute of its last request by themselves,
so after days of idleness there are none. A dedicated worker pool would be released here
too, but none exists: the plans' `dedicated_workers` feature has no implementation yet,
so there is nothing to stop. Its data stays where it is.

Waking: the tenant middleware's cached tenant carries `hibernated_at`, so noticing costs
nothing; the first API request clears it (one UPDATE, a log line, no audit event) and is
served as usual, the caches filling again as on any cold start. Other requests for the
tenant (portal pages) wake it through the metrics flush, within LEVQOR_METRICS_FLUSH_SECONDS.
"""
from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from tenants import broker, hotcache
from tenants.models import Tenant

logger = logging.getLogger(__name__)


def idle_tenants(*, now: datetime | None = None):
    """Active tenants not seen for LEVQOR_HIBERNATE_AFTER_DAYS and not hibernated yet."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.LEVQOR_HIBERNATE_AFTER_DAYS)
    return Tenant.objects.filter(status=Tenant.Status.ACTIVE, hibernated_at__isnull=True).filter(
        Q(last_seen_at__lt=cutoff) | Q(last_seen_at__isnull=True, created_at__lt=cutoff))


def hibernate_idle(*, now: datetime | None = None) -> list[str]:
    """The daily task: hibernate every idle tenant. Returns their slugs."""
    now = now or timezone.now()
    hibernated = []
    for tenant in idle_tenants(now=now):
        # Re-checked in the UPDATE itself: a request may have been seen since the query.
        if idle_tenants(now=now).filter(pk=tenant.pk).update(hibernated_at=now):
            _drop_caches(tenant)
            logger.info("tenant %s hibernated (last seen %s)", tenant.slug, tenant.last_seen_at or "never")
            hibernated.append(tenant.slug)
    if hibernated:
        hotcache.bump()  # every process forgets its cached tenants and keys
    return hibernated


def _drop_caches(tenant: Tenant) -> None:
    """What is kept per tenant beyond the hot cache: the registered (decrypted) connection
    settings of its database, and its worker pool, which shrinks back to one slot (an idle
    tenant runs nothing; the pool grows again with its next tasks)."""
    from runtime import capacity

    if tenant.isolation == Tenant.Isolation.DATABASE:
        broker.forget(broker.alias_name(tenant.id))
    capacity.shrink_pool(tenant.id)


def wake(tenant: Tenant) -> float | None:
    """Clear a hibernated tenant on its first request. Returns the seconds that took, or
    None when another request (or process) woke it first."""
    started = time.perf_counter()
    woken = Tenant.objects.filter(pk=tenant.pk, hibernated_at__isnull=False).update(
        hibernated_at=None, last_seen_at=timezone.now())
    tenant.hibernated_at = None  # the cached object too, so this process does not try again
    if not woken:
        return None
    hotcache.bump()
    elapsed = time.perf_counter() - started
    logger.info("tenant %s woke from hibernation in %.1f ms", tenant.slug, elapsed * 1000)
    return elapsed


def wake_seen(cursor, tenant_ids: list[int]) -> list[str]:
    """Called by the metrics flush with the tenants it saw: wake those hibernated."""
    cursor.execute("UPDATE public.tenants SET hibernated_at = NULL WHERE id = ANY(%s) AND hibernated_at IS NOT NULL "
                   "RETURNING slug", [tenant_ids])
    woken = [slug for (slug,) in cursor.fetchall()]
    if woken:
        logger.info("tenants %s woke from hibernation (seen by the metrics flush)", ", ".join(woken))
        transaction.on_commit(hotcache.bump)
    return woken
