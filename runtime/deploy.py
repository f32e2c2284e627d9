"""Redeploy: re-apply a tenant's runtime configuration everywhere it runs.

The tenant's limits are recomputed from its plan, its domain and region written to its
runtime record, every process drops its cached copy of the tenant (the hot cache's
generation), a database tenant's connections are re-opened from its current DSN, and
`last_deploy_at` is recorded, with a `config.changed` audit event.
"""
from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from compliance import audit
from levqor.errors import APIError


def tenant_redeploy(*, tenant, actor: str):
    from policy.plans import plan_limits
    from runtime.capacity import dedicated_queue
    from tenants import broker, hotcache
    from tenants.models import Domain, TenantRuntime

    if tenant.status != tenant.Status.ACTIVE:
        raise APIError("invalid_state", f"a {tenant.status} tenant cannot be redeployed", status_code=409)
    domain = Domain.objects.filter(tenant=tenant, is_primary=True).values_list("domain", flat=True).first() or ""
    with transaction.atomic():
        runtime, _ = TenantRuntime.dangerously_all_tenants.select_for_update().get_or_create(tenant=tenant)
        before = {"limits": runtime.limits_json, "domain": runtime.domain, "queue": (runtime.env_json or {}).get("queue")}
        runtime.limits_json = plan_limits(tenant.plan)
        runtime.domain = domain
        # Its dedicated Celery queue, when its plan and the platform have them (runtime/capacity.py).
        queue = dedicated_queue(tenant.id, tenant.plan)
        env = {k: v for k, v in (runtime.env_json or {}).items() if k != "queue"}
        runtime.env_json = {**env, "region": tenant.region, "isolation": tenant.isolation, **({"queue": queue} if queue else {})}
        runtime.last_deploy_at = timezone.now()
        runtime.save()
        hotcache.bump()
        after = {"limits": runtime.limits_json, "domain": runtime.domain, "queue": queue}
        changed = sorted(k for k in before if before[k] != after[k])
        audit.record("config.changed", tenant_id=tenant.id, actor=actor,
                     metadata={"what": "redeploy", "changed": changed, "deployed_at": runtime.last_deploy_at})
    if tenant.isolation == "database":
        broker.forget(broker.alias_name(tenant.id))
    return runtime


def recent_deploys(tenant_id: int, limit: int = 5) -> list:
    from compliance.models import AuditEvent

    return list(AuditEvent.dangerously_all_tenants.filter(tenant_id=tenant_id, event="config.changed",
                                                          metadata_json__what="redeploy").order_by("-ts")[:limit])
