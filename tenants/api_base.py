"""Base classes every tenant API inherits (STYLE.md habit 5).

They require a tenant context and check policy on every request; subclasses only name
their policy actions. Querysets of tenant apps are scoped by the connection itself
(schema or database), shared tables by their tenant-scoped managers.
"""
from rest_framework import generics, viewsets

from policy.permissions import TenantPolicyPermission


class TenantViewSet(viewsets.GenericViewSet):
    permission_classes = [TenantPolicyPermission]
    lookup_value_regex = "[^/]+"


class TenantAPIView(generics.GenericAPIView):
    permission_classes = [TenantPolicyPermission]
