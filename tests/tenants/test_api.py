"""The tenancy HTTP contract (API.md): signup, lifecycle, keys, roles, errors."""
from __future__ import annotations

import pytest

from compliance.models import AuditEvent
from tenants.models import Tenant, TenantKey
from tests.conftest import client_for, prefix_of, unique_slug


def _signup(client, **overrides):
    body = {"name": "Acme Inc", "slug": unique_slug("su"), "plan": "core", "admin_email": "ann@acme.test", **overrides}
    return client.post("/api/tenants", body, format="json", REMOTE_ADDR=overrides.pop("ip", "10.9.8.7"))


@pytest.mark.django_db
def test_signup_returns_a_working_tenant(settings):
    settings.LEVQOR_SIGNUP_RATE = "1000/hour"
    response = _signup(client_for())
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) >= {"id", "slug", "name", "region", "plan", "status", "isolation", "domain", "api_key",
                         "sso_bootstrap_url", "provision_ms"}
    assert body["status"] == "active" and body["isolation"] == "schema" and body["region"] == "local"
    assert body["domain"] == f"{body['slug']}.tenant.levqor.ai"
    assert isinstance(body["provision_ms"], int) and body["provision_ms"] < 5000
    assert "hash" not in response.content.decode()
    # The key works, once, on its own tenant.
    listed = client_for(body["api_key"], body["slug"]).get("/api/workflows")
    assert listed.status_code == 200
    # The starter pack is in the tenant's schema.
    tenant = Tenant.objects.get(pk=body["id"])
    from tenants.context import tenant_context
    from workflows.models import WorkflowTemplate

    with tenant_context(tenant):
        assert WorkflowTemplate.objects.filter(pack="starter").count() == 2
    assert list(AuditEvent.dangerously_all_tenants.filter(tenant_id=tenant.id).values_list("event", flat=True)
                .order_by("seq")) == ["key.created", "tenant.created"]


@pytest.mark.django_db
def test_enterprise_signup_gets_its_own_database(settings):
    settings.LEVQOR_SIGNUP_RATE = "1000/hour"
    body = _signup(client_for(), plan="enterprise").json()
    assert body["isolation"] == "database"
    from tenants.models import TenantDatabase

    record = TenantDatabase.dangerously_all_tenants.get(tenant_id=body["id"])
    assert record.name.endswith(f"_t{body['id']}")
    assert "postgres://" not in record.dsn_encrypted and record.name not in record.dsn_encrypted


@pytest.mark.django_db
@pytest.mark.parametrize("slug,reason", [
    ("ab", "3 to 40"), ("a" * 41, "3 to 40"), ("Acme", "lowercase"), ("acme_inc", "lowercase"), ("-acme", "lowercase"),
    ("acme-", "lowercase"), ("1acme", "start with a letter"), ("public", "reserved"), ("www", "reserved"),
    ("api", "reserved"), ("admin", "reserved"), ("static", "reserved"), ("template", "reserved"),
    ("pg-toast", "reserved"), ("information-schema", "reserved"), ("a--b", "two hyphens"), ("ac me", "lowercase"),
    ("acmé", "lowercase"),
])
def test_bad_slugs_are_400_with_reason_and_create_nothing(settings, slug, reason):
    settings.LEVQOR_SIGNUP_RATE = "1000/hour"
    before = Tenant.objects.count()
    response = _signup(client_for(), slug=slug)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert reason in str(error["details"])
    assert Tenant.objects.count() == before


@pytest.mark.django_db
def test_taken_slug_is_409(settings, make_tenant):
    tenant, _ = make_tenant()
    response = _signup(client_for(), slug=tenant.slug)
    assert response.status_code == 409 and response.json()["error"]["code"] == "slug_taken"


@pytest.mark.django_db
def test_signup_is_rate_limited_per_client(settings):
    settings.LEVQOR_SIGNUP_RATE = "3/hour"
    client = client_for()
    codes = [_signup(client, ip="10.1.2.3").status_code for _ in range(4)]
    assert codes == [201, 201, 201, 429]
    limited = _signup(client, ip="10.1.2.3")
    assert int(limited["Retry-After"]) > 0 and limited.json()["error"]["code"] == "rate_limited"
    assert _signup(client, ip="10.1.2.4").status_code == 201  # another client is not affected


@pytest.mark.django_db
@pytest.mark.parametrize("raw,content_type", [
    (b"{not json", "application/json"),
    (b"[1, 2]", "application/json"),
    (b'{"name": 5, "slug": [], "plan": {}, "admin_email": 1}', "application/json"),
    (b"{}", "application/json"),
    (b'{"name": "x"}', "application/json"),
    (b'{"name": "A", "slug": "good-slug", "plan": "platinum", "admin_email": "a@b.test"}', "application/json"),
    (b'{"name": "A", "slug": "good-slug", "plan": "core", "admin_email": "not-an-email"}', "application/json"),
    (b'{"name": "A", "slug": "good-slug", "plan": "core", "region": "mars", "admin_email": "a@b.test"}', "application/json"),
    (b"name=x", "application/x-www-form-urlencoded"),
    (b"\xff\xfe\x00", "application/json"),
])
def test_bad_signup_bodies_are_4xx_json(settings, raw, content_type):
    settings.LEVQOR_SIGNUP_RATE = "1000/hour"
    before = Tenant.objects.count()
    response = client_for().generic("POST", "/api/tenants", raw, content_type=content_type)
    assert 400 <= response.status_code < 500, response.content
    assert "code" in response.json()["error"]
    assert Tenant.objects.count() == before


@pytest.mark.django_db
def test_oversized_body_is_413(settings, make_tenant):
    tenant, key = make_tenant()
    big = b'{"name": "' + b"x" * (settings.LEVQOR_MAX_BODY_BYTES + 10) + b'"}'
    response = client_for(key, tenant).generic("POST", "/api/workflows", big, content_type="application/json")
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"


@pytest.mark.django_db
@pytest.mark.parametrize("body", [{"name": 5}, {"name": ""}, {}, {"name": "x", "definition": [1]}, {"name": "x" * 300},
                                  ["name"], "just a string"])
def test_bad_workflow_bodies_are_400(make_tenant, body):
    tenant, key = make_tenant()
    response = client_for(key, tenant).post("/api/workflows", body, format="json")
    assert response.status_code == 400 and response.json()["error"]["code"] in {"invalid_input", "malformed_json"}


@pytest.mark.django_db
def test_workflow_crud_and_run(make_tenant):
    tenant, key = make_tenant()
    client = client_for(key, tenant)
    created = client.post("/api/workflows", {"name": "Sync CRM", "definition": {"steps": [{"type": "log"}]}}, format="json")
    assert created.status_code == 201
    wf = created.json()
    assert wf["created_by"].startswith("key:lvq_")
    assert client.patch(f"/api/workflows/{wf['id']}", {"name": "Sync CRM v2"}, format="json").json()["name"] == "Sync CRM v2"
    run = client.post(f"/api/workflows/{wf['id']}/run", {}, format="json")
    assert run.status_code == 201 and run.json()["status"] == "succeeded" and run.json()["result"] == {"steps_run": 1}
    assert client.get(f"/api/workflows/{wf['id']}/runs").json()["count"] == 1
    assert client.get("/api/workflows/not-a-uuid").status_code == 404
    assert client.delete(f"/api/workflows/{wf['id']}").status_code == 204
    assert client.get(f"/api/workflows/{wf['id']}").status_code == 404


ROLE_CASES = [
    # role, method, path, body, allowed
    ("viewer", "get", "/api/workflows", None, True),
    ("viewer", "post", "/api/workflows", {"name": "x"}, False),
    ("viewer", "post", "/api/workflows/{wf}/run", {}, False),
    ("viewer", "get", "/api/org/keys", None, False),
    ("viewer", "get", "/api/org/audit", None, False),
    ("auditor", "get", "/api/org/audit", None, True),
    ("auditor", "post", "/api/workflows", {"name": "x"}, False),
    ("auditor", "post", "/api/org/keys", {"role": "viewer"}, False),
    ("operator", "post", "/api/workflows", {"name": "x"}, True),
    ("operator", "post", "/api/workflows/{wf}/run", {}, True),
    ("operator", "post", "/api/org/keys", {"role": "viewer"}, False),
    ("admin", "post", "/api/org/keys", {"role": "viewer"}, True),
    ("admin", "get", "/api/org/members", None, True),
]


@pytest.mark.django_db
@pytest.mark.parametrize("role,method,path,body,allowed", ROLE_CASES)
def test_roles_are_enforced_and_denies_are_audited(make_tenant, role, method, path, body, allowed):
    tenant, owner_key = make_tenant()
    owner = client_for(owner_key, tenant)
    wf = owner.post("/api/workflows", {"name": "w"}, format="json").json()["id"]
    key = owner.post("/api/org/keys", {"role": role, "name": role}, format="json").json()["api_key"]
    client = client_for(key, tenant)
    route = path.format(wf=wf)
    response = getattr(client, method)(route, body, format="json") if body is not None else getattr(client, method)(route)
    if allowed:
        assert response.status_code in (200, 201), response.content
    else:
        assert response.status_code == 403
        error = response.json()["error"]
        assert error["code"] == "policy_denied" and f"role {role}" in error["details"]["rationale"]
        deny = owner.get("/api/org/audit?event=policy.deny").json()["results"][0]
        assert deny["metadata"]["rationale"] == error["details"]["rationale"]
        assert deny["actor"] == "key:" + prefix_of(key)


@pytest.mark.django_db
def test_keys_list_shows_prefix_never_hash_and_revoke_works(make_tenant):
    tenant, key = make_tenant()
    client = client_for(key, tenant)
    made = client.post("/api/org/keys", {"role": "viewer", "name": "dash"}, format="json").json()
    listed = client.get("/api/org/keys").json()["results"]
    assert {k["prefix"] for k in listed} == {prefix_of(key), made["prefix"]}
    assert all("api_key" not in k and "hash" not in str(k) for k in listed)
    assert client.delete(f"/api/org/keys/{made['id']}").status_code == 204
    assert client_for(made["api_key"], tenant).get("/api/workflows").status_code == 401
    events = [e["event"] for e in client.get("/api/org/audit").json()["results"]]
    assert events[:2] == ["key.revoked", "key.created"]


@pytest.mark.django_db
def test_only_staff_suspend_and_owner_or_staff_delete(make_tenant, staff_key):
    tenant, owner_key = make_tenant()
    admin_key = client_for(owner_key, tenant).post("/api/org/keys", {"role": "admin"}, format="json").json()["api_key"]
    assert client_for(owner_key).post(f"/api/tenants/{tenant.id}/suspend").status_code == 403
    assert client_for(admin_key).post(f"/api/tenants/{tenant.id}/delete").status_code == 403
    assert client_for(admin_key).post(f"/api/tenants/{tenant.id}/rotate-keys").status_code == 200
    deleted = client_for(staff_key).post(f"/api/tenants/{tenant.id}/delete")
    assert deleted.status_code == 202 and deleted.json()["status"] == "deleting"
    events = list(AuditEvent.dangerously_all_tenants.filter(tenant_id=tenant.id).values_list("event", flat=True))
    assert "tenant.deleted" in events and "keys.rotated" in events and "policy.deny" in events


@pytest.mark.django_db
def test_purge_after_grace_drops_the_schema(make_tenant, settings):
    from django.db import connection
    from django.utils import timezone

    from tenants.tasks import purge_due_tenants

    tenant, key = make_tenant()
    client_for(key).post(f"/api/tenants/{tenant.id}/delete")
    assert purge_due_tenants() == []  # grace period not over: data kept
    Tenant.objects.filter(pk=tenant.pk).update(purge_after=timezone.now())
    assert purge_due_tenants() == [tenant.slug]
    tenant.refresh_from_db()
    assert tenant.status == "deleted"
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [tenant.schema_name])
        assert cursor.fetchone() is None
    assert not TenantKey.dangerously_all_tenants.filter(tenant=tenant, revoked_at__isnull=True).exists()


@pytest.mark.django_db
def test_audit_time_filters_accept_iso_and_refuse_impossible_times(make_tenant):
    tenant, key = make_tenant()
    client = client_for(key, tenant)
    assert client.get("/api/org/audit?since=2000-01-01T00:00:00Z").json()["count"] == 2
    assert client.get("/api/org/audit?until=2000-01-01T00:00").json()["count"] == 0
    for bad in ("2026-11-26T10:61", "yesterday", "2026-13-01T00:00"):
        response = client.get(f"/api/org/audit?since={bad}")
        assert response.status_code == 400 and response.json()["error"]["details"] == {"param": "since"}
