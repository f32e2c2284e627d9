"""Object-level grants: an operator limited to chosen workflows (django-guardian)."""
import pytest
from django.contrib.auth import get_user_model

from compliance.models import AuditEvent
from policy.objects import workflow_grant
from tenants.context import tenant_context
from tenants.models import TenantUser
from tests.conftest import client_for


@pytest.mark.parametrize("plan", ["core", "enterprise"])
def test_scoped_operator_runs_only_granted_workflows(make_tenant, plan):
    from workflows.models import Workflow

    tenant, key = make_tenant(plan=plan)
    owner = client_for(key, tenant)
    allowed_id = owner.post("/api/workflows", {"name": "Allowed"}, format="json").json()["id"]
    other_id = owner.post("/api/workflows", {"name": "Other"}, format="json").json()["id"]
    user = get_user_model().objects.create_user(username="op@x.test", email="op@x.test", password="pw-123456789")
    member = TenantUser(tenant=tenant, user=user, role="operator", workflow_scope="granted")
    member.save(force_insert=True)
    with tenant_context(tenant):
        workflow_grant(member=member, workflow=Workflow.objects.get(pk=allowed_id), actor="test")

    browser = client_for(tenant=tenant)
    browser.force_login(user)
    assert browser.post(f"/api/workflows/{allowed_id}/run", {}, format="json").status_code == 201
    refused = browser.post(f"/api/workflows/{other_id}/run", {}, format="json")
    assert refused.status_code == 403
    assert "'Other' is not" in refused.json()["error"]["details"]["rationale"]
    assert AuditEvent.dangerously_all_tenants.filter(tenant_id=tenant.id, event="policy.deny").count() == 1

    # An operator of the same tenant without the scope runs anything.
    free = get_user_model().objects.create_user(username="op2@x.test", email="op2@x.test", password="pw-123456789")
    TenantUser(tenant=tenant, user=free, role="operator").save(force_insert=True)
    browser.force_login(free)
    assert browser.post(f"/api/workflows/{other_id}/run", {}, format="json").status_code == 201
