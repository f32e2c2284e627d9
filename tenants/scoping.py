"""Tenant scoping for shared tables that carry `tenant_id`.

`Model.objects` filters to the current tenant and raises `NoTenantContext` when there
is none. Platform code that must see every tenant's rows says so, visibly:
`Model.dangerously_all_tenants`.
"""
from django.db import models

from tenants.context import current_tenant


class TenantScopedManager(models.Manager):
    def get_queryset(self):
        return super().get_queryset().filter(tenant_id=current_tenant().id)


class TenantScopedModel(models.Model):
    objects = TenantScopedManager()
    dangerously_all_tenants = models.Manager()

    class Meta:
        abstract = True
        default_manager_name = "objects"
        base_manager_name = "dangerously_all_tenants"
