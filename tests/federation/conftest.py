"""Federation fixtures: opted-in tenants with a few workflow runs in a past month."""
from __future__ import annotations

from datetime import datetime, timezone as dt_timezone

import pytest

PERIOD = "202601"
IN_PERIOD = datetime(2026, 1, 15, tzinfo=dt_timezone.utc)


def add_runs(tenant, succeeded: int, failed: int = 0, when=IN_PERIOD) -> None:
    from tenants.context import tenant_context
    from workflows.models import Workflow, WorkflowRun

    with tenant_context(tenant):
        workflow = Workflow.objects.create(name="wf")
        for status in ["succeeded"] * succeeded + ["failed"] * failed:
            WorkflowRun.objects.create(workflow=workflow, status=status)
        WorkflowRun.objects.filter(workflow=workflow).update(created_at=when)


@pytest.fixture
def opted_in(make_tenant):
    """Provision and opt in `n` tenants of `industry`, each with a few runs in PERIOD."""
    from federation import services
    from tenants.context import tenant_context

    def make(n: int, industry: str):
        tenants = []
        for i in range(n):
            tenant, key = make_tenant()
            add_runs(tenant, succeeded=10 + i, failed=i % 3)
            with tenant_context(tenant):
                services.federation_update(tenant_id=tenant.id, opted_in=True, industry=industry, actor="test")
            tenants.append((tenant, key))
        return tenants

    return make
