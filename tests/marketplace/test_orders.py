"""Buying a module as an org admin meets it: one order per Buy, paid through Stripe
Checkout, enabled for the buying tenant only (feature flag and pack rows), nothing on a
failed payment, disabled again by a refund or a cancellation."""
from __future__ import annotations

import threading

import pytest
from django.db import connections

from marketplace.models import TenantOrder
from tenants.models import TenantBilling
from tests.billing.conftest import deliver_new_events
from tests.conftest import client_for
from tests.marketplace.conftest import buy, events_of, features_of, pack_rows, pay


@pytest.mark.parametrize("plan", ["core", "enterprise"])  # schema per tenant, database per tenant
def test_buying_in_a_enables_the_module_in_a_and_not_in_b(billing_on, make_tenant, make_listing, delivered, plan):
    a, key_a = make_tenant(plan=plan)
    b, key_b = make_tenant(plan=plan)
    listing = make_listing(features=["crm"], packs=["crm-sync"])

    response = buy(key_a, a, listing.pk)
    assert response.status_code == 201, response.content
    order = response.json()
    assert order["status"] == "pending" and order["checkout_url"].startswith(billing_on.url)
    [session] = [s for s in billing_on.objects("checkout.session") if s["id"] in order["checkout_url"]]
    assert session["customer"] == TenantBilling.dangerously_all_tenants.get(tenant=a).stripe_customer_id
    assert session["amount_total"] == 4900 and session["mode"] == "payment"
    # Pending is not owned: nothing is enabled before Stripe confirms the payment.
    assert "crm" not in features_of(key_a, a) and pack_rows(a, "crm-sync") == 0

    answers = pay(billing_on, order, delivered)
    assert any(a_["type"] == "checkout.session.completed" and "enabled" in a_["outcome"] for a_ in answers), answers

    assert "crm" in features_of(key_a, a)
    assert "crm" not in features_of(key_b, b)
    assert pack_rows(a, "crm-sync") == 2
    assert pack_rows(b, "crm-sync") == 0
    listed_a = {row["id"]: row for row in client_for(key_a, a).get("/api/marketplace/listings").json()["results"]}
    listed_b = {row["id"]: row for row in client_for(key_b, b).get("/api/marketplace/listings").json()["results"]}
    assert listed_a[listing.pk]["owned"] and not listed_b[listing.pk]["owned"]
    assert client_for(key_a, a).get(f"/api/marketplace/orders/{order['id']}").json()["status"] == "paid"
    assert client_for(key_b, b).get(f"/api/marketplace/orders/{order['id']}").status_code == 404
    assert client_for(key_b, b).post(f"/api/marketplace/orders/{order['id']}/cancel").status_code == 404
    assert client_for(key_b, b).get("/api/marketplace/orders").json()["results"] == []
    assert events_of(a) == ["marketplace.order_created", "marketplace.order_paid", "marketplace.module_enabled"]
    assert events_of(b) == []
    # Buying it again is refused: it is owned.
    again = buy(key_a, a, listing.pk)
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_owned"


def test_a_redelivered_payment_event_changes_nothing(billing_on, make_tenant, make_listing, delivered):
    from tests.billing.conftest import post_webhook, sign
    import json

    a, key_a = make_tenant()
    order = buy(key_a, a, make_listing().pk).json()
    pay(billing_on, order, delivered)
    [completed] = [e for e in billing_on.objects("event") if e["type"] == "checkout.session.completed"]
    payload = json.dumps(completed)
    assert post_webhook(payload, sign(payload)).json()["outcome"] == "duplicate"
    assert events_of(a).count("marketplace.module_enabled") == 1


def test_a_failed_payment_enables_nothing(billing_on, make_tenant, make_listing, delivered):
    a, key_a = make_tenant()
    listing = make_listing(features=["crm"], packs=["crm-sync"])
    order = buy(key_a, a, listing.pk).json()
    session = TenantOrder.dangerously_all_tenants.get(pk=order["id"]).stripe_checkout_session_id

    billing_on.fail_checkout_payment(session, decline_code="insufficient_funds")
    answers = deliver_new_events(billing_on, delivered)
    assert any(x["type"] == "payment_intent.payment_failed" and "failed" in x["outcome"] for x in answers), answers

    shown = client_for(key_a, a).get(f"/api/marketplace/orders/{order['id']}").json()
    assert shown["status"] == "failed" and "insufficient_funds" in shown["status_reason"]
    assert "crm" not in features_of(key_a, a)
    assert pack_rows(a, "crm-sync") == 0
    assert "marketplace.module_enabled" not in events_of(a)
    assert "marketplace.order_failed" in events_of(a)
    # The buyer may try again: a new order and a new checkout.
    retry = buy(key_a, a, listing.pk)
    assert retry.status_code == 201 and retry.json()["id"] != order["id"]


def test_an_expired_checkout_cancels_the_order_and_enables_nothing(billing_on, make_tenant, make_listing, delivered):
    a, key_a = make_tenant()
    order = buy(key_a, a, make_listing().pk).json()
    billing_on.expire_checkout(TenantOrder.dangerously_all_tenants.get(pk=order["id"]).stripe_checkout_session_id)
    deliver_new_events(billing_on, delivered)
    shown = client_for(key_a, a).get(f"/api/marketplace/orders/{order['id']}").json()
    assert shown["status"] == "canceled" and shown["checkout_url"] is None
    assert "crm" not in features_of(key_a, a)


def test_refund_disables_the_module(billing_on, make_tenant, make_listing, delivered):
    a, key_a = make_tenant()
    b, key_b = make_tenant()
    listing = make_listing(features=["crm"], packs=["crm-sync"])
    order_a = buy(key_a, a, listing.pk).json()
    order_b = buy(key_b, b, listing.pk).json()
    pay(billing_on, order_a, delivered)
    pay(billing_on, order_b, delivered)
    assert pack_rows(a, "crm-sync") == 2 and pack_rows(b, "crm-sync") == 2

    response = client_for(key_a, a).post(f"/api/marketplace/orders/{order_a['id']}/cancel")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "refunded"
    [refund] = billing_on.objects("refund")
    assert refund["amount"] == 4900 and refund["payment_intent"] == TenantOrder.dangerously_all_tenants.get(
        pk=order_a["id"]).stripe_payment_intent_id
    # Stripe's charge.refunded arrives after; the order is already refunded, nothing moves twice.
    answers = deliver_new_events(billing_on, delivered)
    assert any(x["type"] == "charge.refunded" and "already refunded" in x["outcome"] for x in answers), answers

    assert "crm" not in features_of(key_a, a) and pack_rows(a, "crm-sync") == 0
    assert "crm" in features_of(key_b, b) and pack_rows(b, "crm-sync") == 2  # B keeps what it paid for
    assert events_of(a)[-2:] == ["marketplace.order_refunded", "marketplace.module_disabled"]
    again = client_for(key_a, a).post(f"/api/marketplace/orders/{order_a['id']}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "invalid_state"


def test_a_refund_made_in_stripes_dashboard_disables_the_module(billing_on, make_tenant, make_listing, delivered):
    from billing import stripe_api

    a, key_a = make_tenant()
    order = buy(key_a, a, make_listing().pk).json()
    pay(billing_on, order, delivered)
    intent = TenantOrder.dangerously_all_tenants.get(pk=order["id"]).stripe_payment_intent_id
    # A partial refund leaves the module on; refunding the rest turns it off.
    stripe_api.call(stripe_api.client().v1.refunds.create, params={"payment_intent": intent, "amount": 900})
    deliver_new_events(billing_on, delivered)
    assert "crm" in features_of(key_a, a)
    stripe_api.call(stripe_api.client().v1.refunds.create, params={"payment_intent": intent})
    deliver_new_events(billing_on, delivered)
    assert "crm" not in features_of(key_a, a) and pack_rows(a, "crm-sync") == 0
    assert TenantOrder.dangerously_all_tenants.get(pk=order["id"]).refunded_cents == 4900


def test_the_refund_window_closes(billing_on, settings, make_tenant, make_listing, delivered):
    settings.LEVQOR_MARKETPLACE_REFUND_DAYS = 0
    a, key_a = make_tenant()
    order = buy(key_a, a, make_listing().pk).json()
    pay(billing_on, order, delivered)
    response = client_for(key_a, a).post(f"/api/marketplace/orders/{order['id']}/cancel")
    assert response.status_code == 409 and response.json()["error"]["code"] == "refund_window_passed"
    assert "crm" in features_of(key_a, a) and billing_on.objects("refund") == []


def test_canceling_a_pending_order_expires_its_checkout(billing_on, make_tenant, make_listing, delivered):
    a, key_a = make_tenant()
    order = buy(key_a, a, make_listing().pk).json()
    response = client_for(key_a, a).post(f"/api/marketplace/orders/{order['id']}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "canceled"
    [session] = billing_on.objects("checkout.session")
    assert session["status"] == "expired"
    answers = deliver_new_events(billing_on, delivered)
    assert any(x["type"] == "checkout.session.expired" for x in answers)


def test_a_recurring_module_is_its_own_subscription_and_canceling_ends_it(billing_on, make_tenant, make_listing,
                                                                         delivered):
    a, key_a = make_tenant(plan="pro")
    billing = TenantBilling.dangerously_all_tenants.get(tenant=a)
    plan_subscription = billing.stripe_subscription_id
    listing = make_listing(price_cents=900, features=["slack_alerts"], packs=["slack-alerts"], billing="recurring")
    order = buy(key_a, a, listing.pk).json()
    pay(billing_on, order, delivered)
    row = TenantOrder.dangerously_all_tenants.get(pk=order["id"])
    assert row.status == "paid" and row.stripe_subscription_id and row.stripe_subscription_id != plan_subscription
    assert "slack_alerts" in features_of(key_a, a) and pack_rows(a, "slack-alerts") == 1
    billing.refresh_from_db()
    a.refresh_from_db()
    assert billing.stripe_subscription_id == plan_subscription and a.plan == "pro"  # the plan is untouched

    response = client_for(key_a, a).post(f"/api/marketplace/orders/{order['id']}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "canceled"
    [sub] = [s for s in billing_on.objects("subscription") if s["id"] == row.stripe_subscription_id]
    assert sub["status"] == "canceled"
    deliver_new_events(billing_on, delivered)
    assert "slack_alerts" not in features_of(key_a, a) and pack_rows(a, "slack-alerts") == 0
    billing.refresh_from_db()
    assert billing.status == "active" and billing.payment_failed_at is None  # no grace period started


def test_a_modules_invoices_never_move_the_plans_billing_state(billing_on, make_tenant, make_listing, delivered):
    """A module's renewal failing does not start the organization's grace period (or lead to
    its suspension), and paying a module's invoice does not end a grace period the plan's
    failed payment started."""
    a, key_a = make_tenant(plan="pro")
    billing = TenantBilling.dangerously_all_tenants.get(tenant=a)
    order = buy(key_a, a, make_listing(price_cents=900, features=["slack_alerts"], billing="recurring").pk).json()
    pay(billing_on, order, delivered)
    module_subscription = TenantOrder.dangerously_all_tenants.get(pk=order["id"]).stripe_subscription_id

    billing_on.create_invoice(module_subscription, paid=False)
    deliver_new_events(billing_on, delivered)
    billing.refresh_from_db()
    assert billing.status == "active" and billing.payment_failed_at is None and billing.grace_until is None

    billing_on.create_invoice(billing.stripe_subscription_id, paid=False)  # the plan's payment fails
    deliver_new_events(billing_on, delivered)
    billing.refresh_from_db()
    assert billing.status == "past_due" and billing.grace_until is not None
    billing_on.create_invoice(module_subscription, paid=True)  # a module paid: the plan is still unpaid
    deliver_new_events(billing_on, delivered)
    billing.refresh_from_db()
    assert billing.status == "past_due" and billing.grace_until is not None


def test_two_modules_sharing_a_pack_keep_it_until_both_are_gone(billing_on, make_tenant, make_listing, delivered):
    a, key_a = make_tenant()
    first = buy(key_a, a, make_listing(features=["crm"], packs=["crm-sync"]).pk).json()
    second = buy(key_a, a, make_listing(features=["crm_pro"], packs=["crm-sync"]).pk).json()
    pay(billing_on, first, delivered)
    pay(billing_on, second, delivered)
    client_for(key_a, a).post(f"/api/marketplace/orders/{first['id']}/cancel")
    assert pack_rows(a, "crm-sync") == 2 and features_of(key_a, a).count("crm_pro") == 1
    assert "crm" not in features_of(key_a, a)


@pytest.mark.django_db(transaction=True)
def test_concurrent_double_click_buys_create_one_order(billing_on, make_tenant, make_listing):
    a, key_a = make_tenant()
    listing = make_listing()
    clicks = 4
    barrier = threading.Barrier(clicks)
    answers: list = [None] * clicks

    def click(i):
        try:
            barrier.wait()
            answers[i] = buy(key_a, a, listing.pk)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=click, args=(i,)) for i in range(clicks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] * (clicks - 1) + [201], [r.content for r in answers]
    assert len({r.json()["id"] for r in answers}) == 1
    assert len({r.json()["checkout_url"] for r in answers}) == 1
    assert TenantOrder.dangerously_all_tenants.filter(tenant=a).count() == 1
    assert len(billing_on.objects("checkout.session")) == 1
    assert events_of(a) == ["marketplace.order_created"]


def test_an_idempotency_key_returns_the_same_order(billing_on, make_tenant, make_listing):
    a, key_a = make_tenant()
    listing, other = make_listing(), make_listing()
    first = buy(key_a, a, listing.pk, HTTP_IDEMPOTENCY_KEY="buy-1")
    second = buy(key_a, a, listing.pk, HTTP_IDEMPOTENCY_KEY="buy-1")
    assert (first.status_code, second.status_code) == (201, 200) and first.json()["id"] == second.json()["id"]
    reused = buy(key_a, a, other.pk, HTTP_IDEMPOTENCY_KEY="buy-1")
    assert reused.status_code == 409 and reused.json()["error"]["code"] == "idempotency_key_reused"


def test_stripe_down_while_ordering_is_503_and_leaves_no_order(billing_on, make_tenant, make_listing):
    a, key_a = make_tenant()
    listing = make_listing()
    billing_on.fail_next("/v1/checkout/sessions", status=500)
    response = buy(key_a, a, listing.pk)
    assert response.status_code == 503 and response.json()["error"]["code"] == "billing_unavailable"
    assert TenantOrder.dangerously_all_tenants.filter(tenant=a).count() == 0
    assert events_of(a) == []
    assert buy(key_a, a, listing.pk).status_code == 201  # and the next click works


def test_a_lost_expiry_webhook_does_not_block_buying_again(billing_on, make_tenant, make_listing):
    from datetime import timedelta

    from django.utils import timezone

    a, key_a = make_tenant()
    listing = make_listing()
    first = buy(key_a, a, listing.pk).json()
    row = TenantOrder.dangerously_all_tenants.get(pk=first["id"])
    billing_on.expire_checkout(row.stripe_checkout_session_id)  # ... and the webhook never arrives
    assert buy(key_a, a, listing.pk).json()["id"] == first["id"]  # within 24 hours: the same order
    TenantOrder.dangerously_all_tenants.filter(pk=row.pk).update(ts=timezone.now() - timedelta(hours=25))
    again = buy(key_a, a, listing.pk)
    assert again.status_code == 201 and again.json()["id"] != first["id"]
    row.refresh_from_db()
    assert row.status == "canceled" and row.status_reason == "checkout expired unpaid"
