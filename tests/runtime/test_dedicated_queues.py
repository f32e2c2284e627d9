"""Dedicated worker pools: with LEVQOR_DEDICATED_QUEUES on, a tenant on a plan with
`dedicated_workers` (enterprise) has its tasks sent to its own Celery queue, which its own
workers serve; others share the default queue. Messages are read from the test's Redis."""
from __future__ import annotations

import pytest

from runtime import queues
from runtime.deploy import tenant_redeploy
from tenants.models import TenantRuntime
from tests.conftest import client_for


@pytest.fixture
def redis_broker(settings):
    from levqor.redis import client

    settings.LEVQOR_DEDICATED_QUEUES = True
    r = client()
    for key in [*r.scan_iter("tenant-*"), "celery", *r.scan_iter("levqor:cap:*")]:
        r.delete(key)
    queues.forget()
    yield r
    for key in [*r.scan_iter("tenant-*"), "celery", *r.scan_iter("levqor:cap:*")]:
        r.delete(key)
    queues.forget()


def _tenants_in(r, queue: str) -> list[int]:
    return [queues.tenant_of(raw) for raw in r.lrange(queue, 0, -1)]


def test_an_enterprise_tenants_tasks_go_to_its_own_queue_and_others_share(make_tenant, redis_broker, settings):
    from workflows.tasks import run_workflow

    enterprise, ent_key = make_tenant(plan="enterprise")
    core, core_key = make_tenant(plan="core")
    workflows = {}
    for tenant, key in ((enterprise, ent_key), (core, core_key)):
        workflows[tenant.id] = client_for(key, tenant).post("/api/workflows", {"name": "w"}, format="json").json()["id"]
        run_workflow.apply_for(tenant.id, args=[workflows[tenant.id]])
    own = f"tenant-{enterprise.id}"
    assert _tenants_in(redis_broker, own) == [enterprise.id]
    assert _tenants_in(redis_broker, "celery") == [core.id]
    # Its queue is counted: the fleet's queue lengths and the tenant's own depth.
    assert queues.queue_lengths()[own] == 1
    assert queues.tenant_queue_depth(enterprise.id) == (1, True)

    # Redeploy records it in the tenant's runtime config; switched off, it is gone again.
    tenant_redeploy(tenant=enterprise, actor="test")
    assert TenantRuntime.dangerously_all_tenants.get(tenant=enterprise).env_json["queue"] == own
    settings.LEVQOR_DEDICATED_QUEUES = False
    tenant_redeploy(tenant=enterprise, actor="test")
    assert "queue" not in TenantRuntime.dangerously_all_tenants.get(tenant=enterprise).env_json
    run_workflow.apply_for(enterprise.id, args=[workflows[enterprise.id]])
    assert len(_tenants_in(redis_broker, "celery")) == 2  # back on the shared queue
