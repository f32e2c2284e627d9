"""The tenant's own product data. Lives in the tenant's schema or database.

No foreign keys to shared tables (a tenant database cannot reach them): actors are
stored as the strings the audit trail uses. UUID keys, so an id never means anything
in another tenant.
"""
import uuid

from django.db import models


class WorkflowTemplate(models.Model):
    """A ready-made workflow installed by a pack."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    pack = models.CharField(max_length=64)
    name = models.CharField(max_length=200)
    definition = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["pack", "name"], name="template_once_per_pack")]


class Workflow(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    definition = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    created_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        # Object-level grant (django-guardian) for members whose runs are limited to
        # chosen workflows: see policy/objects.py.
        permissions = [("run_workflow", "Can run this workflow")]


class WorkflowRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="runs")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    triggered_by = models.CharField(max_length=200, blank=True)
    input = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
