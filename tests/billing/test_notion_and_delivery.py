"""The nightly Notion summary against a local Notion, and Stripe pushing its webhooks to
a running Levqor over HTTP (no test client in between)."""
from __future__ import annotations

import pytest
from django.test import Client

from billing import catalog, notion, stripe_api
from tenants.models import TenantBilling
from tests.billing.conftest import deliver_new_events
from tests.conftest import client_for
from tests.notion_server import LocalNotion

TOKEN, DATABASE = "secret_notion_levqor_test", "db-tenant-billing"


@pytest.fixture
def local_notion(settings):
    server = LocalNotion(TOKEN, DATABASE).start()
    settings.NOTION_TOKEN, settings.NOTION_BILLING_DATABASE_ID = TOKEN, DATABASE
    settings.NOTION_API_BASE = server.url
    yield server
    server.stop()


def test_notion_summary_one_page_per_tenant_and_month_updated_not_duplicated(billing_on, make_tenant, local_notion):
    tenant, key = make_tenant(plan="core")
    client = client_for(key, tenant)
    wf = client.post("/api/workflows", {"name": "n"}, format="json").json()["id"]
    client.post(f"/api/workflows/{wf}/run", {}, format="json")
    from policy import quotas

    quotas.flush()
    first = notion.push_summaries()
    assert first["created"] >= 1 and first["updated"] == 0
    row = next(r for r in local_notion.rows() if r["Key"].startswith(tenant.slug + ":"))
    assert row["Name"] == tenant.name and row["Plan"] == "core" and row["Workflow runs"] == 1
    assert row["Status"] == "active" and row["API calls"] >= 2
    client.post(f"/api/workflows/{wf}/run", {}, format="json")
    quotas.flush()
    second = notion.push_summaries()
    assert second["created"] == 0 and second["updated"] == first["created"]
    rows = [r for r in local_notion.rows() if r["Key"].startswith(tenant.slug + ":")]
    assert len(rows) == 1 and rows[0]["Workflow runs"] == 2


def test_notion_off_without_settings_and_a_bad_token_is_a_clear_error(db, settings, local_notion):
    settings.NOTION_TOKEN = ""
    assert notion.push_summaries() == {"enabled": False} and local_notion.requests == []
    settings.NOTION_TOKEN = "secret_wrong"
    from tenants import services
    from tests.conftest import unique_slug

    services.tenant_create(name="N", slug=unique_slug("nt"), plan="core", actor="test")
    with pytest.raises(notion.NotionError, match="401"):
        notion.push_summaries()


@pytest.mark.django_db(transaction=True)
def test_stripe_pushes_signed_webhooks_to_a_running_levqor(billing_on, make_tenant, live_server, settings):
    tenant, key = make_tenant(plan="core")
    endpoint = stripe_api.client().v1.webhook_endpoints.create(params={
        "url": f"{live_server.url}/billing/stripe/webhook", "enabled_events": ["*"]})
    settings.STRIPE_WEBHOOK_SECRET = endpoint["secret"]
    billing = TenantBilling.dangerously_all_tenants.get(tenant=tenant)
    billing_on.change_subscription_price(billing.stripe_subscription_id, catalog.price_ids()["levqor_plan_pro_monthly"])
    assert billing_on.wait_for_deliveries(timeout=10)
    delivered = [d for d in billing_on.deliveries if d.event_type == "customer.subscription.updated"]
    assert delivered and all(d.status == 200 for d in delivered)
    assert client_for(key, tenant).get("/api/org").json()["plan"] == "pro"
    # The same events once more through the test client: duplicates, nothing changes.
    pushed = {d.event_id for d in billing_on.deliveries}
    answers = deliver_new_events(billing_on, {e["id"] for e in billing_on.objects("event")} - pushed)
    assert answers and all(a["outcome"] == "duplicate" for a in answers)


def test_staff_admin_shows_billing_state_read_only(billing_on, make_tenant):
    from django.contrib.auth import get_user_model

    tenant, _ = make_tenant(plan="core")
    staff = get_user_model().objects.create_superuser("billing-staff", "s@levqor.test", "x-long-pass-1")
    browser = Client()
    browser.force_login(staff)
    page = browser.get("/admin/tenants/tenantbilling/").content.decode()
    assert TenantBilling.dangerously_all_tenants.get(tenant=tenant).stripe_customer_id in page
    assert browser.get("/admin/billing/webhookevent/").status_code == 200
    assert browser.get("/admin/billing/meterreport/").status_code == 200
    assert browser.get("/admin/billing/meterreport/add/").status_code == 403
