"""Billing's own records: what was reported to Stripe, and which webhooks were handled."""
from django.db import models

from tenants.scoping import TenantScopedModel


class MeterReport(TenantScopedModel):
    """One meter event for one tenant, metric and window (a UTC day).

    Written before it is sent and marked sent after Stripe accepted it. A re-run of the
    same window resends a row that is not marked sent with the same `identifier` and
    value (Stripe drops a duplicate identifier), and skips a sent one: so no window is
    ever billed twice or lost.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"

    tenant_id = models.BigIntegerField()
    metric = models.CharField(max_length=32)
    period = models.CharField(max_length=6)  # the ledger's YYYYMM period the value belongs to
    window = models.DateField()
    value = models.BigIntegerField()
    cumulative = models.BigIntegerField()  # the period's reported total including this row
    identifier = models.CharField(max_length=100, unique=True)
    timestamp = models.BigIntegerField()  # the meter event's time (unix seconds)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta(TenantScopedModel.Meta):
        db_table = "billing_meter_reports"
        constraints = [models.UniqueConstraint(fields=["tenant_id", "metric", "window"], name="meter_report_once")]
        indexes = [models.Index(fields=["tenant_id", "metric", "period"])]


class WebhookEvent(models.Model):
    """A Stripe webhook event that passed signature checks; the unique id makes a
    redelivered event a no-op."""

    event_id = models.CharField(max_length=100, unique=True)
    type = models.CharField(max_length=100)
    tenant_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    outcome = models.CharField(max_length=200)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "billing_webhook_events"
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.event_id} {self.type}: {self.outcome}"
