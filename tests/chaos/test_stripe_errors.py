"""Chaos drill: Stripe erroring or unreachable while an organization signs up or changes
its plan, against the local stateful Stripe (tests/stripe_server.py).

What the user sees: 503 `billing_unavailable` and a retry that works; never a half-made
tenant, never a Stripe customer or subscription left behind, never an audit event for
something that did not happen. (Stripe failing at the subscription step of signup is
tests/billing/test_billing.py::test_stripe_down_at_signup_is_a_clear_503_and_leaves_nothing.)
"""
from __future__ import annotations

import pytest

from compliance.models import AuditEvent
from tests.billing.conftest import billing_on, stripe_server  # noqa: F401  (fixtures)
from tests.conftest import client_for, unique_slug
from tests.ports import free_port
from tests.test_provisioning_rollback import _max_tenant_id, _tenant_databases, _traces


def _signup(api, slug: str, plan: str):
    return api.post("/api/tenants", {"name": "Chaos", "slug": slug, "plan": plan, "admin_email": "o@chaos.test"},
                    format="json")


@pytest.mark.parametrize("plan", ["core", "enterprise"])
@pytest.mark.parametrize("failure", ["customer_500", "subscription_429", "unreachable"])
def test_stripe_failing_at_signup_answers_503_and_leaves_no_trace(billing_on, api, settings, plan, failure):
    if failure == "customer_500":
        billing_on.fail_next("/v1/customers", status=500, count=1)
    elif failure == "subscription_429":
        billing_on.fail_next("/v1/subscriptions", status=429, count=1, code="rate_limit")
    else:
        settings.STRIPE_API_BASE = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    slug = unique_slug("sx")
    floor = _max_tenant_id()
    databases = _tenant_databases()
    response = _signup(api, slug, plan)
    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "billing_unavailable"
    assert _traces(slug, floor) == {key: False for key in _traces(slug, floor)}
    assert _tenant_databases() == databases
    assert [c for c in billing_on.objects("customer")] == []
    assert all(s["status"] == "canceled" for s in billing_on.objects("subscription"))
    # Stripe back: the same signup goes through.
    settings.STRIPE_API_BASE = billing_on.url
    retried = _signup(api, slug, plan)
    assert retried.status_code == 201, retried.content
    assert len(billing_on.objects("customer")) == 1


def test_a_plan_change_while_stripe_errors_is_a_503_and_records_nothing(billing_on, make_tenant):
    tenant, key = make_tenant(plan="core")
    owner = client_for(key, tenant)
    billing_on.fail_next("/v1/billing_portal/sessions", status=500, count=1)
    failed = owner.post("/api/org/billing/portal-session")
    assert failed.status_code == 503 and failed.json()["error"]["code"] == "billing_unavailable"
    assert not AuditEvent.dangerously_all_tenants.filter(tenant_id=tenant.id, event="billing.portal_opened").exists()
    assert billing_on.objects("billing_portal.session") == []
    assert owner.get("/api/org/billing").json()["plan"] == "core"  # nothing changed
    retried = owner.post("/api/org/billing/portal-session")
    assert retried.status_code == 201 and retried.json()["url"].startswith(billing_on.url)
    assert AuditEvent.dangerously_all_tenants.filter(tenant_id=tenant.id, event="billing.portal_opened").count() == 1
