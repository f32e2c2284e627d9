"""Billing routes of the tenant API: /api/org/billing and its Customer Portal session."""
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response

from billing import services
from tenants.api_base import TenantAPIView
from tenants.context import current_tenant


class OrgBilling(TenantAPIView):
    policy_actions = {"GET": "plan:read"}

    @extend_schema(request=None, responses=OpenApiTypes.OBJECT)
    def get(self, request):
        return Response(services.billing_summary(current_tenant().id))


class OrgBillingPortalSession(TenantAPIView):
    policy_actions = {"POST": "plan:change"}

    @extend_schema(request=None, responses={201: OpenApiTypes.OBJECT})
    def post(self, request):
        url = services.portal_session(tenant_id=current_tenant().id, actor=request.principal.actor,
                                      return_url=request.build_absolute_uri(reverse("org-plan")))
        return Response({"url": url}, status=201)
