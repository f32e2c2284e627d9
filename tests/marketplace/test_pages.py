"""The /marketplace portal page as an org admin uses it, the staff partner dashboard and
the staff admin."""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.test import Client

from marketplace.models import Listing, TenantOrder
from tenants.models import TenantUser
from tests.marketplace.conftest import pay


def _member(tenant, role, email):
    user = get_user_model().objects.create_user(username=email, email=email, password="a-long-pass-123")
    TenantUser(tenant=tenant, user=user, role=role).save(force_insert=True)
    client = Client()
    client.force_login(user)
    return client


def test_an_admin_buys_from_the_portal_and_sees_the_module_owned(billing_on, make_tenant, make_listing, delivered):
    tenant, _ = make_tenant()
    listing = make_listing(features=["crm"])
    admin = _member(tenant, "admin", "admin@buyer.test")
    page = admin.get("/marketplace").content.decode()
    assert listing.name in page and "49.00 USD" in page and 'class="buy"' in page and "payments-off" not in page
    assert 'href="/marketplace"' in page  # the nav link

    response = admin.post("/marketplace/buy", {"listing_id": listing.pk})
    assert response.status_code == 302 and response.url.startswith(f"{billing_on.url}/_local/checkout/cs_test_")
    order = TenantOrder.dangerously_all_tenants.get(tenant=tenant)
    assert order.created_by == "user:admin@buyer.test"
    # Clicking Buy again while it is pending opens the same checkout.
    assert admin.post("/marketplace/buy", {"listing_id": listing.pk}).url == response.url
    pay(billing_on, {"id": order.pk}, delivered)
    page = admin.get("/marketplace?checkout=success").content.decode()
    assert "owned" in page and "Payment received by Stripe" in page and ">crm<" in page
    assert "Refund" in page


def test_a_viewer_may_look_but_not_buy(billing_on, make_tenant, make_listing):
    tenant, _ = make_tenant()
    listing = make_listing()
    viewer = _member(tenant, "viewer", "viewer@buyer.test")
    page = viewer.get("/marketplace").content.decode()
    assert listing.name in page and "role viewer lacks marketplace:order" in page and "disabled" in page
    denied = viewer.post("/marketplace/buy", {"listing_id": listing.pk})
    assert denied.status_code == 403 and not TenantOrder.dangerously_all_tenants.filter(tenant=tenant).exists()


def test_payments_off_says_so(make_tenant, make_listing, settings):
    tenant, _ = make_tenant()
    make_listing()
    settings.STRIPE_SECRET_KEY = ""
    owner = _member(tenant, "owner", "owner@buyer.test")
    page = owner.get("/marketplace").content.decode()
    assert 'id="payments-off"' in page and "Payments are not configured" in page
    follow = owner.post("/marketplace/buy", {"listing_id": Listing.objects.get().pk}, follow=True)
    assert "Payments are not configured" in follow.content.decode()


def test_staff_dashboard_shows_sales_by_tenant_and_period_with_a_chart(billing_on, make_tenant, make_listing,
                                                                      partner, delivered):
    from tests.marketplace.conftest import buy

    a, key_a = make_tenant()
    b, key_b = make_tenant()
    listing = make_listing(price_cents=2500)
    for key, tenant in ((key_a, a), (key_b, b)):
        pay(billing_on, buy(key, tenant, listing.pk).json(), delivered)
    staff_user = get_user_model().objects.create_superuser(username="staff", email="s@l.test", password="pw-12345678")
    staff = Client()
    staff.force_login(staff_user)
    page = staff.get(f"/staff/marketplace?partner={partner.pk}").content.decode()
    assert "<svg" in page and "Net marketplace sales per month" in page
    assert a.slug in page and b.slug in page and "2,500" in page
    assert staff.get("/staff/marketplace?partner=x").status_code == 400
    assert Client().get("/staff/marketplace").status_code == 302  # staff only
    # The admin: orders are read-only records; partners and listings are edited there.
    order = TenantOrder.dangerously_all_tenants.filter(tenant=a).get()
    assert staff.get("/admin/marketplace/tenantorder/").status_code == 200
    assert staff.post(f"/admin/marketplace/tenantorder/{order.pk}/change/", {"status": "refunded"}).status_code == 403
    assert staff.get(f"/admin/marketplace/listing/{listing.pk}/change/").status_code == 200
    refund = staff.post("/admin/marketplace/tenantorder/", {"action": "refund", "_selected_action": [order.pk]})
    assert refund.status_code == 302
    order.refresh_from_db()
    assert order.status == "refunded" and len(billing_on.objects("refund")) == 1


def test_seed_demo_is_idempotent(billing_on):
    from django.core.management import call_command

    from marketplace.models import Partner

    call_command("marketplace_seed_demo", stdout=open("/dev/null", "w"))
    call_command("marketplace_seed_demo", stdout=open("/dev/null", "w"))
    assert Partner.objects.count() == 2 and Listing.objects.count() == 3
    assert all(p.stripe_account_id.startswith("acct_") for p in Partner.objects.all())
    assert len([a for a in billing_on.objects("account") if a["type"] == "express"]) == 2
    for listing in Listing.objects.all():
        listing.full_clean()
