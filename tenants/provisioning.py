"""Provisioning: a registry of steps, each with its compensation.

The spec's seven steps, in order: tenant row -> schema/database -> baseline tables and
packs -> admin API key -> Stripe customer and subscription -> domain -> audit event.
Each step commits its own work and is idempotent; when one fails, the compensations of
the steps that ran (the failing one included: it may have half-run) are applied in
reverse, so the outcome is a working tenant or no trace of one.

To add a step from another app, call `register_step()` from its AppConfig.ready() with
an `order` between the existing ones; `tenants/` never imports the apps above it.
Packs (seed data in the tenant's own tables) register with `register_pack()`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.dispatch import Signal
from django.utils import timezone

from levqor.faults import fault_point
from tenants import hotcache

logger = logging.getLogger(__name__)
# Sent with `provisioning` once every step has run (runtime/alerting.py alerts on slow ones).
# Sent robustly: an observer failing must not fail a signup that succeeded.
provisioning_finished = Signal()


@dataclass
class ProvisionRequest:
    name: str
    slug: str
    plan: str
    region: str
    admin_email: str = ""
    actor: str = "system"
    isolation: str = "schema"


@dataclass
class Provisioning:
    request: ProvisionRequest
    tenant: object | None = None
    api_key: str | None = None
    timings: dict = field(default_factory=dict)
    # What a step made outside our database (for example its Stripe ids), for its compensation.
    extras: dict = field(default_factory=dict)
    # True when the reaper undoes a dead process's provisioning (its `extras` died with it).
    reaping: bool = False
    started: float = field(default_factory=lambda: time.monotonic())


@dataclass(frozen=True)
class Step:
    name: str
    order: int
    run: Callable[[Provisioning], None]
    compensate: Callable[[Provisioning], None]


class SlugTaken(Exception):
    pass


class StorageTaken(Exception):
    """The tenant's schema or database name is already in use by something we did not make
    (an orphan of an earlier failure): provisioning never adopts it, and never drops it."""


_steps: dict[str, Step] = {}
_packs: dict[str, Callable[[], None]] = {}


def register_step(name: str, *, order: int, run, compensate=None) -> None:
    _steps[name] = Step(name=name, order=order, run=run, compensate=compensate or (lambda p: None))


def registered_steps() -> list[Step]:
    return sorted(_steps.values(), key=lambda s: s.order)


def register_pack(name: str, install: Callable[[], None]) -> None:
    """`install` runs inside the new tenant's context and writes its baseline rows."""
    _packs[name] = install


def run(request: ProvisionRequest) -> Provisioning:
    p = Provisioning(request=request)
    ran: list[Step] = []
    try:
        for step in registered_steps():
            ran.append(step)
            t0 = time.monotonic()
            step.run(p)
            fault_point(f"provision.after:{step.name}")
            p.timings[step.name] = round((time.monotonic() - t0) * 1000, 1)
    except BaseException:
        for step in reversed(ran):
            try:
                step.compensate(p)
            except Exception:  # keep undoing the rest; the leftover is logged for staff
                logger.exception("compensation of step %s failed for slug %s", step.name, request.slug)
        raise
    provisioning_finished.send_robust(sender=Provisioning, provisioning=p)
    return p


STALLED_AFTER_SECONDS = 600


def reap_stalled(*, older_than_seconds: int = STALLED_AFTER_SECONDS) -> list[str]:
    """Roll back provisionings whose process died midway (a killed worker or web node).

    A tenant still `provisioning` long after it started has no process finishing it: every
    step's compensation runs in reverse, as if it had failed, and nothing is left behind.
    """
    from datetime import timedelta

    from tenants.models import Tenant

    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    reaped = []
    for tenant in Tenant.objects.filter(status=Tenant.Status.PROVISIONING, status_changed_at__lt=cutoff):
        p = Provisioning(request=ProvisionRequest(name=tenant.name, slug=tenant.slug, plan=tenant.plan,
                                                  region=tenant.region, actor="system:reaper",
                                                  isolation=tenant.isolation), tenant=tenant, reaping=True)
        for step in reversed(registered_steps()):
            try:
                step.compensate(p)
            except Exception:
                logger.exception("reaping %s: compensation of %s failed", tenant.slug, step.name)
        logger.warning("rolled back stalled provisioning of %s", tenant.slug)
        reaped.append(tenant.slug)
    return reaped


# --- the tenancy steps ----------------------------------------------------------------


def _tenant_row(p: Provisioning) -> None:
    from tenants.models import Tenant

    r = p.request
    try:
        with transaction.atomic():
            p.tenant = Tenant.objects.create(
                name=r.name, slug=r.slug, plan=r.plan, region=r.region, admin_email=r.admin_email,
                isolation=r.isolation, schema_name=schema_name_for(r.slug), status=Tenant.Status.PROVISIONING,
                status_changed_at=timezone.now(),
            )
    except (IntegrityError, ValidationError) as exc:  # ValidationError: django-tenants' own schema-name check
        raise SlugTaken(r.slug) from exc


def _tenant_row_undo(p: Provisioning) -> None:
    from compliance import audit
    from tenants.models import Tenant

    if p.tenant is not None and p.tenant.pk:
        # The tenant never existed for anyone: the events its steps wrote (key.created,
        # tenant.created) go with it, through the audit trail's one purge path, so a
        # failed signup leaves no trace.
        audit.purge(tenant_id=p.tenant.pk, reason="provisioning rolled back", actor=p.request.actor, checkpoint=False)
        Tenant.objects.filter(pk=p.tenant.pk).delete()


def schema_name_for(slug: str) -> str:
    return "t_" + slug.replace("-", "_")


def _storage(p: Provisioning) -> None:
    from tenants import blueprint, broker, secrets
    from tenants.models import TenantDatabase

    tenant = p.tenant
    if tenant.isolation == "schema":
        if blueprint.schema_exists(tenant.schema_name):
            raise StorageTaken(tenant.schema_name)
        p.extras["storage_created"] = tenant.schema_name
        blueprint.create_tenant_schema(tenant.schema_name)
        return
    name = broker.tenant_database_name(tenant.id)
    if broker.database_exists(broker.server_config(tenant.region), name):
        raise StorageTaken(name)
    p.extras["storage_created"] = name
    dsn = blueprint.create_tenant_database(tenant.region, name)
    TenantDatabase.dangerously_all_tenants.update_or_create(
        tenant=tenant, defaults={"region": tenant.region, "name": name, "dsn_encrypted": secrets.encrypt(dsn)}
    )


def _storage_undo(p: Provisioning) -> None:
    """Drop the schema or database this provisioning made, and nothing else.

    The reaper (a dead process's provisioning, `extras` lost with it) drops the name the
    tenant's row implies: the row is still `provisioning`, so nobody else can own it.
    """
    from tenants import blueprint, broker
    from tenants.models import TenantDatabase

    tenant = p.tenant
    if tenant is None or not tenant.pk:
        return
    if not p.reaping and "storage_created" not in p.extras:
        return
    if tenant.isolation == "schema":
        blueprint.drop_tenant_schema(tenant.schema_name)
        return
    broker.forget(broker.alias_name(tenant.id))
    blueprint.drop_tenant_database(tenant.region, broker.tenant_database_name(tenant.id))
    TenantDatabase.dangerously_all_tenants.filter(tenant_id=tenant.pk).delete()


def _baseline(p: Provisioning) -> None:
    from policy.plans import plan_limits
    from tenants.context import tenant_context
    from tenants.models import TenantRuntime

    tenant = p.tenant
    TenantRuntime.dangerously_all_tenants.update_or_create(
        tenant=tenant,
        defaults={"env_json": {"region": tenant.region}, "limits_json": plan_limits(tenant.plan),
                  "domain": f"{tenant.slug}.{settings.LEVQOR_BASE_DOMAIN}"},
    )
    with tenant_context(tenant):
        for name, install in _packs.items():
            install()


def _baseline_undo(p: Provisioning) -> None:
    from tenants.models import TenantRuntime

    if p.tenant is not None and p.tenant.pk:
        TenantRuntime.dangerously_all_tenants.filter(tenant_id=p.tenant.pk).delete()


def _admin_key(p: Provisioning) -> None:
    from tenants.services import key_create_for_tenant

    _, p.api_key = key_create_for_tenant(tenant=p.tenant, role="owner", name="admin (signup)", actor=p.request.actor)


def _admin_key_undo(p: Provisioning) -> None:
    from tenants.models import TenantKey

    if p.tenant is not None and p.tenant.pk:
        TenantKey.dangerously_all_tenants.filter(tenant_id=p.tenant.pk).delete()


def _domain(p: Provisioning) -> None:
    from tenants.models import Domain

    Domain.objects.get_or_create(
        domain=f"{p.tenant.slug}.{settings.LEVQOR_BASE_DOMAIN}", defaults={"tenant": p.tenant, "is_primary": True}
    )


def _domain_undo(p: Provisioning) -> None:
    from tenants.models import Domain

    if p.tenant is not None and p.tenant.pk:
        Domain.objects.filter(tenant_id=p.tenant.pk).delete()


def _activate(p: Provisioning) -> None:
    from compliance import audit
    from tenants.models import Tenant

    tenant = p.tenant
    provision_ms = int((time.monotonic() - p.started) * 1000)
    with transaction.atomic():
        Tenant.objects.filter(pk=tenant.pk).update(
            status=Tenant.Status.ACTIVE, provision_ms=provision_ms, provision_steps=p.timings,
            status_changed_at=timezone.now(),
        )
        hotcache.bump()  # processes may hold it as `provisioning`
        audit.record("tenant.created", tenant_id=tenant.pk, actor=p.request.actor,
                     metadata={"plan": tenant.plan, "region": tenant.region, "isolation": tenant.isolation,
                               "provision_ms": provision_ms})
    tenant.status = Tenant.Status.ACTIVE
    tenant.provision_ms = provision_ms
    tenant.provision_steps = p.timings


register_step("tenant_row", order=10, run=_tenant_row, compensate=_tenant_row_undo)
register_step("storage", order=20, run=_storage, compensate=_storage_undo)
register_step("baseline", order=30, run=_baseline, compensate=_baseline_undo)
register_step("admin_key", order=40, run=_admin_key, compensate=_admin_key_undo)
# order 50: billing registers the Stripe customer + subscription step.
register_step("domain", order=60, run=_domain, compensate=_domain_undo)
register_step("audit", order=70, run=_activate)
