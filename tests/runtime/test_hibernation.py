"""Cold tenants: idle ones are hibernated by the daily task and woken by their next request,
within a second."""
from __future__ import annotations

import logging
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from runtime import hibernation, metrics
from runtime.metrics_tasks import hibernate_idle
from tenants import hotcache
from tenants.models import Tenant
from tests.conftest import client_for


def _age(tenant, *, seen_days_ago=None, created_days_ago=0):
    now = timezone.now()
    Tenant.objects.filter(pk=tenant.pk).update(
        created_at=now - timedelta(days=created_days_ago),
        last_seen_at=None if seen_days_ago is None else now - timedelta(days=seen_days_ago))


def test_only_tenants_idle_past_the_limit_are_hibernated(make_tenant, settings):
    settings.LEVQOR_HIBERNATE_AFTER_DAYS = 14
    idle, _ = make_tenant()
    recent, _ = make_tenant()
    never_seen_old, _ = make_tenant()
    never_seen_new, _ = make_tenant()
    suspended, _ = make_tenant()
    _age(idle, seen_days_ago=15, created_days_ago=100)
    _age(recent, seen_days_ago=13, created_days_ago=100)
    _age(never_seen_old, created_days_ago=20)
    _age(never_seen_new, created_days_ago=2)
    _age(suspended, seen_days_ago=30, created_days_ago=100)
    Tenant.objects.filter(pk=suspended.pk).update(status=Tenant.Status.SUSPENDED)

    from runtime import capacity

    capacity.scale_pool(idle.id, 2)  # it once grew; hibernating gives the slots back
    assert capacity.pool_status(idle.id)["size"] == 2
    assert sorted(hibernate_idle.apply().get()) == sorted([idle.slug, never_seen_old.slug])
    assert capacity.pool_status(idle.id)["size"] == 1
    hibernated = set(Tenant.objects.filter(hibernated_at__isnull=False).values_list("slug", flat=True))
    assert hibernated == {idle.slug, never_seen_old.slug}
    assert hibernation.hibernate_idle() == []  # already hibernated: nothing to do


@pytest.mark.parametrize("plan", ["core", "enterprise"])  # enterprise: its database alias is re-registered
def test_the_next_request_wakes_it_within_a_second(make_tenant, caplog, plan):
    tenant, key = make_tenant(plan=plan)
    _age(tenant, seen_days_ago=30, created_days_ago=60)
    client = client_for(key, tenant)
    assert client.get("/api/org").status_code == 200  # this process now caches the tenant
    _age(tenant, seen_days_ago=30, created_days_ago=60)  # that request was "seen": make it idle again
    assert hibernation.hibernate_idle() == [tenant.slug]
    assert hotcache.cache.tenants == {}  # the caches were dropped

    events_before = _audit_events(tenant)
    with caplog.at_level(logging.INFO, logger="runtime.hibernation"):
        started = time.perf_counter()
        response = client.get("/api/workflows")
        wake_seconds = time.perf_counter() - started
    assert response.status_code == 200
    assert wake_seconds < 1.0, f"woke in {wake_seconds:.3f} s"
    woken = Tenant.objects.get(pk=tenant.pk)
    assert woken.hibernated_at is None and timezone.now() - woken.last_seen_at < timedelta(seconds=30)
    assert any("woke from hibernation" in r.getMessage() for r in caplog.records)
    assert _audit_events(tenant) == events_before  # logged, not audited


def _audit_events(tenant) -> int:
    from compliance.models import AuditEvent

    return AuditEvent.dangerously_all_tenants.filter(tenant_id=tenant.id).count()


def test_a_request_the_middleware_does_not_see_wakes_it_through_the_metrics_flush(make_tenant):
    tenant, _ = make_tenant()
    Tenant.objects.filter(pk=tenant.pk).update(hibernated_at=timezone.now(),
                                               last_seen_at=timezone.now() - timedelta(days=30))
    metrics.recorder.drain()
    metrics.recorder.last_seen_sent.pop(tenant.id, None)
    metrics.recorder.record(tenant.id, 200, 4.0, api=False)  # a portal page, say
    metrics.flush()
    assert Tenant.objects.get(pk=tenant.pk).hibernated_at is None
