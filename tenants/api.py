"""Tenancy HTTP API: platform routes (/api/tenants) and the org routes (/api/org/...)."""
from __future__ import annotations

from django.conf import settings
from django.core import signing
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import permissions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from compliance.models import AuditEvent
from levqor import ratelimit
from levqor.clientip import client_ip
from levqor.errors import APIError
from levqor.timeparse import parse_when
from policy.enforce import authorize
from tenants import legacy, selectors, services
from tenants.api_base import TenantAPIView
from tenants.context import current_tenant
from tenants.models import Tenant, TenantKey, TenantUser
from tenants.principals import principal_for
from tenants.serializers import KeyCreateSerializer, KeySerializer, SignupSerializer, TenantSerializer

from tenants.views import BOOTSTRAP_SALT


def _tenant_or_404(tenant_id) -> Tenant:
    tenant = Tenant.objects.filter(pk=tenant_id).prefetch_related("domains").first()
    if tenant is None:
        raise APIError("not_found", "No such tenant.", status_code=404)
    return tenant


def _is_staff(principal) -> bool:
    return principal is not None and principal.is_staff


class TenantCollection(APIView):
    """POST /api/tenants: self-service signup (rate limited per client) or staff."""

    permission_classes = [permissions.AllowAny]

    @extend_schema(request=SignupSerializer, responses={201: OpenApiTypes.OBJECT})
    def post(self, request):
        principal = principal_for(request)
        if not _is_staff(principal):
            if not legacy.signups_open():
                raise APIError("signups_closed", "Sign-ups open when the migration to multi-tenancy completes (M4).",
                               status_code=403)
            allowed, retry_after = ratelimit.hit(f"signup:{client_ip(request)}", settings.LEVQOR_SIGNUP_RATE)
            if not allowed:
                raise APIError("rate_limited", "Too many signups from this client; try again later.", status_code=429,
                               headers={"Retry-After": str(retry_after)}, details={"retry_after": retry_after})
        if not isinstance(request.data, dict):
            raise APIError("invalid_input", "The body must be a JSON object.")
        body = SignupSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        actor = principal.actor if principal else f"signup:{data['admin_email']}"
        result = services.tenant_create(name=data["name"], slug=data["slug"], plan=data["plan"],
                                        region=data.get("region") or None, admin_email=data["admin_email"], actor=actor)
        tenant = result.tenant
        payload = TenantSerializer(_tenant_or_404(tenant.pk)).data
        token = signing.dumps({"tenant": tenant.pk, "email": data["admin_email"]}, salt=BOOTSTRAP_SALT)
        payload.update(
            api_key=result.api_key,
            sso_bootstrap_url=request.build_absolute_uri(f"/org/bootstrap/{token}"),
        )
        return Response(payload, status=status.HTTP_201_CREATED)


class TenantPlatformView(APIView):
    """Base for /api/tenants/{id}/...: staff, or the tenant's own credentials."""

    permission_classes = [permissions.IsAuthenticated]

    def tenant_for(self, request, tenant_id, *, staff_only=False, action: str | None = None) -> Tenant:
        principal = principal_for(request)
        if _is_staff(principal):
            return _tenant_or_404(tenant_id)
        if staff_only:
            raise APIError("forbidden", "Only platform staff may do this.", status_code=403)
        tenant = Tenant.objects.filter(pk=tenant_id).first()
        if principal.kind == "user" and tenant is not None:
            principal = principal_for(request, tenant.pk)
        if tenant is None or principal.tenant_id != tenant.pk:
            if tenant is not None and principal.kind == "tenant_key":
                from tenants.security import cross_tenant_attempt

                cross_tenant_attempt(key=request.auth, target_tenant_id=tenant.pk, request=request)
            # The same answer whether or not the tenant exists: existence is not told.
            raise APIError("cross_tenant_forbidden", "These credentials do not belong to this tenant.", status_code=403)
        if tenant.status in (Tenant.Status.DELETING, Tenant.Status.DELETED):
            raise APIError("tenant_deleted", "This tenant has been deleted.", status_code=403)
        if action:
            authorize(tenant_id=tenant.pk, plan=tenant.plan, role=principal.role, action=action,
                      actor=principal.actor, resource=request.path, request=request)
        return _tenant_or_404(tenant.pk)


class TenantDetail(TenantPlatformView):
    @extend_schema(request=None, responses=OpenApiTypes.OBJECT)
    def get(self, request, tenant_id):
        return Response(TenantSerializer(self.tenant_for(request, tenant_id, action="tenant:read")).data)


class TenantSuspend(TenantPlatformView):
    @extend_schema(request=None, responses=OpenApiTypes.OBJECT)
    def post(self, request, tenant_id):
        tenant = services.tenant_suspend(tenant=self.tenant_for(request, tenant_id, staff_only=True),
                                         actor=principal_for(request).actor, reason=str(request.data.get("reason", ""))[:500]
                                         if isinstance(request.data, dict) else "")
        return Response({"id": tenant.id, "status": tenant.status})


class TenantResume(TenantPlatformView):
    @extend_schema(request=None, responses=OpenApiTypes.OBJECT)
    def post(self, request, tenant_id):
        tenant = services.tenant_resume(tenant=self.tenant_for(request, tenant_id, staff_only=True),
                                        actor=principal_for(request).actor)
        return Response({"id": tenant.id, "status": tenant.status})


class TenantDelete(TenantPlatformView):
    @extend_schema(request=None, responses=OpenApiTypes.OBJECT)
    def post(self, request, tenant_id):
        tenant = self.tenant_for(request, tenant_id, action="tenant:delete")
        tenant = services.tenant_delete(tenant=tenant, actor=principal_for(request).actor)
        return Response({"id": tenant.id, "status": tenant.status, "purge_after": tenant.purge_after},
                        status=status.HTTP_202_ACCEPTED)


class TenantRotateKeys(TenantPlatformView):
    @extend_schema(request=None, responses=OpenApiTypes.OBJECT)
    def post(self, request, tenant_id):
        tenant = self.tenant_for(request, tenant_id, action="keys:rotate")
        key, plaintext = services.keys_rotate(tenant=tenant, actor=principal_for(request).actor)
        return Response({"api_key": plaintext, "prefix": key.prefix, "role": key.role})


# --- /api/org: the current tenant ------------------------------------------------------


class OrgDetail(TenantAPIView):
    policy_actions = {"GET": "tenant:read"}

    @extend_schema(request=None, responses=OpenApiTypes.OBJECT)
    def get(self, request):
        ctx = current_tenant()
        tenant = _tenant_or_404(ctx.id)
        data = TenantSerializer(tenant).data
        data.update(limits=ctx.limits, features=sorted(ctx.features), usage=selectors.usage_summary())
        return Response(data)


class OrgKeys(TenantAPIView):
    policy_actions = {"GET": "keys:read", "POST": "keys:create"}

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request):
        keys = TenantKey.objects.filter(revoked_at__isnull=True).order_by("-created_at")
        return Response({"results": KeySerializer(keys, many=True).data})

    @extend_schema(request=KeyCreateSerializer, responses={201: OpenApiTypes.OBJECT})
    def post(self, request):
        body = KeyCreateSerializer(data=request.data if isinstance(request.data, dict) else {})
        body.is_valid(raise_exception=True)
        tenant = Tenant.objects.get(pk=current_tenant().id)
        key, plaintext = services.key_create_for_tenant(tenant=tenant, actor=request.principal.actor,
                                                        **body.validated_data)
        return Response({**KeySerializer(key).data, "api_key": plaintext}, status=status.HTTP_201_CREATED)


class OrgKeyDetail(TenantAPIView):
    policy_actions = {"DELETE": "keys:revoke"}

    @extend_schema(request=None, responses=OpenApiTypes.OBJECT)
    def delete(self, request, key_id):
        key = TenantKey.objects.filter(pk=key_id).first()
        if key is None:
            raise APIError("not_found", "No such key.", status_code=404)
        services.key_revoke(key=key, actor=request.principal.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)


class OrgMembers(TenantAPIView):
    policy_actions = {"GET": "members:read"}

    @extend_schema(request=None, responses=OpenApiTypes.OBJECT)
    def get(self, request):
        members = TenantUser.objects.select_related("user").order_by("created_at")
        return Response({"results": [
            {"id": m.id, "email": m.user.email, "username": m.user.get_username(), "role": m.role,
             "sso_id": m.sso_id, "created_at": m.created_at}
            for m in members
        ]})


def _audit_events(request):
    """The current tenant's events, newest first, filtered by ?event=&since=&until=."""
    events = AuditEvent.objects.order_by("-seq")
    event = request.query_params.get("event")
    if event:
        events = events.filter(event=event)
    for param, lookup in (("since", "ts__gte"), ("until", "ts__lt")):
        raw = request.query_params.get(param)
        if raw:
            when = parse_when(raw)
            if when is None:
                raise APIError("invalid_input", f"{param} must be an ISO 8601 date-time", details={"param": param})
            events = events.filter(**{lookup: when})
    return events


def _audit_row(e) -> dict:
    return {"seq": e.seq, "event": e.event, "actor": e.actor, "ts": e.ts.isoformat(), "ip": e.ip,
            "metadata": e.metadata_json, "prev_hash": e.prev_hash, "hash": e.hash}


class OrgAudit(TenantAPIView):
    policy_actions = {"GET": "audit:read"}

    @extend_schema(request=None, responses=OpenApiTypes.OBJECT)
    def get(self, request):
        page = self.paginate_queryset(_audit_events(request))
        return self.get_paginated_response([_audit_row(e) for e in page])


class OrgAuditExport(TenantAPIView):
    """GET /api/org/audit/export?format=csv|jsonl: the whole filtered trail, streamed; audited."""

    policy_actions = {"GET": "audit:export"}

    @extend_schema(request=None, responses=OpenApiTypes.OBJECT)
    def get(self, request):
        import csv
        import io
        import json

        from django.http import StreamingHttpResponse

        from compliance import audit

        fmt = request.query_params.get("format", "jsonl")
        if fmt not in ("csv", "jsonl"):
            raise APIError("invalid_input", "format must be csv or jsonl", details={"param": "format"})
        events = _audit_events(request)
        ctx = current_tenant()
        audit.record("data.exported", tenant_id=ctx.id, actor=request.principal.actor, request=request,
                     metadata={"what": "audit", "format": fmt, "filters": dict(request.query_params.items())})
        rows = (_audit_row(e) for e in events.iterator(chunk_size=500))
        if fmt == "jsonl":
            body = (json.dumps(row, default=str) + "\n" for row in rows)
            content_type = "application/x-ndjson"
        else:
            fields = ["seq", "event", "actor", "ts", "ip", "metadata", "prev_hash", "hash"]

            def lines():
                buffer = io.StringIO()
                writer = csv.DictWriter(buffer, fieldnames=fields)
                writer.writeheader()
                for row in rows:
                    writer.writerow({**row, "metadata": json.dumps(row["metadata"], sort_keys=True)})
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
                yield buffer.getvalue()

            body, content_type = lines(), "text/csv"
        response = StreamingHttpResponse(body, content_type=content_type)
        response["Content-Disposition"] = f'attachment; filename="audit-{ctx.slug}.{fmt}"'
        return response


class OrgUsage(TenantAPIView):
    policy_actions = {"GET": "usage:read"}

    @extend_schema(request=None, responses=OpenApiTypes.OBJECT)
    def get(self, request):
        from policy import quotas

        ctx = current_tenant()
        return Response(quotas.usage(ctx.id, ctx.limits))


class OrgPolicySimulate(TenantAPIView):
    policy_actions = {"GET": "policy:simulate"}

    @extend_schema(request=None, responses=OpenApiTypes.OBJECT)
    def get(self, request):
        from policy.engine import ROLES
        from policy.plans import is_plan
        from policy.simulate import simulate

        ctx = current_tenant()
        params = request.query_params
        to_plan, role, to_role = params.get("plan") or ctx.plan, params.get("from_role"), params.get("role")
        if not is_plan(to_plan):
            raise APIError("invalid_input", f"unknown plan {to_plan!r}", details={"param": "plan"})
        for name, value in (("role", to_role), ("from_role", role)):
            if value is not None and value not in ROLES:
                raise APIError("invalid_input", f"unknown role {value!r}", details={"param": name})
        if to_role and not role:
            role = request.principal.role  # "what would change if I were <role>"
        return Response(simulate(plan=ctx.plan, to_plan=to_plan, role=role, to_role=to_role))


class TenantPlan(TenantPlatformView):
    """POST /api/tenants/{id}/plan {plan}: staff change a tenant's plan (billing webhooks call the same service)."""

    @extend_schema(request=inline_serializer("PlanChange", {"plan": serializers.CharField()}),
                   responses=OpenApiTypes.OBJECT)
    def post(self, request, tenant_id):
        tenant = self.tenant_for(request, tenant_id, staff_only=True)
        plan = request.data.get("plan") if isinstance(request.data, dict) else None
        tenant = services.tenant_change_plan(tenant=tenant, plan=plan, actor=principal_for(request).actor)
        return Response({"id": tenant.id, "plan": tenant.plan})
