"""Tenants and keys are cached in each process; a change made by any other process takes
effect on this process's next request (the fleet generation rides on the quota script)."""
from django.utils import timezone

from levqor.redis import client
from tenants.hotcache import GENERATION_KEY
from tenants.models import Tenant, TenantKey
from tests.conftest import client_for


def _as_if_another_process(change):
    change()  # a write this process's signals never saw...
    client().incr(GENERATION_KEY)  # ...and the bump that process publishes after commit


def test_suspension_elsewhere_applies_to_the_next_request(make_tenant):
    tenant, key = make_tenant()
    api = client_for(key, tenant)
    assert api.get("/api/workflows").status_code == 200  # tenant and key now cached here
    _as_if_another_process(lambda: Tenant.objects.filter(pk=tenant.pk).update(status="suspended"))
    response = api.get("/api/workflows")
    assert response.status_code == 403 and response.json()["error"]["code"] == "tenant_suspended"


def test_key_revoked_elsewhere_stops_on_the_next_request(make_tenant):
    tenant, key = make_tenant()
    api = client_for(key, tenant)
    assert api.get("/api/workflows").status_code == 200
    _as_if_another_process(lambda: TenantKey.dangerously_all_tenants.filter(tenant=tenant).update(revoked_at=timezone.now()))
    assert api.get("/api/workflows").status_code == 401
    assert api.get("/api/workflows").status_code == 401


def test_key_revoked_here_stops_on_the_very_next_request(make_tenant):
    """A key this process has just verified (and remembers as verified) is refused on the
    request right after its revocation through the API."""
    tenant, owner_key = make_tenant()
    owner = client_for(owner_key, tenant)
    made = owner.post("/api/org/keys", {"role": "operator", "name": "ci"}, format="json").json()
    api = client_for(made["api_key"], tenant)
    assert api.get("/api/workflows").status_code == 200
    assert api.get("/api/workflows").status_code == 200  # served from the verified-key memory
    assert owner.delete(f"/api/org/keys/{made['id']}").status_code == 204
    assert api.get("/api/workflows").status_code == 401


def test_rotation_stops_the_old_key_on_the_very_next_request(make_tenant, staff_key):
    tenant, key = make_tenant()
    api = client_for(key, tenant)
    assert api.get("/api/workflows").status_code == 200
    rotated = client_for(staff_key).post(f"/api/tenants/{tenant.id}/rotate-keys")
    assert rotated.status_code == 200, rotated.content
    assert api.get("/api/workflows").status_code == 401
    assert client_for(rotated.json()["api_key"], tenant).get("/api/workflows").status_code == 200


def test_a_remembered_key_only_matches_itself(make_tenant):
    """The verified-key memory is keyed by the whole key's keyed hash: its public prefix
    with another secret is refused, and the key is still refused on another tenant."""
    tenant, key = make_tenant()
    other, _ = make_tenant()
    assert client_for(key, tenant).get("/api/workflows").status_code == 200
    prefix, secret = key.rsplit("_", 1)
    forged = f"{prefix}_{'A' * len(secret)}"
    assert client_for(forged, tenant).get("/api/workflows").status_code == 401
    crossed = client_for(key, other).get("/api/workflows")
    assert crossed.status_code == 403 and crossed.json()["error"]["code"] == "cross_tenant_forbidden"


def test_plan_change_applies_to_the_very_next_request(make_tenant, staff_key):
    """The tenant's context (plan limits and features) is cached too: a plan change made
    through the API is in force on the next request."""
    tenant, key = make_tenant("core")
    api = client_for(key, tenant)
    refused = api.post("/api/org/streams", {}, format="json")  # audit_stream is an enterprise feature
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "policy_denied"
    changed = client_for(staff_key).post(f"/api/tenants/{tenant.id}/plan", {"plan": "enterprise"}, format="json")
    assert changed.status_code == 200, changed.content
    allowed = api.post("/api/org/streams", {}, format="json")  # now past policy, refused for its empty body
    assert allowed.status_code == 400, allowed.content


def test_a_tenant_request_sets_its_schema_once_and_reads_its_own_rows(make_tenant):
    """The permission check sets the tenant's search_path while Redis answers the quota
    script (policy/permissions.py): the view then needs no SET of its own, and reads the
    tenant's rows, not another's."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    tenant, key = make_tenant()
    other, other_key = make_tenant()
    api = client_for(key, tenant)
    assert api.post("/api/workflows", {"name": "mine"}, format="json").status_code == 201
    assert client_for(other_key, other).post("/api/workflows", {"name": "theirs"}, format="json").status_code == 201
    with CaptureQueriesContext(connection) as queries:
        response = api.get("/api/workflows")
    assert response.status_code == 200
    assert [w["name"] for w in response.json()["results"]] == ["mine"]
    sets = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SET search_path")]
    assert sets == [f'SET search_path = "{tenant.schema_name}","public"']
