"""The marketplace API's edges: policy (plan feature and role), bad input, billing off."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from compliance.models import AuditEvent
from marketplace.models import TenantOrder
from policy import engine
from tenants import hotcache
from tests.conftest import client_for
from tests.marketplace.conftest import buy, pay


def _key(owner_key, tenant, role) -> str:
    response = client_for(owner_key, tenant).post("/api/org/keys", {"role": role, "name": role}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["api_key"]


@pytest.fixture
def core_without_marketplace(tmp_path, monkeypatch):
    """The policy file with `marketplace` taken out of the core plan's features."""
    data = json.loads(Path(engine.POLICY_PATH).read_text())
    data["plans"]["core"]["features"] = [f for f in data["plans"]["core"]["features"] if f != "marketplace"]
    path = tmp_path / "policies.json"
    path.write_text(json.dumps(data))
    monkeypatch.setattr(engine, "POLICY_PATH", path)
    engine.get_policy.cache_clear()
    hotcache.cache.clear()
    yield
    engine.get_policy.cache_clear()
    hotcache.cache.clear()


def _denied(response, action="marketplace:order"):
    assert response.status_code == 403, response.content
    error = response.json()["error"]
    assert error["code"] == "policy_denied" and error["details"]["action"] == action
    return error["details"]["rationale"]


def test_a_plan_without_the_marketplace_feature_may_browse_but_not_buy(billing_on, core_without_marketplace,
                                                                        make_tenant, make_listing):
    a, key_a = make_tenant(plan="core")
    listing = make_listing()
    assert client_for(key_a, a).get("/api/marketplace/listings").status_code == 200
    rationale = _denied(buy(key_a, a, listing.pk))
    assert rationale == "plan core lacks feature marketplace"
    assert TenantOrder.dangerously_all_tenants.filter(tenant=a).count() == 0 and billing_on.objects(
        "checkout.session") == []
    deny = AuditEvent.dangerously_all_tenants.get(tenant_id=a.id, event="policy.deny")
    assert deny.metadata_json["action"] == "marketplace:order"


@pytest.mark.parametrize("role", ["viewer", "operator", "auditor"])
def test_roles_that_may_not_order_get_policy_denied(billing_on, make_tenant, make_listing, role):
    a, owner = make_tenant()
    key = _key(owner, a, role)
    listing = make_listing()
    assert client_for(key, a).get("/api/marketplace/listings").status_code == 200
    assert client_for(key, a).get("/api/marketplace/orders").status_code == 200
    assert _denied(buy(key, a, listing.pk)) == f"role {role} lacks marketplace:order"
    order = buy(owner, a, listing.pk).json()
    _denied(client_for(key, a).post(f"/api/marketplace/orders/{order['id']}/cancel"))
    assert TenantOrder.dangerously_all_tenants.get(pk=order["id"]).status == "pending"
    assert AuditEvent.dangerously_all_tenants.filter(tenant_id=a.id, event="policy.deny").count() == 2


def test_an_admin_may_buy(billing_on, make_tenant, make_listing):
    a, owner = make_tenant()
    assert buy(_key(owner, a, "admin"), a, make_listing().pk).status_code == 201


@pytest.mark.parametrize("body,code,status", [
    ({"listing_id": "abc"}, "invalid_input", 400),
    ({"listing_id": 1.5}, "invalid_input", 400),
    ({"listing_id": True}, "invalid_input", 400),
    ({"listing_id": -3}, "invalid_input", 400),
    ({"listing_id": 10**30}, "invalid_input", 400),
    ({"listing_id": None}, "invalid_input", 400),
    ({}, "invalid_input", 400),
    ([1], "invalid_input", 400),
    ({"listing_id": 987654321}, "listing_not_found", 404),
])
def test_bad_input_is_a_clear_4xx(billing_on, make_tenant, body, code, status):
    a, key = make_tenant()
    response = client_for(key, a).post("/api/marketplace/orders", body, format="json")
    assert response.status_code == status, response.content
    assert response.json()["error"]["code"] == code
    assert TenantOrder.dangerously_all_tenants.filter(tenant=a).count() == 0


def test_malformed_json_unknown_and_inactive_listings_and_odd_order_ids(billing_on, make_tenant, make_listing):
    a, key = make_tenant()
    client = client_for(key, a)
    malformed = client.post("/api/marketplace/orders", "{not json", content_type="application/json")
    assert malformed.status_code == 400 and malformed.json()["error"]["code"] == "malformed_json"
    retired = make_listing(active=False)
    assert buy(key, a, retired.pk).json()["error"]["code"] == "listing_not_found"
    assert retired.pk not in [row["id"] for row in client.get("/api/marketplace/listings").json()["results"]]
    for path in ("/api/marketplace/orders/abc", "/api/marketplace/orders/99999999999999999999",
                 "/api/marketplace/orders/424242"):
        assert client.get(path).status_code == 404, path
    assert client.post("/api/marketplace/orders/99999999999999999999/cancel").status_code == 404
    long_key = buy(key, a, make_listing().pk, HTTP_IDEMPOTENCY_KEY="k" * 201)
    assert long_key.status_code == 400 and long_key.json()["error"]["details"]["field"] == "Idempotency-Key"
    nul_key = buy(key, a, make_listing().pk, HTTP_IDEMPOTENCY_KEY="k\x00k")  # PostgreSQL refuses NUL in text
    assert nul_key.status_code == 400 and nul_key.json()["error"]["details"]["field"] == "Idempotency-Key"


def test_payments_not_configured_is_a_clear_503(make_tenant, make_listing, settings):
    a, key = make_tenant()
    listing = make_listing()  # made with billing on (the partner's Connect account), then:
    settings.STRIPE_SECRET_KEY = ""
    listed = client_for(key, a).get("/api/marketplace/listings").json()
    assert listed["payments_configured"] is False and listed["results"][0]["id"] == listing.pk
    response = buy(key, a, listing.pk)
    assert response.status_code == 503 and response.json()["error"]["code"] == "payments_not_configured"
    assert TenantOrder.dangerously_all_tenants.filter(tenant=a).count() == 0


def test_a_bought_feature_meets_a_policy_feature_gate(billing_on, make_tenant, make_listing, delivered):
    """The policy engine honours a module's feature for the tenant that bought it only."""
    data = engine.load()
    data["actions"]["crm:sync"] = {"feature": "crm"}
    policy = engine.Policy(engine.validate(data))
    a, key_a = make_tenant()
    b, _ = make_tenant()
    order = buy(key_a, a, make_listing(features=["crm"]).pk).json()
    pay(billing_on, order, delivered)
    hotcache.cache.clear()
    _, ctx_a = hotcache.tenant_for("id", a.id)
    _, ctx_b = hotcache.tenant_for("id", b.id)
    assert ctx_a.granted == frozenset({"crm"}) and ctx_b.granted == frozenset()
    assert policy.decide(plan="core", role="owner", action="crm:sync", granted=ctx_a.granted).allowed
    denied = policy.decide(plan="core", role="owner", action="crm:sync", granted=ctx_b.granted)
    assert not denied and denied.rationale == "plan core lacks feature crm"
    # A role that lacks the action is still refused, whatever the tenant bought.
    assert not policy.decide(plan="core", role="viewer", action="crm:sync", granted=ctx_a.granted)
