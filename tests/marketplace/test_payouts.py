"""Partner payouts as staff and partners see them: transfers at Stripe that add up to
sales minus refunds minus the platform fee, to the cent; a re-run pays nothing twice;
a lost answer is adopted, not repaid; drift is alerted."""
from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from billing import stripe_api
from compliance.models import Alert
from marketplace import payouts, services
from marketplace.models import Partner, Payout, TenantOrder
from tests.billing.conftest import deliver_new_events
from tests.conftest import client_for
from tests.marketplace.conftest import buy, pay
from tenants.context import tenant_context


def _transfers(server, partner) -> list[dict]:
    return [t for t in server.objects("transfer") if t["destination"] == partner.stripe_account_id]


def _run(period) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("marketplace_payouts", "--period", period, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def _this_period() -> str:
    return timezone.now().strftime("%Y-%m")


def _last_month_day():
    return timezone.now().replace(day=1, hour=12) - timedelta(days=10)


@pytest.fixture
def second_partner(billing_on):
    account = stripe_api.call(stripe_api.client().v1.accounts.create, params={"type": "express"})
    return Partner.objects.create(name="Ledgerly", slug=f"ledgerly-{account['id'][-6:].lower()}",
                                  stripe_account_id=account["id"], fee_bps=1337)


def test_payouts_add_up_to_sales_minus_fees_exactly_and_rerunning_pays_nothing_twice(
        billing_on, make_tenant, make_listing, partner, second_partner, delivered):
    a, key_a = make_tenant()
    b, key_b = make_tenant()
    c, key_c = make_tenant()
    l1, l2 = make_listing(price_cents=4999), make_listing(price_cents=1234, features=["x"], packs=[])
    l3 = make_listing(price_cents=777, features=["y"], packs=[], owner=second_partner)
    paid = {}
    for key, tenant, listing in [(key_a, a, l1), (key_a, a, l2), (key_a, a, l3), (key_b, b, l1), (key_b, b, l3),
                                 (key_c, c, l2)]:
        order = buy(key, tenant, listing.pk).json()
        pay(billing_on, order, delivered)
        paid[(tenant.slug, listing.pk)] = order["id"]
    unpaid = buy(key_c, c, l1.pk).json()  # pending: not a sale
    refunded = paid[(a.slug, l2.pk)]
    assert client_for(key_a, a).post(f"/api/marketplace/orders/{refunded}/cancel").json()["status"] == "refunded"
    # These sales and the refund happened last month.
    TenantOrder.dangerously_all_tenants.filter(paid_at__isnull=False).update(paid_at=_last_month_day())
    TenantOrder.dangerously_all_tenants.filter(pk=refunded).update(closed_at=_last_month_day())
    last_period = _last_month_day().strftime("%Y-%m")

    out, err = _run(last_period)
    assert "[" in err and "partners" in err  # the progress bar
    assert "2 sent" in out and "0 drift" in out

    # partner: sales 4999 × 2 + 1234 × 2, refund 1234; fee 20 % rounded down.
    p1_gross = 4999 * 2 + 1234 * 2 - 1234
    p1_fee = p1_gross * 2000 // 10000
    # second partner: 777 × 2 at 13.37 %: 207.77 -> 207, not 208 (the fraction stays with the partner).
    p2_gross = 777 * 2
    p2_fee = p2_gross * 1337 // 10000
    assert (p1_fee, p2_fee) == (2246, 207)
    [t1] = _transfers(billing_on, partner)
    [t2] = _transfers(billing_on, second_partner)
    assert t1["amount"] == p1_gross - p1_fee == 8986 and t1["currency"] == "usd"
    assert t2["amount"] == p2_gross - p2_fee == 1347
    for p, gross, fee, transfer in [(partner, p1_gross, p1_fee, t1), (second_partner, p2_gross, p2_fee, t2)]:
        row = Payout.objects.get(partner=p, period=last_period)
        assert (row.gross_cents, row.fee_cents, row.net_cents) == (gross, fee, gross - fee)
        assert row.net_cents + row.fee_cents == row.sales_cents - row.refunds_cents
        assert row.status == "sent" and row.stripe_transfer_id == transfer["id"] and row.reconciled_at
        assert transfer["transfer_group"] == row.transfer_group
    assert TenantOrder.dangerously_all_tenants.get(pk=unpaid["id"]).sale_payout is None

    # Re-running the period pays nothing twice.
    out, _ = _run(last_period)
    assert "0 sent, 2 already sent" in out
    assert len(billing_on.objects("transfer")) == 2

    # This month: B's first purchase is refunded (more than the partner sold since), C buys from the second.
    b_l1 = paid[(b.slug, l1.pk)]
    with tenant_context(b):  # staff refund (the admin action's path), past the tenant's refund window
        services.order_refund(order=TenantOrder.objects.get(pk=b_l1), actor="staff:test")
    order = buy(key_c, c, l3.pk).json()
    pay(billing_on, order, delivered)
    deliver_new_events(billing_on, delivered)
    out, _ = _run(_this_period())
    assert "nothing_due" in out
    assert len(_transfers(billing_on, partner)) == 1  # a negative month transfers nothing ...
    assert [r.pk for r in payouts.unsettled(partner)] == [b_l1]  # ... and carries the refund forward
    [_, t3] = sorted(_transfers(billing_on, second_partner), key=lambda t: t["created"])
    assert t3["amount"] == 777 - 777 * 1337 // 10000 == 674
    # Over every payout, each partner received exactly its settled sales minus refunds minus fees.
    for p in (partner, second_partner):
        totals = payouts.expected_net(p)["usd"]
        assert sum(t["amount"] for t in _transfers(billing_on, p)) == totals["net"] == (
            totals["sales"] - totals["refunds"] - totals["fee"])


def test_each_paid_month_of_a_recurring_module_is_paid_out_once(billing_on, make_tenant, make_listing, partner,
                                                                 delivered):
    """The partner of a monthly module is paid for every month the tenant pays, not only the
    first: each later invoice of the module's subscription is a sale, counted once however
    often Stripe delivers it."""
    import json

    from marketplace.models import OrderRenewal
    from tests.billing.conftest import post_webhook, sign

    a, key_a = make_tenant()
    order = buy(key_a, a, make_listing(price_cents=900, billing="recurring", features=["slack_alerts"],
                                       packs=[]).pk).json()
    pay(billing_on, order, delivered)
    module_subscription = TenantOrder.dangerously_all_tenants.get(pk=order["id"]).stripe_subscription_id
    assert not OrderRenewal.objects.exists()  # the first invoice is the order's own price

    billing_on.create_invoice(module_subscription, paid=True)  # the second month
    deliver_new_events(billing_on, delivered)
    [renewal] = OrderRenewal.objects.all()
    assert (renewal.order_id, renewal.amount_cents, renewal.partner_id) == (order["id"], 900, partner.pk)
    paid_event = [e for e in billing_on.objects("event") if e["type"] == "invoice.paid"][-1]
    replay = json.dumps({**paid_event, "id": paid_event["id"] + "x"})  # the same invoice, another delivery
    assert post_webhook(replay, sign(replay)).status_code == 200
    assert OrderRenewal.objects.count() == 1

    out, _ = _run(_this_period())
    assert "1 sent" in out
    [transfer] = _transfers(billing_on, partner)
    gross = 900 * 2
    assert transfer["amount"] == gross - gross * 2000 // 10000 == 1440
    assert Payout.objects.get(partner=partner).sales_cents == gross
    from marketplace.selectors import sales_report  # the staff dashboard's figures

    [row] = [r for r in sales_report(partner_id=partner.pk)["rows"] if r["tenant"] == a.slug]
    assert (row["orders"], row["sales_cents"]) == (2, gross)


def test_a_lost_answer_is_adopted_not_paid_again(billing_on, make_tenant, make_listing, partner, delivered):
    a, key_a = make_tenant()
    pay(billing_on, buy(key_a, a, make_listing(price_cents=10000).pk).json(), delivered)
    billing_on.fail_next("/v1/transfers", status=500)
    with pytest.raises(CommandError):
        _run(_this_period())
    row = Payout.objects.get(partner=partner)
    assert row.status == "failed" and billing_on.objects("transfer") == []
    # The transfer did reach Stripe after all (the answer was lost on the way back):
    stripe_api.call(stripe_api.client().v1.transfers.create, params={
        "amount": row.net_cents, "currency": "usd", "destination": partner.stripe_account_id,
        "transfer_group": row.transfer_group, "metadata": {"levqor_payout": str(row.pk)}})
    out, _ = _run(_this_period())
    assert "1 sent" in out
    [transfer] = billing_on.objects("transfer")
    row.refresh_from_db()
    assert row.status == "sent" and row.stripe_transfer_id == transfer["id"] and transfer["amount"] == 8000


def test_a_partner_without_a_connect_account_waits(billing_on, make_tenant, make_listing, partner, delivered):
    a, key_a = make_tenant()
    pay(billing_on, buy(key_a, a, make_listing().pk).json(), delivered)
    Partner.objects.filter(pk=partner.pk).update(stripe_account_id="")
    with pytest.raises(CommandError):
        _run(_this_period())
    assert Payout.objects.get(partner=partner).error == "the partner has no Stripe Connect account"
    Partner.objects.filter(pk=partner.pk).update(stripe_account_id=partner.stripe_account_id)
    assert "1 sent" in _run(_this_period())[0]
    assert [t["amount"] for t in billing_on.objects("transfer")] == [4900 - 980]


def test_reconciliation_alerts_staff_on_drift(billing_on, make_tenant, make_listing, partner, delivered):
    a, key_a = make_tenant()
    pay(billing_on, buy(key_a, a, make_listing().pk).json(), delivered)
    _run(_this_period())
    # Someone pays the partner from the dashboard, claiming to be one of our payouts.
    stripe_api.call(stripe_api.client().v1.transfers.create, params={
        "amount": 123, "currency": "usd", "destination": partner.stripe_account_id,
        "metadata": {"levqor_payout": "999999"}})
    report = payouts.reconcile()
    assert report["matched"] == 1 and len(report["drift"]) == 1
    alert = Alert.objects.get(kind="marketplace.payout_drift")
    assert alert.audience == "staff" and "matches no payout" in alert.message


def test_bad_periods_are_refused(billing_on):
    for period in ("2026-13", "26-01", "2026-1", "next", "2999-01"):
        with pytest.raises(CommandError):
            _run(period)
