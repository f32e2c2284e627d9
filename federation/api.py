"""GET/POST /api/org/federation: the tenant's federation status and choice."""
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response

from federation import services
from levqor.errors import APIError
from tenants.api_base import TenantAPIView
from tenants.context import current_tenant

FEDERATION_UPDATE = inline_serializer("FederationUpdate", {
    "opted_in": serializers.BooleanField(), "industry": serializers.CharField(required=False, allow_blank=True)})


class OrgFederation(TenantAPIView):
    policy_actions = {"GET": "federation:read", "POST": "federation:manage"}

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request):
        return Response(services.status(current_tenant().id))

    @extend_schema(request=FEDERATION_UPDATE, responses=OpenApiTypes.OBJECT)
    def post(self, request):
        if not isinstance(request.data, dict):
            raise APIError("invalid_input", "The body must be a JSON object.")
        tenant_id = current_tenant().id
        services.federation_update(tenant_id=tenant_id, opted_in=request.data.get("opted_in"),
                                   industry=request.data.get("industry"), actor=request.principal.actor,
                                   request=request)
        return Response(services.status(tenant_id))
