"""Reads about tenants."""
from __future__ import annotations

from django.utils import timezone


def usage_summary() -> dict:
    """What the current tenant holds and ran this calendar month (tenant context required)."""
    from workflows.models import Workflow, WorkflowRun

    start = timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return {
        "workflows": Workflow.objects.count(),
        "workflow_runs_this_period": WorkflowRun.objects.filter(created_at__gte=start).count(),
        "period_start": start.isoformat(),
    }
