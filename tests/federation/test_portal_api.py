"""The org's federation API and portal page, the public page, and roles."""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.test import Client

from compliance.models import AuditEvent
from federation import aggregate as agg
from federation.models import FederationMembership
from tenants.models import TenantKey, TenantUser
from tests.conftest import client_for
from tests.federation.conftest import PERIOD, add_runs


def _member(tenant, role: str) -> Client:
    user = get_user_model().objects.create_user(username=f"{role}@{tenant.slug}.test",
                                                email=f"{role}@{tenant.slug}.test", password="a-long-pass-123")
    TenantUser(tenant=tenant, user=user, role=role).save(force_insert=True)
    client = Client()
    client.force_login(user)
    return client


def _key(owner_key, tenant, role: str) -> str:
    return client_for(owner_key, tenant).post("/api/org/keys", {"role": role, "name": role}, format="json").json()["api_key"]


def test_nothing_is_shared_by_default_and_owner_opts_in_and_out_audited(make_tenant):
    tenant, key = make_tenant()
    api = client_for(key, tenant)
    body = api.get("/api/org/federation").json()
    assert body["opted_in"] is False and body["industry"] is None and body["own"]["workflow_runs"] == 0
    assert not agg.participants().filter(tenant=tenant).exists()
    on = api.post("/api/org/federation", {"opted_in": True, "industry": "retail"}, format="json")
    assert on.status_code == 200 and on.json()["opted_in"] is True and on.json()["industry"] == "retail"
    off = api.post("/api/org/federation", {"opted_in": False, "industry": "retail"}, format="json")
    assert off.json()["opted_in"] is False
    events = list(AuditEvent.dangerously_all_tenants.filter(tenant_id=tenant.id, event__startswith="federation.")
                  .order_by("id").values_list("event", flat=True))
    assert events == ["federation.opted_in", "federation.opted_out"]


def test_bad_input_is_400_with_a_code(make_tenant):
    tenant, key = make_tenant()
    api = client_for(key, tenant)
    for body in ({"opted_in": "yes"}, {"opted_in": True, "industry": "astrology"}, {"opted_in": True, "industry": 7},
                 [1, 2]):
        response = api.post("/api/org/federation", body, format="json")
        assert response.status_code == 400, body
        assert response.json()["error"]["code"] == "invalid_input"
    assert not FederationMembership.dangerously_all_tenants.filter(tenant=tenant).exists()


def test_viewer_reads_but_cannot_opt_in(make_tenant):
    tenant, key = make_tenant()
    viewer_api = client_for(_key(key, tenant, "viewer"), tenant)
    assert viewer_api.get("/api/org/federation").status_code == 200
    denied = viewer_api.post("/api/org/federation", {"opted_in": True, "industry": "retail"}, format="json")
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "policy_denied"
    viewer = _member(tenant, "viewer")
    page = viewer.post("/org/insights", {"opted_in": "on", "industry": "retail"}, follow=True)
    assert "role viewer lacks federation:manage" in page.content.decode()
    assert not FederationMembership.dangerously_all_tenants.filter(tenant=tenant, opted_in=True).exists()


def test_org_insights_shows_own_numbers_beside_industry_percentiles(opted_in):
    tenants = opted_in(5, "retail")
    agg.aggregate(PERIOD)
    tenant, _ = tenants[0]
    add_runs(tenant, succeeded=27)  # 10 from the fixture + 27 = 37 runs in PERIOD
    owner = _member(tenant, "owner")
    html = owner.get("/org/insights").content.decode()
    assert "Insights" in html and "2026-01" in html
    assert "<strong>37</strong>" in html  # own workflow runs
    assert "Retail and e-commerce" in html and "not published" in html  # p95 latency: no data, not published
    status = client_for(tenants[0][1], tenant).get("/api/org/federation").json()
    assert status["own"]["workflow_runs"] == 37
    assert set(status["industry_percentiles"]["workflow_runs"]) == {"p25", "p50", "p75"}


def test_an_admin_opts_in_by_api_and_portal(make_tenant):
    tenant, key = make_tenant()
    admin_api = client_for(_key(key, tenant, "admin"), tenant)
    on = admin_api.post("/api/org/federation", {"opted_in": True, "industry": "software"}, format="json")
    assert on.status_code == 200 and on.json()["opted_in"] is True
    assert agg.participants().filter(tenant=tenant).exists()
    admin = _member(tenant, "admin")
    page = admin.post("/org/insights", {"industry": "media"}, follow=True)  # unticked: opts out
    assert "not shared" in page.content.decode()
    admin.post("/org/insights", {"opted_in": "on", "industry": "media"}, follow=True)
    membership = FederationMembership.dangerously_all_tenants.get(tenant=tenant)
    assert membership.opted_in and membership.industry == "media"
    actors = list(AuditEvent.dangerously_all_tenants.filter(tenant_id=tenant.id, event="federation.opted_in")
                  .order_by("id").values_list("actor", flat=True))
    admin_key = TenantKey.dangerously_all_tenants.get(tenant=tenant, role="admin")
    assert actors == [f"key:{admin_key.prefix}", f"user:admin@{tenant.slug}.test"]


def test_owner_opts_in_from_the_portal(make_tenant):
    tenant, _ = make_tenant()
    owner = _member(tenant, "owner")
    assert 'href="/org/insights"' in owner.get("/org").content.decode()
    page = owner.post("/org/insights", {"opted_in": "on", "industry": "media"}, follow=True)
    assert "applies from the next release" in page.content.decode()
    assert FederationMembership.dangerously_all_tenants.get(tenant=tenant).industry == "media"


def test_public_page_renders_charts_without_login(opted_in, client):
    assert "No benchmarks published yet" in client.get("/insights/benchmarks").content.decode()
    opted_in(5, "software")
    agg.aggregate(PERIOD)
    response = client.get("/insights/benchmarks")
    html = response.content.decode()
    assert response.status_code == 200
    assert html.count("<svg") >= 4 and "Software and SaaS" in html and "Workflow runs" in html
