"""The staff admin: tenants, keys without hashes, members, audit read-only, lifecycle actions."""
from django.contrib.auth import get_user_model
from django.test import Client

from compliance.models import AuditEvent
from tenants.models import Tenant, TenantKey


def _staff():
    user = get_user_model().objects.create_superuser(username="staff", email="staff@levqor.test", password="pw-12345678")
    client = Client()
    client.force_login(user)
    return client


def test_staff_see_tenants_and_keys_but_never_hashes(make_tenant):
    tenant, key = make_tenant()
    staff = _staff()
    assert staff.get("/admin/").status_code == 200
    assert tenant.slug in staff.get("/admin/tenants/tenant/").content.decode()
    key_row = TenantKey.dangerously_all_tenants.get(tenant=tenant)
    page = staff.get(f"/admin/tenants/tenantkey/{key_row.pk}/change/").content.decode()
    assert key_row.prefix in page and key_row.api_key_hash not in page and key not in page
    audit = staff.get("/admin/compliance/auditevent/").content.decode()
    assert "tenant.created" in audit
    event = AuditEvent.dangerously_all_tenants.filter(tenant_id=tenant.id).first()
    assert staff.post(f"/admin/compliance/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403


def test_admin_actions_call_the_services(make_tenant):
    tenant, _ = make_tenant()
    staff = _staff()
    staff.post("/admin/tenants/tenant/", {"action": "action_suspended", "_selected_action": [tenant.pk]})
    assert Tenant.objects.get(pk=tenant.pk).status == "suspended"
    assert AuditEvent.dangerously_all_tenants.filter(tenant_id=tenant.id, event="tenant.suspended",
                                                     actor="staff:staff").exists()
    staff.post("/admin/tenants/tenant/", {"action": "action_resumed", "_selected_action": [tenant.pk]})
    assert Tenant.objects.get(pk=tenant.pk).status == "active"


def test_public_pages(db):
    for path in ("/", "/docs/multitenancy", "/insights/benchmarks", "/accounts/login/", "/accounts/signup/",
                 "/accounts/password/reset/"):
        assert Client().get(path).status_code == 200, path
