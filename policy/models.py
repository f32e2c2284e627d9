"""The usage ledger: per-tenant counters flushed from Redis."""
from django.db import models

from tenants.scoping import TenantScopedModel


class UsageCounter(TenantScopedModel):
    tenant_id = models.BigIntegerField()
    metric = models.CharField(max_length=32)
    period = models.CharField(max_length=6)  # YYYYMM
    count = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta(TenantScopedModel.Meta):
        db_table = "usage_counters"
        constraints = [models.UniqueConstraint(fields=["tenant_id", "metric", "period"], name="usage_counter_once")]


class UsageFlush(models.Model):
    """One applied flush of pending counts: makes a re-applied flush a no-op."""

    flush_id = models.CharField(max_length=32, unique=True)
    tenant_id = models.BigIntegerField()
    period = models.CharField(max_length=6)
    counts = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "usage_flushes"
