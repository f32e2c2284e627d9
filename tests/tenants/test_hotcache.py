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
