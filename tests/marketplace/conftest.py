"""Marketplace tests: the real order, webhook and payout code against the local Stripe
server (tests/stripe_server.py) through the official SDK; billing's fixtures configure
it. A partner gets a real Connect account there, so transfers have a destination."""
from __future__ import annotations

import pytest

from tests.billing.conftest import billing_on, deliver_new_events, stripe_server  # noqa: F401 (fixtures)
from tests.conftest import client_for


@pytest.fixture
def delivered():
    """The ids of Stripe events already sent to our webhook (for deliver_new_events)."""
    return set()


@pytest.fixture
def partner(billing_on):
    from billing import stripe_api
    from marketplace.models import Partner

    account = stripe_api.call(stripe_api.client().v1.accounts.create, params={"type": "express"})
    return Partner.objects.create(name="Acme Integrations", slug=f"acme-{account['id'][-6:].lower()}",
                                  stripe_account_id=account["id"], fee_bps=2000)


@pytest.fixture
def make_listing(partner):
    from marketplace.models import Listing

    made = []

    def make(*, price_cents=4900, features=("crm",), packs=("crm-sync",), billing="one_off", owner=None, **extra):
        listing = Listing.objects.create(partner=owner or partner, name=f"Listing {len(made)}",
                                         slug=f"{(owner or partner).slug}-l{len(made)}", price_cents=price_cents,
                                         features=list(features), packs=list(packs), billing=billing, **extra)
        made.append(listing)
        return listing

    return make


def buy(key, tenant, listing_id, **headers):
    return client_for(key, tenant, **headers).post("/api/marketplace/orders", {"listing_id": listing_id}, format="json")


def pay(server, order: dict, delivered: set) -> list[dict]:
    """The buyer pays on the checkout page; Stripe's events reach our webhook."""
    from marketplace.models import TenantOrder

    session = TenantOrder.dangerously_all_tenants.get(pk=order["id"]).stripe_checkout_session_id
    server.complete_checkout(session)
    return deliver_new_events(server, delivered)


def features_of(key, tenant) -> list[str]:
    response = client_for(key, tenant).get("/api/org")
    assert response.status_code == 200, response.content
    return response.json()["features"]


def pack_rows(tenant, pack: str) -> int:
    """The pack's templates in the tenant's own schema or database."""
    from marketplace import packs
    from tenants.context import tenant_context

    with tenant_context(tenant):
        return packs.installed(pack)


def events_of(tenant, prefix="marketplace.") -> list[str]:
    from compliance.models import AuditEvent

    return list(AuditEvent.dangerously_all_tenants.filter(tenant_id=tenant.id, event__startswith=prefix)
                .order_by("seq", "id").values_list("event", flat=True))
