"""The federation hub's tables, in the public schema.

`FederationMembership` is the tenant's own choice (opt-in, industry): tenant-scoped.
`Release` is what the hub published: platform data that names no tenant, which is why it
is not tenant-scoped and is readable by anyone (the public benchmarks page).
"""
from django.db import models

from tenants.models import Tenant
from tenants.scoping import TenantScopedModel

# A fixed list, so an industry is a bucket many tenants share rather than free text that
# could single one out.
INDUSTRIES = [
    ("software", "Software and SaaS"),
    ("financial_services", "Financial services"),
    ("healthcare", "Healthcare"),
    ("retail", "Retail and e-commerce"),
    ("manufacturing", "Manufacturing"),
    ("media", "Media and entertainment"),
    ("education", "Education"),
    ("public_sector", "Public sector"),
    ("other", "Other"),
]


class FederationMembership(TenantScopedModel):
    """Whether a tenant contributes to the benchmarks. No row, or opted_in False: nothing
    of the tenant is read by the aggregation."""

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="federation")
    opted_in = models.BooleanField(default=False)
    industry = models.CharField(max_length=32, choices=INDUSTRIES, blank=True)
    opted_in_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta(TenantScopedModel.Meta):
        db_table = "federation_memberships"


class Release(models.Model):
    """One published set of benchmarks. `epsilon` is its privacy cost: the most any one
    tenant's data could shift the release's output distribution (pure DP, ln-odds)."""

    period = models.CharField(max_length=6)  # YYYYMM the figures cover
    k = models.PositiveSmallIntegerField()
    epsilon = models.FloatField()
    payload = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "federation_releases"
        ordering = ["-created_at", "-pk"]
