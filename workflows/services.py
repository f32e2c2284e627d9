"""Writes to the tenant's workflows. Run inside a tenant context (the router insists)."""
from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from tenants.context import tenant_db
from workflows.models import Workflow, WorkflowRun


def workflow_create(*, name: str, description: str = "", definition: dict | None = None, enabled: bool = True,
                    actor: str) -> Workflow:
    return Workflow.objects.create(name=name, description=description, definition=definition or {},
                                   enabled=enabled, created_by=actor)


def workflow_update(*, workflow: Workflow, actor: str, **fields) -> Workflow:
    for name, value in fields.items():
        setattr(workflow, name, value)
    workflow.save(update_fields=[*fields, "updated_at"])
    return workflow


def workflow_delete(*, workflow: Workflow, actor: str) -> None:
    workflow.delete()


def workflow_run(*, workflow: Workflow, actor: str, input: dict | None = None) -> WorkflowRun:
    # The run executes inline for now: its steps are declarative and instant. Long-running
    # step types will hand the run to a Celery task that carries the tenant context.
    with transaction.atomic(using=tenant_db()):
        run = WorkflowRun.objects.create(workflow=workflow, triggered_by=actor, input=input or {},
                                         status=WorkflowRun.Status.RUNNING)
        steps = workflow.definition.get("steps", []) if isinstance(workflow.definition, dict) else []
        run.status = WorkflowRun.Status.SUCCEEDED
        run.result = {"steps_run": len(steps)}
        run.finished_at = timezone.now()
        run.save(update_fields=["status", "result", "finished_at"])
    return run
