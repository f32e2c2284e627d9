"""DRF permission for tenant APIs: the caller's role on this tenant, checked by the engine.

A view names its actions: `policy_actions = {"list": "workflows:read", ...}` keyed by
viewset action or HTTP method.
"""
from __future__ import annotations

from django.db import DatabaseError, connection
from rest_framework import exceptions, permissions

from levqor.errors import APIError
from policy import quotas
from tenants import hotcache
from policy.engine import metric_for
from policy.enforce import authorize
from tenants.context import current_tenant_or_none
from tenants.principals import principal_for


def view_action(request, view) -> str:
    actions = getattr(view, "policy_actions", {})
    action = actions.get(getattr(view, "action", None) or "") or actions.get(request.method)
    if action is None:
        # Default deny also for code: a view that forgot to name its action is refused.
        raise APIError("policy_denied", "this endpoint has no policy action", status_code=403)
    return action


class TenantPolicyPermission(permissions.BasePermission):
    def has_permission(self, request, view):
        ctx = current_tenant_or_none()
        if ctx is None:
            raise APIError("tenant_required", "This route needs a tenant context.", status_code=400)
        principal = principal_for(request, ctx.id)
        if principal is None:
            raise exceptions.NotAuthenticated()
        if principal.kind == "platform_key":
            raise APIError("forbidden", "Platform keys act on platform routes only.", status_code=403)
        if principal.role is None:
            raise APIError("not_a_member", "You are not a member of this tenant.", status_code=403)
        action = view_action(request, view)
        request.principal = principal
        authorize(tenant_id=ctx.id, plan=ctx.plan, role=principal.role, action=action, actor=principal.actor,
                  resource=request.path, request=request, features=ctx.granted)
        outcome = meter(ctx, "api_calls", while_waiting=prime_tenant_session if ctx.isolation == "schema" else None)
        if hotcache.observe_generation(outcome.generation):
            revalidate(request, ctx, principal)
        metric = metric_for(action)
        if metric:
            meter(ctx, metric, rate_limit=False)
        return True


def revalidate(request, ctx, principal) -> None:
    """Tenancy data changed somewhere in the fleet: check this request against the database."""
    from tenants.models import Tenant, TenantKey

    status = Tenant.objects.filter(pk=ctx.id).values_list("status", flat=True).first()
    if status != Tenant.Status.ACTIVE:
        code = "tenant_suspended" if status == Tenant.Status.SUSPENDED else "tenant_deleted"
        raise APIError(code, f"This tenant is {status}.", status_code=403)
    if principal.kind == "tenant_key":
        key = TenantKey.dangerously_all_tenants.filter(pk=principal.key_id).values("revoked_at", "role").first()
        if key is None or key["revoked_at"] is not None:
            raise exceptions.AuthenticationFailed("The API key has been revoked.")
        if key["role"] != principal.role:
            raise APIError("stale_credentials", "This key's role changed; retry the request.", status_code=409)


def prime_tenant_session() -> None:
    """Point the database session at the (schema-isolated) tenant's schema now, while the
    quota script runs.

    tenant_context() only marks the schema; django-tenants sends `SET search_path`, a
    round trip of its own, before the view's first query. Sent while Redis works on the
    script, the two round trips overlap (the costly part of each is waking the server).
    It reads and changes no data, and the view starts only after the script's verdict. A
    failure is left for the view's first query to meet (django-tenants then retries)."""
    try:
        connection.cursor().close()
    except DatabaseError:
        pass


def meter(ctx, metric: str, *, rate_limit: bool = True, while_waiting=None) -> quotas.Outcome:
    """Count one unit against the tenant's plan; 429 past its rate limit or quota."""
    outcome = quotas.consume(tenant_id=ctx.id, metric=metric, limits=ctx.limits, rate_limit=rate_limit,
                             while_waiting=while_waiting)
    if not outcome.allowed:
        if outcome.code == "rate_limited":
            hotcache.throttle(ctx.id, outcome.retry_after)
        raise APIError(outcome.code, outcome.rationale, status_code=429, headers={"Retry-After": str(outcome.retry_after)},
                       details={"metric": metric, "used": outcome.used, "limit": outcome.limit,
                                "retry_after": outcome.retry_after, "rationale": outcome.rationale})
    return outcome
