"""The isolation matrix, for both strategies: schema per tenant (core) and database per
tenant (enterprise). Every tenant route joins TENANT_ROUTES."""
from __future__ import annotations

import pytest

from compliance.models import Alert, AuditEvent
from tests.conftest import client_for, prefix_of

STRATEGIES = {"schema": "core", "database": "enterprise"}

# (method, path, body): every tenant route. `{wf}` is a workflow of the tenant under test.
TENANT_ROUTES = [
    ("get", "/api/workflows", None),
    ("post", "/api/workflows", {"name": "x"}),
    ("get", "/api/workflows/{wf}", None),
    ("patch", "/api/workflows/{wf}", {"name": "y"}),
    ("post", "/api/workflows/{wf}/run", {}),
    ("get", "/api/workflows/{wf}/runs", None),
    ("delete", "/api/workflows/{wf}", None),
    ("get", "/api/org", None),
    ("get", "/api/org/keys", None),
    ("post", "/api/org/keys", {"role": "viewer", "name": "k"}),
    ("get", "/api/org/members", None),
    ("get", "/api/org/audit", None),
    ("get", "/api/org/audit/export", None),
    ("get", "/api/org/usage", None),
    ("get", "/api/org/metrics", None),
    ("get", "/api/org/streams", None),
    ("get", "/api/org/integrity", None),
    ("post", "/api/org/integrity", {}),
    ("get", "/api/org/evidence", None),
    ("post", "/api/org/evidence", {"since": "2026-01-01T00:00:00Z"}),
    ("get", "/api/org/evidence/1", None),
    ("delete", "/api/org/keys/1", None),
    ("get", "/api/org/streams/1", None),
    ("post", "/api/org/streams/1/replay", {"since": "2026-01-01T00:00:00Z"}),
    ("delete", "/api/org/streams/1", None),
    ("get", "/api/org/policy/simulate?plan=pro", None),
    ("get", "/api/org/billing", None),
    ("post", "/api/org/billing/portal-session", {}),
    ("get", "/api/org/backups", None),
    ("post", "/api/org/redeploy", {}),
    ("get", "/api/org/health", None),
    ("post", "/api/org/backups", {}),
    ("get", "/api/org/backups/1", None),
    ("post", "/api/org/backups/1/export", {}),
    ("post", "/api/org/backups/1/restore", {"mode": "staging"}),
    ("get", "/api/org/federation", None),
    ("post", "/api/org/federation", {"opted_in": True, "industry": "software"}),
    ("get", "/api/marketplace/listings", None),
    ("get", "/api/marketplace/orders", None),
    ("post", "/api/marketplace/orders", {"listing_id": 1}),
    ("get", "/api/marketplace/orders/1", None),
    ("post", "/api/marketplace/orders/1/cancel", {}),
]


@pytest.fixture(params=list(STRATEGIES))
def pair(request, make_tenant):
    plan = STRATEGIES[request.param]
    a, key_a = make_tenant(plan=plan)
    b, key_b = make_tenant(plan=plan)
    assert a.isolation == b.isolation == request.param
    return a, key_a, b, key_b


def _workflow(key, tenant, name="wf") -> str:
    response = client_for(key, tenant).post("/api/workflows", {"name": name}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def _call(client, method, path, body):
    return getattr(client, method)(path, body, format="json") if body is not None else getattr(client, method)(path)


def test_each_tenant_sees_only_its_own_workflows(pair):
    a, key_a, b, key_b = pair
    _workflow(key_a, a, "only-in-a")
    _workflow(key_b, b, "only-in-b")
    names_a = [w["name"] for w in client_for(key_a, a).get("/api/workflows").json()["results"]]
    names_b = [w["name"] for w in client_for(key_b, b).get("/api/workflows").json()["results"]]
    assert names_a == ["only-in-a"]
    assert names_b == ["only-in-b"]


@pytest.mark.parametrize("method,path,body", TENANT_ROUTES)
def test_key_of_a_on_b_is_403_by_header_and_by_host(pair, method, path, body):
    a, key_a, b, key_b = pair
    wf_b = _workflow(key_b, b)
    route = path.format(wf=wf_b)
    by_header = _call(client_for(key_a, b), method, route, body)
    assert by_header.status_code == 403, by_header.content
    assert by_header.json()["error"]["code"] == "cross_tenant_forbidden"
    by_host = _call(client_for(key_a, HTTP_HOST=f"{b.slug}.tenant.levqor.ai"), method, route, body)
    assert by_host.status_code == 403
    # B's workflow is untouched whatever A tried.
    assert client_for(key_b, b).get(f"/api/workflows/{wf_b}").status_code == 200


def test_cross_tenant_attempt_is_audited_in_b_with_prefix_only_and_alerts_staff(pair):
    a, key_a, b, key_b = pair
    client_for(key_a, b).get("/api/workflows")
    event = AuditEvent.dangerously_all_tenants.filter(tenant_id=b.id, event="security.cross_tenant_attempt").get()
    assert event.actor == "key:" + prefix_of(key_a)
    assert str(a.id) not in str(event.metadata_json) and a.slug not in str(event.metadata_json)
    alert = Alert.objects.get(kind="security.cross_tenant_attempt", tenant_id=b.id)
    assert alert.audience == "staff" and alert.metadata_json["key_tenant_id"] == a.id
    # The attacked tenant's audit API shows the attempt, without naming the attacker.
    listed = client_for(key_b, b).get("/api/org/audit?event=security.cross_tenant_attempt").json()["results"]
    assert len(listed) == 1 and a.slug not in str(listed)


def test_a_cannot_read_or_write_b_objects_by_id(pair):
    a, key_a, b, key_b = pair
    wf_b = _workflow(key_b, b, "secret-b")
    client_a = client_for(key_a, a)
    assert client_a.get(f"/api/workflows/{wf_b}").status_code == 404
    assert client_a.patch(f"/api/workflows/{wf_b}", {"name": "pwned"}, format="json").status_code == 404
    assert client_a.post(f"/api/workflows/{wf_b}/run", {}, format="json").status_code == 404
    assert client_a.delete(f"/api/workflows/{wf_b}").status_code == 404
    assert client_for(key_b, b).get(f"/api/workflows/{wf_b}").json()["name"] == "secret-b"


@pytest.mark.parametrize("method,path,body", TENANT_ROUTES)
def test_no_tenant_context_is_400(pair, method, path, body):
    a, key_a, _, _ = pair
    response = _call(client_for(key_a), method, path.format(wf="00000000-0000-0000-0000-000000000000"), body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "tenant_required"


def test_unknown_tenant_is_404(pair):
    a, key_a, _, _ = pair
    for ref in ("999999999", "no-such-tenant"):
        response = client_for(key_a, ref).get("/api/workflows")
        assert response.status_code == 404 and response.json()["error"]["code"] == "tenant_not_found"


def test_suspended_tenant_is_403_and_resumes(pair, staff_key):
    a, key_a, _, _ = pair
    staff = client_for(staff_key)
    assert staff.post(f"/api/tenants/{a.id}/suspend").json() == {"id": a.id, "status": "suspended"}
    response = client_for(key_a, a).get("/api/workflows")
    assert response.status_code == 403 and response.json()["error"]["code"] == "tenant_suspended"
    assert staff.post(f"/api/tenants/{a.id}/resume").json() == {"id": a.id, "status": "active"}
    assert client_for(key_a, a).get("/api/workflows").status_code == 200


def test_deleted_tenant_keys_stop_working(pair, staff_key):
    a, key_a, b, key_b = pair
    assert client_for(key_a).post(f"/api/tenants/{a.id}/delete").status_code == 202
    assert client_for(key_a, a).get("/api/workflows").status_code == 403
    assert client_for(key_a).get(f"/api/tenants/{a.id}").status_code == 401
    assert client_for(key_b, b).get("/api/workflows").status_code == 200


def test_rotated_keys_stop_working(pair):
    a, key_a, _, _ = pair
    extra = client_for(key_a, a).post("/api/org/keys", {"role": "operator", "name": "ci"}, format="json").json()["api_key"]
    rotated = client_for(key_a).post(f"/api/tenants/{a.id}/rotate-keys")
    assert rotated.status_code == 200
    new_key = rotated.json()["api_key"]
    for old in (key_a, extra):
        assert client_for(old, a).get("/api/workflows").status_code == 401
    assert client_for(new_key, a).get("/api/workflows").status_code == 200


HOSTILE_IDS = ["' OR 1=1 --", "public", "../t", "a" * 500, "1; DROP SCHEMA public", "pg_catalog", "%00", "-1",
               "1e9", "ÿ", "t_x\"", "99999999999999999999999", " ", "A-B"]


@pytest.mark.parametrize("value", HOSTILE_IDS)
def test_hostile_tenant_ids_are_4xx_never_data(pair, value):
    a, key_a, _, _ = pair
    response = client_for(key_a, HTTP_X_TENANT_ID=value).get("/api/workflows")
    assert 400 <= response.status_code < 500
    assert "results" not in response.json()


@pytest.mark.parametrize("host", ["public.tenant.levqor.ai", "pg-catalog.tenant.levqor.ai", "x.tenant.levqor.ai",
                                  "a--b.tenant.levqor.ai", "evil.example"])
def test_hostile_hosts_are_4xx(pair, host, settings):
    settings.ALLOWED_HOSTS = ["*"]
    a, key_a, _, _ = pair
    response = client_for(key_a, HTTP_HOST=host).get("/api/workflows")
    assert 400 <= response.status_code < 500


def test_header_and_host_naming_different_tenants_is_refused(pair):
    a, key_a, b, _ = pair
    response = client_for(key_a, a, HTTP_HOST=f"{b.slug}.tenant.levqor.ai").get("/api/workflows")
    assert response.status_code == 400 and response.json()["error"]["code"] == "tenant_context_conflict"


def test_tenant_detail_is_own_tenant_or_staff(pair, staff_key):
    a, key_a, b, _ = pair
    assert client_for(key_a).get(f"/api/tenants/{a.id}").json()["slug"] == a.slug
    assert client_for(key_a).get(f"/api/tenants/{b.id}").status_code == 403
    assert client_for(key_a).get("/api/tenants/987654321").status_code == 403  # existence not told
    assert client_for(staff_key).get(f"/api/tenants/{b.id}").json()["slug"] == b.slug
    assert client_for().get(f"/api/tenants/{a.id}").status_code == 401
    body = client_for(key_a).get(f"/api/tenants/{a.id}").content.decode()
    assert "hash" not in body


def test_tenant_data_without_context_raises():
    from tenants.context import NoTenantContext
    from workflows.models import Workflow

    with pytest.raises(NoTenantContext):
        Workflow.objects.count()


def test_scoped_shared_tables_raise_without_context(db):
    from tenants.context import NoTenantContext
    from tenants.models import TenantKey

    with pytest.raises(NoTenantContext):
        list(TenantKey.objects.all())
