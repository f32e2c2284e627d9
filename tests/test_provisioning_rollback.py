"""Provisioning is all or nothing: a failure at any step leaves no schema, database, row,
key, domain or audit event behind; concurrent signups for one slug make one tenant."""
from __future__ import annotations

import threading

import pytest
from django.conf import settings as django_settings
from django.db import connection, connections

from compliance.models import AuditEvent
from levqor.faults import InjectedFault
from tenants import broker, provisioning, services
from tenants.models import Domain, Tenant, TenantBilling, TenantDatabase, TenantKey, TenantRuntime
from tests.conftest import unique_slug

STEP_NAMES = [step.name for step in provisioning.registered_steps()]


def test_the_seven_steps_are_registered_in_order():
    assert STEP_NAMES == ["tenant_row", "storage", "baseline", "admin_key", "billing", "domain", "audit"]


def _schema_exists(name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [name])
        return cursor.fetchone() is not None


def _tenant_databases() -> set[str]:
    with broker.maintenance_cursor(django_settings.DATABASES["default"]) as cursor:
        cursor.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                       [broker.tenant_database_name(0)[:-1] + "%"])
        return {row[0] for row in cursor.fetchall()}


def _traces(slug: str, tenant_id_floor: int) -> dict:
    return {
        "tenant": Tenant.objects.filter(slug=slug).exists(),
        "schema": _schema_exists(provisioning.schema_name_for(slug)),
        "keys": TenantKey.dangerously_all_tenants.filter(tenant_id__gt=tenant_id_floor).exists(),
        "domain": Domain.objects.filter(domain__startswith=f"{slug}.").exists(),
        "billing": TenantBilling.dangerously_all_tenants.filter(tenant_id__gt=tenant_id_floor).exists(),
        "runtime": TenantRuntime.dangerously_all_tenants.filter(tenant_id__gt=tenant_id_floor).exists(),
        "database_row": TenantDatabase.dangerously_all_tenants.filter(tenant_id__gt=tenant_id_floor).exists(),
        "audit": AuditEvent.dangerously_all_tenants.filter(tenant_id__gt=tenant_id_floor).exists(),
    }


def _max_tenant_id() -> int:
    return Tenant.objects.order_by("-id").values_list("id", flat=True).first() or 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("plan", ["core", "enterprise"])
@pytest.mark.parametrize("step", STEP_NAMES)
def test_failure_at_each_step_leaves_no_trace(settings, plan, step):
    settings.LEVQOR_FAULTS = frozenset({f"provision.after:{step}"})
    slug = unique_slug("rb")
    floor = _max_tenant_id()
    databases_before = _tenant_databases()
    with pytest.raises(InjectedFault):
        services.tenant_create(name="Rollback", slug=slug, plan=plan, admin_email="o@rb.test", actor="test")
    assert _traces(slug, floor) == {key: False for key in _traces(slug, floor)}
    # For enterprise the tenant database was created at step 2 and must be gone.
    assert _tenant_databases() == databases_before
    # The slug is free again: a retry without the fault succeeds.
    settings.LEVQOR_FAULTS = frozenset()
    result = services.tenant_create(name="Rollback", slug=slug, plan=plan, admin_email="o@rb.test", actor="test")
    assert result.tenant.status == "active"
    services.tenant_delete(tenant=result.tenant, actor="test")
    services.tenant_purge(tenant=result.tenant, actor="test")


@pytest.mark.django_db(transaction=True)
def test_concurrent_signups_with_one_slug_make_one_tenant(settings):
    from rest_framework.test import APIClient

    settings.LEVQOR_SIGNUP_RATE = "1000/hour"
    slug = unique_slug("race")
    floor = _max_tenant_id()
    barrier = threading.Barrier(4)
    statuses = []

    def signup():
        try:
            barrier.wait()
            response = APIClient().post("/api/tenants", {"name": "Race", "slug": slug, "plan": "core",
                                                         "admin_email": "o@race.test"}, format="json")
            statuses.append(response.status_code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=signup) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [201, 409, 409, 409]
    assert Tenant.objects.filter(slug=slug).count() == 1
    winner = Tenant.objects.get(slug=slug)
    # No debris of the losers: one tenant's worth of keys, domains and events.
    assert TenantKey.dangerously_all_tenants.filter(tenant_id__gt=floor).count() == 1
    assert Domain.objects.filter(tenant_id__gt=floor).count() == 1
    assert set(AuditEvent.dangerously_all_tenants.filter(tenant_id__gt=floor).values_list("tenant_id", flat=True)) == {winner.id}
    services.tenant_delete(tenant=winner, actor="test")
    services.tenant_purge(tenant=winner, actor="test")


CRASH = """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "levqor.settings")
import django
django.setup()
from tenants import services
services.tenant_create(name="Crash", slug=sys.argv[1], plan=sys.argv[2], admin_email="o@crash.test", actor="test")
"""


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("plan", ["core", "enterprise"])
def test_a_process_killed_mid_provisioning_is_rolled_back_by_the_reaper(plan):
    import os
    import subprocess
    import sys
    from pathlib import Path

    slug = unique_slug("crash")
    floor = _max_tenant_id()
    databases_before = _tenant_databases()
    db = django_settings.DATABASES["default"]
    env = {**os.environ, "DJANGO_DEBUG": "true", "REDIS_URL": django_settings.REDIS_URL,
           "LEVQOR_FAULTS": "crash:provision.after:baseline",
           "DATABASE_URL": f"postgres://{db.get('USER') or 'postgres'}@{db.get('HOST') or '127.0.0.1'}:"
                           f"{db.get('PORT') or 5432}/{db['NAME']}"}
    died = subprocess.run([sys.executable, "-c", CRASH, slug, plan], cwd=Path(__file__).resolve().parents[1], env=env,
                          timeout=120)
    assert died.returncode == 137  # killed after the schema/database and baseline were made
    tenant = Tenant.objects.get(slug=slug)
    assert tenant.status == "provisioning"
    assert provisioning.reap_stalled(older_than_seconds=3600) == []  # a recent one may still be running
    assert provisioning.reap_stalled(older_than_seconds=0) == [slug]
    assert _traces(slug, floor) == {key: False for key in _traces(slug, floor)}
    assert _tenant_databases() == databases_before


@pytest.mark.django_db(transaction=True)
def test_an_orphan_database_with_the_new_tenants_name_is_neither_adopted_nor_dropped(settings):
    """A leftover database (a crashed purge, a restored server) may hold someone's rows:
    a new tenant that would get its name is refused with a clear 503, and a retry works."""
    from rest_framework.test import APIClient

    settings.LEVQOR_SIGNUP_RATE = "1000/hour"
    with connection.cursor() as cursor:
        cursor.execute("SELECT nextval(pg_get_serial_sequence('tenants', 'id'))")
        next_id = cursor.fetchone()[0] + 1
    orphan = broker.tenant_database_name(next_id)
    server = broker.server_config(django_settings.LEVQOR_DEFAULT_REGION)
    broker.create_database_from_template(server, orphan)
    try:
        slug = unique_slug("orphan")
        floor = _max_tenant_id()
        body = {"name": "Orphan", "slug": slug, "plan": "enterprise", "admin_email": "o@orphan.test"}
        refused = APIClient().post("/api/tenants", body, format="json")
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "storage_conflict"
        assert broker.database_exists(server, orphan)  # not ours: kept for staff to inspect
        assert _traces(slug, floor) == {key: False for key in _traces(slug, floor)}
        retried = APIClient().post("/api/tenants", body, format="json")
        assert retried.status_code == 201
        tenant = Tenant.objects.get(slug=slug)
        assert tenant.id != next_id
        services.tenant_delete(tenant=tenant, actor="test")
        services.tenant_purge(tenant=tenant, actor="test")
    finally:
        broker.drop_database(server, orphan)
