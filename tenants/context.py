"""The tenant context: which tenant the current code runs for.

A contextvar, so it follows the request through threads, asyncio, Celery tasks and
management commands alike. Only `TenantContextMiddleware` and `tenant_context()` set
it (STYLE.md habit 4); everything else reads it with `current_tenant()`.
"""
from __future__ import annotations

import contextvars
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection


class NoTenantContext(RuntimeError):
    """Tenant data was reached with no tenant context set. Always a bug."""


@dataclass(frozen=True)
class TenantContext:
    id: int
    slug: str
    name: str
    schema_name: str
    plan: str
    status: str
    region: str
    isolation: str  # "schema" | "database"
    db_alias: str | None = None  # set for isolation == "database"
    features: frozenset = field(default_factory=frozenset)  # the plan's, plus `granted`
    limits: dict = field(default_factory=dict)
    granted: frozenset = field(default_factory=frozenset)  # held beyond the plan (bought modules)


_current: contextvars.ContextVar[TenantContext | None] = contextvars.ContextVar("levqor_tenant", default=None)


def current_tenant() -> TenantContext:
    ctx = _current.get()
    if ctx is None:
        raise NoTenantContext("this code needs a tenant context and none is set")
    return ctx


def current_tenant_or_none() -> TenantContext | None:
    return _current.get()


# Features a tenant holds beyond its plan's, such as a marketplace module it bought.
# Apps above tenants/ register a function tenant_id -> iterable of feature names; the
# context (and so the policy engine) sees the union. A source must read shared tables
# only (no tenant context is set while a context is being built).
_feature_sources: list = []


def register_feature_source(source) -> None:
    if source not in _feature_sources:
        _feature_sources.append(source)


def granted_features(tenant_id: int) -> frozenset:
    return frozenset(feature for source in _feature_sources for feature in source(tenant_id))


def build_context(tenant) -> TenantContext:
    from policy.plans import plan_features, plan_limits
    from tenants import broker

    db_alias = broker.alias_for(tenant) if tenant.isolation == "database" else None
    granted = granted_features(tenant.id)
    return TenantContext(
        id=tenant.id,
        slug=tenant.slug,
        name=tenant.name,
        schema_name=tenant.schema_name,
        plan=tenant.plan,
        status=tenant.status,
        region=tenant.region,
        isolation=tenant.isolation,
        db_alias=db_alias,
        features=frozenset(plan_features(tenant.plan)) | granted,
        limits=plan_limits(tenant.plan),
        granted=granted,
    )


def _point_connection(ctx: TenantContext | None) -> None:
    # Strategy A routes by search_path on the default connection; strategy B leaves the
    # default connection on public, so a tenant model that slips past the router finds
    # no table rather than another tenant's rows.
    target = ctx.schema_name if ctx is not None and ctx.isolation == "schema" else settings.PUBLIC_SCHEMA_NAME
    if connection.schema_name != target:
        if target == settings.PUBLIC_SCHEMA_NAME:
            connection.set_schema_to_public()
        else:
            connection.set_schema(target)


@contextmanager
def tenant_context(tenant):
    """Run the block as `tenant` (a Tenant or a TenantContext)."""
    ctx = tenant if isinstance(tenant, TenantContext) else build_context(tenant)
    previous = _current.get()
    token = _current.set(ctx)
    _point_connection(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)
        _point_connection(previous)


@contextmanager
def no_tenant_context():
    """Run platform code with the context explicitly cleared."""
    previous = _current.get()
    token = _current.set(None)
    _point_connection(None)
    try:
        yield
    finally:
        _current.reset(token)
        _point_connection(previous)


def tenant_db() -> str:
    """The database alias holding the current tenant's data (for transaction.atomic(using=...))."""
    ctx = current_tenant()
    return ctx.db_alias or "default"
