"""Billing as platform staff and org admins meet it: signup makes a Stripe customer and
subscription, usage reaches Stripe's meters exactly once, drift is caught, and Stripe's
webhooks change plans and suspend or resume tenants. Everything runs through the real
stripe SDK against the local Stripe server; nothing of ours is patched."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from billing import catalog, usage
from billing.models import MeterReport, WebhookEvent
from compliance.models import Alert, AuditEvent
from levqor.faults import InjectedFault
from policy import quotas
from tenants import services
from tenants.models import Tenant, TenantBilling
from tests.billing.conftest import deliver_new_events, post_webhook, sign
from tests.conftest import client_for, unique_slug


def _billing(tenant) -> TenantBilling:
    return TenantBilling.dangerously_all_tenants.get(tenant=tenant)


def _customers(server, tenant_id) -> list[dict]:
    return [c for c in server.objects("customer") if c["metadata"].get("levqor_tenant_id") == str(tenant_id)]


def test_catalog_sync_is_idempotent_and_mirrored_in_dj_stripe(billing_on):
    from djstripe.models import Price, Product

    assert len(billing_on.objects("product")) == 6 and len(billing_on.objects("billing.meter")) == 3
    prices = billing_on.objects("price")
    assert sorted(p["lookup_key"] for p in prices) == sorted(
        [p.lookup_key for p in catalog.PLANS] + [m.lookup_key for m in catalog.METERED])
    again = catalog.sync_catalog()
    assert again["created"] == [] and again["updated"] == [] and len(again["unchanged"]) == 15
    assert len(billing_on.objects("price")) == 6  # nothing new at Stripe
    assert Product.objects.filter(id="levqor_plan_pro").exists()
    assert Price.objects.get(lookup_key="levqor_plan_pro_monthly").unit_amount == 19900


def test_signup_creates_customer_and_subscription(billing_on, api):
    slug = unique_slug("bill")
    response = api.post("/api/tenants", {"name": "Billed Co", "slug": slug, "plan": "pro",
                                         "admin_email": "owner@billed.test"}, format="json")
    assert response.status_code == 201, response.content
    tenant = Tenant.objects.get(slug=slug)
    billing = _billing(tenant)
    [customer] = _customers(billing_on, tenant.id)
    assert billing.stripe_customer_id == customer["id"] and customer["email"] == "owner@billed.test"
    [subscription] = [s for s in billing_on.objects("subscription") if s["customer"] == customer["id"]]
    assert billing.stripe_subscription_id == subscription["id"] and billing.status == "active"
    lookup_keys = sorted(i["price"]["lookup_key"] for i in subscription["items"]["data"])
    assert lookup_keys == sorted(["levqor_plan_pro_monthly", "levqor_usage_api_calls", "levqor_usage_workflow_runs",
                                  "levqor_usage_storage_gb"])
    summary = client_for(response.json()["api_key"], tenant).get("/api/org/billing").json()
    assert summary["configured"] and summary["status"] == "active" and summary["has_customer"]


@pytest.mark.parametrize("step", ["billing", "domain"])
def test_failure_after_step_5_leaves_no_stripe_customer(billing_on, settings, step):
    settings.LEVQOR_FAULTS = frozenset({f"provision.after:{step}"})
    slug = unique_slug("rbb")
    with pytest.raises(InjectedFault):
        services.tenant_create(name="Gone", slug=slug, plan="core", admin_email="o@gone.test", actor="test")
    assert not Tenant.objects.filter(slug=slug).exists()
    created = [c for c in billing_on.requests if c[0] == "POST" and c[1] == "/v1/customers"]
    assert len(created) == 1  # a customer was made, and then:
    assert billing_on.objects("customer") == []  # deleted (objects() leaves deleted customers out)
    assert all(s["status"] == "canceled" for s in billing_on.objects("subscription"))


def test_stripe_down_at_signup_is_a_clear_503_and_leaves_nothing(billing_on, api):
    billing_on.fail_next("/v1/subscriptions", status=500, count=1)
    slug = unique_slug("down")
    response = api.post("/api/tenants", {"name": "Down", "slug": slug, "plan": "core", "admin_email": "o@d.test"},
                        format="json")
    assert response.status_code == 503 and response.json()["error"]["code"] == "billing_unavailable"
    assert not Tenant.objects.filter(slug=slug).exists() and billing_on.objects("customer") == []


def test_upgrade_and_downgrade_by_webhook_change_limits_on_the_next_request(billing_on, make_tenant):
    tenant, key = make_tenant(plan="core")
    billing = _billing(tenant)
    prices = catalog.price_ids()
    client = client_for(key, tenant)
    assert client.get("/api/org").json()["limits"]["api_calls"] == 100000
    assert client.get("/api/org/policy/simulate?plan=core").status_code == 200
    seen: set[str] = {e["id"] for e in billing_on.objects("event")}

    billing_on.change_subscription_price(billing.stripe_subscription_id, prices["levqor_plan_pro_monthly"])
    [answer] = deliver_new_events(billing_on, seen)
    assert answer["type"] == "customer.subscription.updated" and "plan core -> pro" in answer["outcome"]
    org = client.get("/api/org").json()
    assert org["plan"] == "pro" and org["limits"]["api_calls"] == 1000000 and "sso" in org["features"]
    changed = AuditEvent.dangerously_all_tenants.filter(tenant_id=tenant.id, event="plan.changed").get()
    assert changed.actor == "stripe:webhook" and changed.metadata_json == {"from": "core", "to": "pro"}

    billing_on.change_subscription_price(billing.stripe_subscription_id, prices["levqor_plan_core_monthly"])
    deliver_new_events(billing_on, seen)
    assert client.get("/api/org").json()["limits"]["api_calls"] == 100000
    # dj-stripe's mirror (the staff admin's view) follows the same events.
    from djstripe.models import Subscription

    mirrored = Subscription.objects.get(id=billing.stripe_subscription_id)
    assert mirrored.customer_id == billing.stripe_customer_id and mirrored.status == "active"


def test_a_staff_plan_change_moves_the_stripe_subscription_and_the_next_webhook_keeps_it(
        billing_on, make_tenant, staff_key):
    """Staff change the plan through the API: the subscription's plan item moves to the new
    price at Stripe first, so the webhook Stripe then sends confirms the change instead of
    undoing it. Stripe failing refuses the change and leaves the plan as it was."""
    tenant, key = make_tenant(plan="core")
    billing = _billing(tenant)
    prices = catalog.price_ids()
    seen: set[str] = {e["id"] for e in billing_on.objects("event")}
    staff = client_for(staff_key)

    billing_on.fail_next("/v1/subscriptions", status=500, count=1)
    refused = staff.post(f"/api/tenants/{tenant.id}/plan", {"plan": "pro"}, format="json")
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "billing_unavailable"
    assert Tenant.objects.get(pk=tenant.pk).plan == "core"

    changed = staff.post(f"/api/tenants/{tenant.id}/plan", {"plan": "pro"}, format="json")
    assert changed.status_code == 200 and changed.json()["plan"] == "pro"
    subscription = next(s for s in billing_on.objects("subscription") if s["id"] == billing.stripe_subscription_id)
    plan_prices = {i["price"]["id"] for i in subscription["items"]["data"]}
    assert prices["levqor_plan_pro_monthly"] in plan_prices and prices["levqor_plan_core_monthly"] not in plan_prices
    deliver_new_events(billing_on, seen)  # customer.subscription.updated, now on pro
    assert Tenant.objects.get(pk=tenant.pk).plan == "pro"
    assert client_for(key, tenant).get("/api/org").json()["limits"]["api_calls"] == 1000000


def test_quota_follows_a_downgrade_in_real_time(billing_on, make_tenant, settings):
    """The spec's billing test: a tenant within the pro quota is over the core one the
    moment Stripe says it downgraded."""
    tenant, key = make_tenant(plan="pro")
    client = client_for(key, tenant)
    period = quotas.period_of()
    quotas.client().set(f"levqor:usage:{tenant.id}:api_calls:{period}", 150000)  # 15 % of pro, 150 % of core
    assert client.get("/api/workflows").status_code == 200
    seen: set[str] = {e["id"] for e in billing_on.objects("event")}
    billing_on.change_subscription_price(_billing(tenant).stripe_subscription_id,
                                         catalog.price_ids()["levqor_plan_core_monthly"])
    deliver_new_events(billing_on, seen)
    refused = client.get("/api/workflows")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "quota_exceeded"
    assert "100000" in refused.json()["error"]["message"] or "100000" in json.dumps(refused.json())


def _use(key, tenant, calls: int, runs: int) -> None:
    client = client_for(key, tenant)
    wf = client.post("/api/workflows", {"name": "metered"}, format="json").json()["id"]
    for _ in range(runs):
        assert client.post(f"/api/workflows/{wf}/run", {}, format="json").status_code == 201
    for _ in range(calls - runs - 1):
        assert client.get("/api/workflows").status_code == 200


def _stripe_totals(server, customer_id: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for event in server.objects("billing.meter_event"):
        if event["payload"]["stripe_customer_id"] == customer_id:
            totals[event["event_name"]] = totals.get(event["event_name"], 0) + float(event["payload"]["value"])
    return totals


def test_usage_sync_is_exact_and_idempotent_across_reruns(billing_on, make_tenant):
    tenant, key = make_tenant(plan="core")
    other, other_key = make_tenant(plan="core")
    customer = _billing(tenant).stripe_customer_id
    _use(key, tenant, calls=12, runs=3)
    _use(other_key, other, calls=5, runs=1)
    today = timezone.now().date()
    first = usage.sync_usage(window=today, tenant_ids=[tenant.id, other.id])
    assert first["failed"] == 0 and first["sent"] == 6  # two tenants x three meters
    ledger_calls = quotas.ledger_total(tenant.id, "api_calls", quotas.period_of())
    assert ledger_calls >= 12
    assert _stripe_totals(billing_on, customer) == {
        "levqor_api_calls": ledger_calls, "levqor_workflow_runs": 3, "levqor_storage_gb": 1}
    events_after_first = len(billing_on.objects("billing.meter_event"))
    again = usage.sync_usage(window=today, tenant_ids=[tenant.id, other.id])
    assert again["sent"] == 0 and again["skipped_sent"] == 6
    assert len(billing_on.objects("billing.meter_event")) == events_after_first

    # More usage, the next window: only the difference is sent; the totals still match.
    _use(key, tenant, calls=4, runs=2)
    usage.sync_usage(window=today + timedelta(days=1), tenant_ids=[tenant.id])
    totals = _stripe_totals(billing_on, customer)
    assert totals["levqor_workflow_runs"] == 5
    assert totals["levqor_api_calls"] == quotas.ledger_total(tenant.id, "api_calls", quotas.period_of())
    assert _billing(tenant).metered_usage_json["workflow_runs"]["reported"] == 5


def test_an_interrupted_sync_resends_the_same_identifiers_and_never_doubles(billing_on, make_tenant, settings):
    settings.LEVQOR_BILLING_SYNC_WORKERS = 1  # in catalog order: the api_calls event is the one that fails
    tenant, key = make_tenant(plan="core")
    customer = _billing(tenant).stripe_customer_id
    _use(key, tenant, calls=6, runs=2)
    today = timezone.now().date()
    billing_on.fail_next("/v1/billing/meter_events", status=500, count=1)
    broken = usage.sync_usage(window=today, tenant_ids=[tenant.id])
    assert broken["failed"] == 1 and broken["sent"] == 2
    assert list(MeterReport.dangerously_all_tenants.filter(tenant_id=tenant.id, status="pending").values_list(
        "metric", flat=True)) == ["api_calls"]
    # A crash after Stripe accepted an event but before we marked it sent:
    MeterReport.dangerously_all_tenants.filter(tenant_id=tenant.id, metric="workflow_runs").update(status="pending")
    healed = usage.sync_usage(window=today, tenant_ids=[tenant.id])
    assert healed["failed"] == 0 and healed["resent"] == 2
    assert MeterReport.dangerously_all_tenants.filter(tenant_id=tenant.id, status="pending").count() == 0
    totals = _stripe_totals(billing_on, customer)
    assert totals["levqor_workflow_runs"] == 2
    assert totals["levqor_api_calls"] == quotas.ledger_total(tenant.id, "api_calls", quotas.period_of())


def test_reconciliation_detects_an_injected_drift(billing_on, make_tenant):
    tenant, key = make_tenant(plan="core")
    _use(key, tenant, calls=5, runs=1)
    usage.sync_usage(window=timezone.now().date(), tenant_ids=[tenant.id])
    clean = usage.reconcile(tenant_ids=[tenant.id])
    assert clean["drifts"] == []
    # Someone (a second deployment, a script) reports usage behind the ledger's back.
    from billing import stripe_api

    stripe_api.client().v1.billing.meter_events.create(params={
        "event_name": "levqor_workflow_runs", "identifier": "rogue-1",
        "payload": {"stripe_customer_id": _billing(tenant).stripe_customer_id, "value": "7"}})
    drifted = usage.reconcile(tenant_ids=[tenant.id])
    assert [(d["metric"], d["stripe"], d["ledger"]) for d in drifted["drifts"]] == [("workflow_runs", 8.0, 1)]
    alert = Alert.objects.get(kind="billing.drift", tenant_id=tenant.id)
    assert alert.audience == "staff" and "Stripe has 8" in alert.message


def test_webhook_signature_failures_and_replays_are_refused(billing_on, make_tenant):
    tenant, _ = make_tenant(plan="core")
    event = {"id": "evt_sigtest", "type": "invoice.payment_failed", "created": 1, "data": {"object": {
        "id": "in_1", "object": "invoice", "customer": _billing(tenant).stripe_customer_id, "amount_due": 4900,
        "currency": "usd", "attempt_count": 1}}}
    payload = json.dumps(event)
    cases = {
        "signature_missing": None,
        "signature_invalid": sign(payload, secret="whsec_someone_else"),
        "signature_stale": sign(payload, at=int(timezone.now().timestamp()) - 3600),
    }
    for code, signature in cases.items():
        response = post_webhook(payload, signature)
        assert response.status_code == 400 and response.json()["error"]["code"] == code
    odd = post_webhook(payload, "t=\u00b2,v1=" + "0" * 64)  # "²" is a digit to isdigit(), not to int()
    assert odd.status_code == 400 and odd.json()["error"]["code"].startswith("signature_")
    tampered = post_webhook(payload.replace("4900", "1"), sign(payload))
    assert tampered.status_code == 400 and tampered.json()["error"]["code"] == "signature_invalid"
    assert not WebhookEvent.objects.exists() and _billing(tenant).status == "active"

    first = post_webhook(payload, sign(payload))
    assert first.status_code == 200 and "grace until" in first.json()["outcome"]
    second = post_webhook(payload, sign(payload))  # Stripe redelivers
    assert second.status_code == 200 and second.json()["outcome"] == "duplicate"
    assert AuditEvent.dangerously_all_tenants.filter(tenant_id=tenant.id, event="billing.payment_failed").count() == 1
    not_json = "not json"
    assert post_webhook(not_json, sign(not_json)).json()["error"]["code"] == "invalid_payload"


def test_payment_failure_grace_suspension_payment_and_resume(billing_on, make_tenant, settings):
    settings.LEVQOR_BILLING_GRACE_DAYS = 3
    tenant, key = make_tenant(plan="core")
    client = client_for(key, tenant)
    subscription = _billing(tenant).stripe_subscription_id
    seen: set[str] = {e["id"] for e in billing_on.objects("event")}

    billing_on.create_invoice(subscription, paid=False, amount_due=4900)
    deliver_new_events(billing_on, seen)
    billing = _billing(tenant)
    assert billing.status == "past_due" and billing.grace_until > timezone.now() + timedelta(days=2)
    assert client.get("/api/workflows").status_code == 200  # still working during grace
    assert Alert.objects.filter(kind="billing.payment_failed", tenant_id=tenant.id, resolved_at__isnull=True).exists()

    from billing.webhooks import enforce_grace

    assert enforce_grace() == []  # grace not over yet
    TenantBilling.dangerously_all_tenants.filter(pk=billing.pk).update(grace_until=timezone.now() - timedelta(minutes=1))
    assert enforce_grace() == [tenant.slug]
    refused = client.get("/api/workflows")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "tenant_suspended"

    billing_on.create_invoice(subscription, paid=True, amount_due=4900)
    answers = deliver_new_events(billing_on, seen)
    assert any("tenant resumed" in a["outcome"] for a in answers)
    assert client.get("/api/workflows").status_code == 200
    billing = _billing(tenant)
    assert billing.status == "active" and billing.grace_until is None and not billing.suspended_for_billing
    events = list(AuditEvent.dangerously_all_tenants.filter(tenant_id=tenant.id).order_by("seq").values_list(
        "event", flat=True))
    for name in ("billing.payment_failed", "tenant.suspended", "billing.payment_succeeded", "tenant.resumed"):
        assert name in events
    assert events.index("billing.payment_failed") < events.index("tenant.suspended") < events.index("tenant.resumed")
    assert not Alert.objects.filter(kind="billing.payment_failed", tenant_id=tenant.id, resolved_at__isnull=True).exists()


def test_customer_portal_from_the_plan_page_and_the_api(billing_on, make_tenant):
    from django.contrib.auth import get_user_model

    from tenants.models import TenantUser

    tenant, key = make_tenant(plan="core")
    user = get_user_model().objects.create_user(username="admin@p.test", email="admin@p.test", password="x-long-pass-1")
    TenantUser(tenant=tenant, user=user, role="admin").save(force_insert=True)
    browser = Client()
    browser.force_login(user)
    page = browser.get("/org/settings/plan").content.decode()
    assert 'id="billing-status">active' in page and "manage-billing" in page
    response = browser.post("/org/settings/plan/manage")
    assert response.status_code == 302 and response["Location"].startswith(billing_on.url + "/_local/portal/")
    [session] = billing_on.objects("billing_portal.session")
    assert session["customer"] == _billing(tenant).stripe_customer_id
    assert session["return_url"].endswith("/org/settings/plan")
    assert AuditEvent.dangerously_all_tenants.filter(tenant_id=tenant.id, event="billing.portal_opened").exists()

    api = client_for(key, tenant).post("/api/org/billing/portal-session")
    assert api.status_code == 201 and api.json()["url"].startswith(billing_on.url)
    viewer_key = client_for(key, tenant).post("/api/org/keys", {"role": "viewer", "name": "v"}, format="json").json()
    denied = client_for(viewer_key["api_key"], tenant).post("/api/org/billing/portal-session")
    assert denied.status_code == 403 and "plan:change" in denied.json()["error"]["details"]["rationale"]


def test_billing_off_everything_else_works_and_the_portal_says_so(make_tenant, settings):
    settings.STRIPE_SECRET_KEY = ""
    tenant, key = make_tenant(plan="core")
    assert _billing(tenant).status == "none"
    client = client_for(key, tenant)
    assert client.get("/api/org/billing").json()["configured"] is False
    refused = client.post("/api/org/billing/portal-session")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "billing_not_configured"
    assert usage.sync_usage() == {"enabled": False}
    from django.contrib.auth import get_user_model

    from tenants.models import TenantUser

    user = get_user_model().objects.create_user(username="o@off.test", email="o@off.test", password="x-long-pass-1")
    TenantUser(tenant=tenant, user=user, role="owner").save(force_insert=True)
    browser = Client()
    browser.force_login(user)
    assert "Billing is not configured" in browser.get("/org/settings/plan").content.decode()


def test_management_commands_sync_usage_with_progress_and_reconcile(billing_on, make_tenant, capsys):
    tenant, key = make_tenant(plan="core")
    _use(key, tenant, calls=3, runs=1)
    call_command("billing_sync_usage", "--date", timezone.now().date().isoformat(), "--tenant", str(tenant.id),
                 "--reconcile")
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.strip().splitlines()]
    assert lines[0]["sent"] == 3 and lines[1]["drifts"] == []
    assert "meter events" in err and "3/3" in err
    call_command("billing_sync_catalog")
    assert "0 created, 0 updated, 15 unchanged" in capsys.readouterr().out
