"""Runtime records: backups, region failovers and where each region's primary is now."""
from django.db import models

from tenants.scoping import TenantScopedModel


class Backup(TenantScopedModel):
    """One backup of one tenant: its schema (or database) and its rows of shared tables,
    stored compressed and checksummed in the tenant's region."""

    class Status(models.TextChoices):
        RUNNING = "running"
        OK = "ok"
        FAILED = "failed"
        EXPIRED = "expired"  # removed by retention; the row stays as the record

    tenant_id = models.BigIntegerField(db_index=True)
    region = models.CharField(max_length=64)
    isolation = models.CharField(max_length=16)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING, db_index=True)
    trigger = models.CharField(max_length=16, default="manual")  # manual, nightly, portal, api
    actor = models.CharField(max_length=200, default="system")
    storage_name = models.CharField(max_length=500, blank=True)
    size_bytes = models.BigIntegerField(default=0)
    checksum_sha256 = models.CharField(max_length=64, blank=True)
    encrypted = models.BooleanField(default=False)
    manifest_json = models.JSONField(default=dict, blank=True)  # tables, row counts, checksums, migrations
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta(TenantScopedModel.Meta):
        db_table = "tenant_backups"
        ordering = ["-created_at"]


class RegionState(models.Model):
    """Where a region's primary database server is now, when it differs from settings
    (after a failover). The connection broker and provisioning read it."""

    region = models.CharField(max_length=64, unique=True)
    database_url_encrypted = models.TextField()  # Fernet, like tenant DSNs
    failed_over_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "region_state"


class Failover(models.Model):
    """One failover of a region: when, why, by whom, and the measured RPO/RTO."""

    class Status(models.TextChoices):
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    region = models.CharField(max_length=64, db_index=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    trigger = models.CharField(max_length=16, default="manual")  # manual, health_check
    actor = models.CharField(max_length=200, default="system")
    reason = models.TextField(blank=True)
    replica_lag_bytes = models.BigIntegerField(null=True, blank=True)
    rpo_seconds = models.FloatField(null=True, blank=True)
    rto_seconds = models.FloatField(null=True, blank=True)
    detail_json = models.JSONField(default=dict, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "region_failovers"
        ordering = ["-started_at"]
