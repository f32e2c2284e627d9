"""Tenant lifecycle and keys: every write, one function per use case.

Each service takes the actor and records its audit event in its own transaction.
"""
from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from compliance import audit
from levqor.errors import APIError
from policy.plans import is_plan, plan_has, plan_names
from tenants import hotcache
from tenants import keys as keyring
from tenants import provisioning
from tenants.models import ROLES, PlatformKey, Tenant, TenantKey
from tenants.slugs import slug_problem

logger = logging.getLogger(__name__)


def _invalid(field: str, message: str) -> APIError:
    return APIError("invalid_input", message, status_code=400, details={"fields": {field: [message]}})


def tenant_create(*, name, slug, plan, region=None, admin_email="", actor: str) -> provisioning.Provisioning:
    """Provision a tenant (the seven steps). Nothing is left behind when it fails."""
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise _invalid("name", "name is required (at most 200 characters)")
    problem = slug_problem(slug)
    if problem:
        raise _invalid("slug", problem)
    if not isinstance(plan, str) or not is_plan(plan):
        raise _invalid("plan", f"plan must be one of {', '.join(plan_names())}")
    region = region or settings.LEVQOR_DEFAULT_REGION
    if not isinstance(region, str) or region not in settings.LEVQOR_REGIONS:
        raise _invalid("region", f"region must be one of {', '.join(settings.LEVQOR_REGIONS)}")
    if admin_email and (not isinstance(admin_email, str) or "@" not in admin_email or len(admin_email) > 254):
        raise _invalid("admin_email", "admin_email must be an email address")
    if Tenant.objects.filter(slug=slug).exists():
        raise APIError("slug_taken", f"slug {slug!r} is taken", status_code=409)
    isolation = Tenant.Isolation.DATABASE if plan_has(plan, "db_per_tenant") else Tenant.Isolation.SCHEMA
    request = provisioning.ProvisionRequest(
        name=name.strip(), slug=slug, plan=plan, region=region, admin_email=admin_email or "", actor=actor,
        isolation=isolation,
    )
    try:
        return provisioning.run(request)
    except provisioning.SlugTaken:
        raise APIError("slug_taken", f"slug {slug!r} is taken", status_code=409) from None
    except provisioning.StorageTaken as exc:
        # An orphan schema or database from an earlier failure holds the name: it is never
        # adopted (it may hold someone's rows) and is left for staff to inspect.
        logger.error("provisioning %s refused: %s already exists and is not ours", slug, exc)
        if isolation == Tenant.Isolation.SCHEMA:
            raise APIError("slug_taken", f"slug {slug!r} is taken", status_code=409) from None
        raise APIError("storage_conflict", "the tenant database could not be created; try again",
                       status_code=503) from None


# Called before a plan change is written, with (tenant, plan, actor): billing moves the
# tenant's Stripe subscription to the new plan's price there. A hook that raises stops the
# change, so the plan we serve and the plan we bill for never part.
_plan_change_hooks: list = []


def register_plan_change_hook(hook) -> None:
    if hook not in _plan_change_hooks:
        _plan_change_hooks.append(hook)


def tenant_change_plan(*, tenant: Tenant, plan, actor: str, from_billing: bool = False) -> Tenant:
    """Change the plan; its limits and features apply from the tenant's next request.

    The isolation strategy stays as provisioned: moving between schema and database is
    a migration job of its own (copy, verify, switch), not a side effect of a plan change.
    `from_billing` is set by the webhook that reports a change Stripe already made.
    """
    from policy.plans import plan_limits
    from tenants.models import TenantBilling, TenantRuntime

    if not isinstance(plan, str) or not is_plan(plan):
        raise _invalid("plan", f"plan must be one of {', '.join(plan_names())}")
    if plan == tenant.plan:
        return tenant
    previous = tenant.plan
    if not from_billing:
        for hook in _plan_change_hooks:
            hook(tenant=tenant, plan=plan, actor=actor)
    with transaction.atomic():
        tenant.plan = plan
        tenant.save(update_fields=["plan"])
        TenantBilling.dangerously_all_tenants.filter(tenant=tenant).update(plan=plan)
        TenantRuntime.dangerously_all_tenants.filter(tenant=tenant).update(limits_json=plan_limits(plan))
        hotcache.bump()
        audit.record("plan.changed", tenant_id=tenant.id, actor=actor, metadata={"from": previous, "to": plan})
    return tenant


def _set_status(tenant: Tenant, status: str, **extra) -> None:
    tenant.status = status
    tenant.status_changed_at = timezone.now()
    for key, value in extra.items():
        setattr(tenant, key, value)
    tenant.save(update_fields=["status", "status_changed_at", *extra])
    hotcache.bump()


def tenant_suspend(*, tenant: Tenant, actor: str, reason: str = "") -> Tenant:
    if tenant.status not in (Tenant.Status.ACTIVE, Tenant.Status.SUSPENDED):
        raise APIError("invalid_state", f"a {tenant.status} tenant cannot be suspended", status_code=409)
    with transaction.atomic():
        if tenant.status != Tenant.Status.SUSPENDED:
            _set_status(tenant, Tenant.Status.SUSPENDED)
            audit.record("tenant.suspended", tenant_id=tenant.id, actor=actor, metadata={"reason": reason})
    return tenant


def tenant_resume(*, tenant: Tenant, actor: str) -> Tenant:
    if tenant.status not in (Tenant.Status.ACTIVE, Tenant.Status.SUSPENDED):
        raise APIError("invalid_state", f"a {tenant.status} tenant cannot be resumed", status_code=409)
    with transaction.atomic():
        if tenant.status != Tenant.Status.ACTIVE:
            _set_status(tenant, Tenant.Status.ACTIVE)
            audit.record("tenant.resumed", tenant_id=tenant.id, actor=actor)
    return tenant


def tenant_delete(*, tenant: Tenant, actor: str) -> Tenant:
    """Soft delete: access stops now, data is kept for the grace period, then purged."""
    if tenant.status in (Tenant.Status.DELETING, Tenant.Status.DELETED):
        return tenant
    if tenant.status == Tenant.Status.PROVISIONING:
        raise APIError("invalid_state", "a provisioning tenant cannot be deleted", status_code=409)
    now = timezone.now()
    with transaction.atomic():
        TenantKey.dangerously_all_tenants.filter(tenant=tenant, revoked_at__isnull=True).update(revoked_at=now)
        _set_status(tenant, Tenant.Status.DELETING, purge_after=now + timedelta(days=settings.LEVQOR_DELETE_GRACE_DAYS))
        audit.record("tenant.deleted", tenant_id=tenant.id, actor=actor,
                     metadata={"phase": "soft", "purge_after": tenant.purge_after.isoformat()})
    return tenant


def tenant_purge(*, tenant: Tenant, actor: str = "system") -> Tenant:
    """Drop the tenant's schema or database for good; the row stays as a tombstone."""
    from tenants import blueprint, broker
    from tenants.models import TenantDatabase

    if tenant.status != Tenant.Status.DELETING:
        raise APIError("invalid_state", "only a deleting tenant can be purged", status_code=409)
    if tenant.isolation == Tenant.Isolation.SCHEMA:
        blueprint.drop_tenant_schema(tenant.schema_name)
    else:
        broker.forget(broker.alias_name(tenant.id))
        blueprint.drop_tenant_database(tenant.region, broker.tenant_database_name(tenant.id))
    with transaction.atomic():
        TenantDatabase.dangerously_all_tenants.filter(tenant=tenant).delete()
        tenant.domains.all().delete()
        _set_status(tenant, Tenant.Status.DELETED)
        audit.record("tenant.deleted", tenant_id=tenant.id, actor=actor, metadata={"phase": "purged"})
    return tenant


# --- keys -------------------------------------------------------------------------------


def key_create_for_tenant(*, tenant: Tenant, role: str, name: str, actor: str) -> tuple[TenantKey, str]:
    """Create a key; returns (row, plaintext). The plaintext is never stored."""
    if role not in ROLES:
        raise _invalid("role", f"role must be one of {', '.join(ROLES)}")
    if not isinstance(name, str) or len(name) > 100:
        raise _invalid("name", "name must be a string of at most 100 characters")
    new = keyring.generate()
    with transaction.atomic():
        key = TenantKey(tenant=tenant, prefix=new.prefix, api_key_hash=new.hash, role=role, name=name, created_by=actor)
        key.save(force_insert=True)
        audit.record("key.created", tenant_id=tenant.id, actor=actor,
                     metadata={"prefix": key.prefix, "role": role, "name": name})
    return key, new.plaintext


def key_revoke(*, key: TenantKey, actor: str) -> TenantKey:
    if key.revoked_at is None:
        with transaction.atomic():
            key.revoked_at = timezone.now()
            key.save(update_fields=["revoked_at"])
            hotcache.bump()
            audit.record("key.revoked", tenant_id=key.tenant_id, actor=actor, metadata={"prefix": key.prefix})
    return key


def keys_rotate(*, tenant: Tenant, actor: str) -> tuple[TenantKey, str]:
    """Revoke every key of the tenant at once and issue a new owner key."""
    now = timezone.now()
    new = keyring.generate()
    with transaction.atomic():
        revoked = TenantKey.dangerously_all_tenants.filter(tenant=tenant, revoked_at__isnull=True).update(revoked_at=now)
        hotcache.bump()
        key = TenantKey(tenant=tenant, prefix=new.prefix, api_key_hash=new.hash, role="owner",
                        name="owner (rotated)", created_by=actor)
        key.save(force_insert=True)
        audit.record("keys.rotated", tenant_id=tenant.id, actor=actor,
                     metadata={"revoked": revoked, "new_prefix": key.prefix})
    return key, new.plaintext


def platform_key_create(*, name: str) -> tuple[PlatformKey, str]:
    if not name or len(name) > 100:
        raise _invalid("name", "name is required (at most 100 characters)")
    if PlatformKey.objects.filter(name=name).exists():
        raise APIError("name_taken", f"a platform key named {name!r} exists", status_code=409)
    new = keyring.generate(keyring.PLATFORM_KEY_KIND)
    key = PlatformKey.objects.create(name=name, prefix=new.prefix, api_key_hash=new.hash)
    return key, new.plaintext
