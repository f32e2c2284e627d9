"""The audit trail (`tenant_audit`) and alerts.

Audit rows outlive their tenant (they are the evidence), so `tenant_id` is a plain
column, not a foreign key that a purge would cascade through.
"""
from django.db import models

from tenants.scoping import TenantScopedModel


class AuditEvent(TenantScopedModel):
    """One event of a tenant's trail. `seq`, `prev_hash` and `hash` (its place in the hash
    chain) are NULL from the event's commit until a sealer gives them, once, in
    compliance.audit; until then the event is stored but not yet chained, and
    `content_to_seal` holds its content as the hash covers it, so that sealing runs in
    SQL alone; sealing clears it."""

    # Every read of the trail is one tenant's (by seq, or by time), served by the two
    # indexes below that lead with tenant_id; single-column indexes on tenant_id, event and
    # ts would only slow down every insert and every seal (migration 0009 dropped them).
    tenant_id = models.BigIntegerField()
    seq = models.PositiveBigIntegerField(null=True, blank=True)
    event = models.CharField(max_length=64)
    actor = models.CharField(max_length=200)
    ts = models.DateTimeField()
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    metadata_json = models.JSONField(default=dict, blank=True)
    prev_hash = models.CharField(max_length=64, null=True, blank=True)
    hash = models.CharField(max_length=64, null=True, blank=True)
    content_to_seal = models.TextField(null=True, blank=True, editable=False)

    class Meta(TenantScopedModel.Meta):
        db_table = "tenant_audit"
        constraints = [models.UniqueConstraint(fields=["tenant_id", "seq"], name="audit_chain_no_fork")]
        indexes = [
            models.Index(fields=["tenant_id", "-ts"], name="audit_tenant_ts"),
            # What the sealers look up; its live entries are few, events leave it within milliseconds.
            models.Index(fields=["tenant_id", "id"], name="audit_unsealed", condition=models.Q(seq__isnull=True)),
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id}#{self.seq if self.seq is not None else '(unsealed)'} {self.event}"


class AuditStream(TenantScopedModel):
    """A tenant's SIEM destination. Its cursor is the last audit seq delivered: the audit
    trail itself is the outbox, so nothing is lost while the receiver is down."""

    class Kind(models.TextChoices):
        SPLUNK = "splunk_hec"
        DATADOG = "datadog"
        WEBHOOK = "webhook"

    class State(models.TextChoices):
        ACTIVE = "active"
        FAILING = "failing"  # retrying with backoff
        PAUSED = "paused"
        DEAD = "dead"  # gave up after too many failures; an alert was raised; replay resumes it

    tenant_id = models.BigIntegerField(db_index=True)
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    url = models.URLField(max_length=2000)
    secret_encrypted = models.TextField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.ACTIVE)
    cursor_seq = models.PositiveBigIntegerField(default=0)
    failures = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True)
    last_delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta(TenantScopedModel.Meta):
        db_table = "tenant_audit_streams"


class IntegrityRun(TenantScopedModel):
    tenant_id = models.BigIntegerField(db_index=True)
    status = models.CharField(max_length=8)  # pass | warn | fail
    results = models.JSONField(default=list)  # [{"check", "status", "detail"}]
    actor = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta(TenantScopedModel.Meta):
        db_table = "tenant_integrity_runs"
        ordering = ["-created_at"]


class EvidenceReport(TenantScopedModel):
    class Status(models.TextChoices):
        PENDING = "pending"
        READY = "ready"
        FAILED = "failed"
        EXPIRED = "expired"  # past the plan's retention: the file is gone (runtime/lifecycle.py)

    tenant_id = models.BigIntegerField(db_index=True)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    path = models.CharField(max_length=500, blank=True)  # in the tenant's region storage
    sha256 = models.CharField(max_length=64, blank=True)
    head_seq = models.PositiveBigIntegerField(null=True, blank=True)
    head_hash = models.CharField(max_length=64, blank=True)
    requested_by = models.CharField(max_length=200)
    error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta(TenantScopedModel.Meta):
        db_table = "tenant_evidence_reports"
        ordering = ["-created_at"]


class AuditCheckpoint(models.Model):
    """Where a tenant's chain resumes after its oldest rows were purged (retention, tenant
    purge): the last purged row's seq and hash. Written by the one purge path."""

    tenant_id = models.BigIntegerField(db_index=True)
    seq = models.PositiveBigIntegerField()
    hash = models.CharField(max_length=64)
    purged_rows = models.PositiveIntegerField()
    reason = models.CharField(max_length=200)
    actor = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "tenant_audit_checkpoints"
        ordering = ["-seq"]


class Alert(models.Model):
    """Something a person should look at. `audience` says who may see it."""

    class Audience(models.TextChoices):
        TENANT = "tenant"  # the org admins and platform staff
        STAFF = "staff"  # platform staff only (for example: which tenant attacked which)

    tenant_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    kind = models.CharField(max_length=64, db_index=True)
    severity = models.CharField(max_length=16, default="warning")
    audience = models.CharField(max_length=16, choices=Audience.choices, default=Audience.TENANT)
    message = models.TextField()
    metadata_json = models.JSONField(default=dict, blank=True)
    dedupe_key = models.CharField(max_length=200, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "alerts"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"[{self.severity}] {self.kind}: {self.message}"
