"""The tenant context follows work into Celery tasks and threads; without it tenant data is unreachable."""
import threading
from contextvars import copy_context

import pytest

from tenants.context import NoTenantContext, current_tenant, tenant_context
from tests.conftest import client_for


@pytest.mark.parametrize("plan", ["core", "enterprise"])
def test_tenant_task_runs_in_its_tenants_context(make_tenant, plan):
    from workflows.models import WorkflowRun
    from workflows.tasks import run_workflow

    a, key_a = make_tenant(plan=plan)
    b, _ = make_tenant(plan=plan)
    wf = client_for(key_a, a).post("/api/workflows", {"name": "nightly"}, format="json").json()["id"]
    run_id = run_workflow.apply(kwargs={"workflow_id": wf, "tenant_id": a.id}).get()
    with tenant_context(a):
        assert WorkflowRun.objects.get(pk=run_id).triggered_by == "system:schedule"
    with tenant_context(b):
        assert not WorkflowRun.objects.filter(pk=run_id).exists()
    # The same task for another tenant cannot see A's workflow.
    from workflows.models import Workflow

    with pytest.raises(Workflow.DoesNotExist):
        run_workflow.apply(kwargs={"workflow_id": wf, "tenant_id": b.id}).get()


def test_task_for_a_suspended_tenant_is_dropped(make_tenant):
    from tenants import services
    from workflows.tasks import run_workflow

    a, _ = make_tenant()
    services.tenant_suspend(tenant=a, actor="test")
    assert run_workflow.apply(kwargs={"workflow_id": "x", "tenant_id": a.id}).get() is None


def test_untenanted_task_touching_tenant_data_raises(db):
    from celery import shared_task

    from workflows.models import Workflow

    @shared_task
    def careless():
        return Workflow.objects.count()

    with pytest.raises(NoTenantContext):
        careless.apply().get()


def test_context_is_carried_into_a_copied_thread_and_not_leaked(make_tenant):
    a, _ = make_tenant(plan="enterprise")
    seen = {}

    def worker():
        from workflows.models import WorkflowTemplate

        seen["slug"] = current_tenant().slug
        seen["templates"] = WorkflowTemplate.objects.count()

    with tenant_context(a):
        ctx = copy_context()
        thread = threading.Thread(target=ctx.run, args=(worker,))
        thread.start()
        thread.join()
    assert seen == {"slug": a.slug, "templates": 2}
    with pytest.raises(NoTenantContext):
        current_tenant()
