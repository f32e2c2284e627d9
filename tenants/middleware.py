"""TenantContextMiddleware: which tenant a request is for.

The tenant comes from the `X-Tenant-ID` header (id or slug), the host
`<slug>.<LEVQOR_BASE_DOMAIN>`, or a verified custom domain. On tenant routes
(settings.LEVQOR_TENANT_ROUTE_PREFIXES):

    missing -> 400 tenant_required      malformed -> 400 invalid_tenant_id
    unknown -> 404 tenant_not_found     header and host disagree -> 400 tenant_context_conflict
    suspended -> 403 tenant_suspended   deleting/deleted -> 403 tenant_deleted

and then the request runs inside `tenant_context()`: the contextvar, the connection
(schema or database alias), plan limits and features. Platform routes run with no
tenant context at all. With TENANCY_ENABLED=false every tenant route runs as the one
organization `levqor-main` (tenants/legacy.py).
"""
from __future__ import annotations

import re

from django.conf import settings

from levqor.errors import error_response
from tenants import hotcache, legacy
from tenants.context import tenant_context
from tenants.models import Domain, Tenant
from tenants.slugs import SLUG_RE

_ID_RE = re.compile(r"^[0-9]{1,18}$")
_HOST_RE = re.compile(r"^[a-z0-9.-]{1,253}$")


class TenantRef:
    __slots__ = ("kind", "value", "source")

    def __init__(self, kind: str, value, source: str):
        self.kind, self.value, self.source = kind, value, source

    def matches(self, tenant: Tenant) -> bool:
        return tenant.id == self.value if self.kind == "id" else (
            tenant.slug == self.value if self.kind == "slug" else tenant.id == self.value
        )


class TenantContextMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        self.prefixes = tuple(settings.LEVQOR_TENANT_ROUTE_PREFIXES)
        self.base_suffix = "." + settings.LEVQOR_BASE_DOMAIN
        self.platform_hosts = frozenset(settings.LEVQOR_PLATFORM_HOSTS)

    def __call__(self, request):
        # Platform routes carry no `request.tenant` at all (django-tenants' admin templates
        # read its absence as "public").
        if not request.path_info.startswith(self.prefixes):
            return self.get_response(request)

        if not settings.TENANCY_ENABLED:
            # Single-tenant mode: the one organization, wherever its data now lives
            # (tenants/legacy.py); tenant headers and hosts are not consulted.
            header_ref = host_ref = None
            ref = TenantRef("slug", legacy.ORG_SLUG, "single_tenant")
        else:
            header_ref, problem = self._from_header(request)
            if problem:
                return problem
            host_ref = self._from_host(request)
            ref = header_ref or host_ref
            if ref is None and legacy.headerless_fallback_open():  # until M4 closes the legacy path
                ref = TenantRef("slug", legacy.ORG_SLUG, "legacy_fallback")
        if ref is None:
            return error_response(400, "tenant_required",
                                  "This route needs a tenant: send X-Tenant-ID or use the tenant's host name.")
        tenant, ctx = hotcache.tenant_for("id" if ref.kind == "custom_domain" else ref.kind, ref.value)
        if tenant is None:
            if ref.source == "single_tenant":
                return error_response(503, "single_tenant_not_set_up",
                                      "TENANCY_ENABLED=false needs the organization levqor-main: run manage.py tenancy_m1.")
            return error_response(404, "tenant_not_found", "No such tenant.")
        if header_ref and host_ref and not host_ref.matches(tenant):
            return error_response(400, "tenant_context_conflict", "X-Tenant-ID and the host name name different tenants.")
        request.metrics_tenant_id = tenant.id  # runtime/metrics.py counts the request for it, refusals included
        if tenant.status == Tenant.Status.SUSPENDED:
            return error_response(403, "tenant_suspended", "This tenant is suspended.")
        if tenant.status in (Tenant.Status.DELETING, Tenant.Status.DELETED):
            return error_response(403, "tenant_deleted", "This tenant has been deleted.")
        if tenant.status != Tenant.Status.ACTIVE:
            return error_response(409, "tenant_not_ready", "This tenant is still being provisioned.")
        if tenant.hibernated_at is not None:
            from runtime.hibernation import wake  # runtime sits above tenants; imported on this rare path only

            wake(tenant)
        wait = hotcache.throttled_for(tenant.id)
        if wait:
            retry = max(1, int(wait + 0.999))
            return error_response(429, "rate_limited", "This tenant is over its rate limit; retry later.",
                                  {"retry_after": retry}, headers={"Retry-After": str(retry)})

        with tenant_context(ctx):
            request.tenant = ctx
            return self.get_response(request)

    @staticmethod
    def _from_header(request):
        raw = request.META.get("HTTP_X_TENANT_ID")
        if raw is None:
            return None, None
        value = raw.strip()
        if _ID_RE.match(value):
            return TenantRef("id", int(value), "header"), None
        if SLUG_RE.match(value):
            return TenantRef("slug", value, "header"), None
        return None, error_response(400, "invalid_tenant_id", "X-Tenant-ID must be a tenant id or slug.")

    def _from_host(self, request):
        host = request.META.get("HTTP_HOST", "").rsplit(":", 1)[0].lower().rstrip(".")
        if not host or not _HOST_RE.match(host):
            return None
        if host.endswith(self.base_suffix):
            label = host[: -len(self.base_suffix)]
            return TenantRef("slug", label, "host") if SLUG_RE.match(label) else None
        if host in self.platform_hosts or host.replace(".", "").isdigit():
            return None
        # A custom domain: one indexed lookup, only on tenant routes.
        tenant_id = Domain.objects.filter(domain=host, verified=True).values_list("tenant_id", flat=True).first()
        return TenantRef("custom_domain", tenant_id, "host") if tenant_id else None
