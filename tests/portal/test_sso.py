"""Per-tenant SSO (OIDC) end to end against real OpenID providers running locally
(oidc-provider-mock: an authlib-based OpenID Connect server)."""
from urllib.parse import urlsplit

import pytest
import requests
from django.contrib.auth import get_user_model
from django.test import Client
from oidc_provider_mock import run_server_in_thread

from compliance.models import AuditEvent
from tenants.models import TenantSSO, TenantUser


@pytest.fixture
def idp_a():
    with run_server_in_thread() as server:
        yield f"http://127.0.0.1:{server.server_port}"


@pytest.fixture
def idp_b():
    with run_server_in_thread() as server:
        yield f"http://127.0.0.1:{server.server_port}"


@pytest.fixture(autouse=True)
def _allow_local_idps(settings):
    settings.LEVQOR_OUTBOUND_ALLOW_HOSTS = ["127.0.0.1"]


def _owner(tenant):
    user = get_user_model().objects.create_user(username=f"owner@{tenant.slug}", email=f"owner@{tenant.slug}.test",
                                                password="a-long-pass-123")
    TenantUser(tenant=tenant, user=user, role="owner").save(force_insert=True)
    client = Client()
    client.force_login(user)
    return client


def _configure_through_portal(tenant, issuer, group_roles='{"eng-admins": "admin"}'):
    owner = _owner(tenant)
    owner.post("/org/settings/sso", {"op": "save", "issuer": issuer, "client_id": f"levqor-{tenant.slug}",
                                     "client_secret": "s3cret-client", "default_role": "viewer",
                                     "group_roles": group_roles})
    assert owner.post("/org/settings/sso", {"op": "enable"}, follow=True).status_code == 200
    assert not TenantSSO.dangerously_all_tenants.get(tenant=tenant).enabled  # untested: refused
    tested = owner.post("/org/settings/sso", {"op": "test"}, follow=True).content.decode()
    assert "Connection OK" in tested
    owner.post("/org/settings/sso", {"op": "enable"})
    config = TenantSSO.dangerously_all_tenants.get(tenant=tenant)
    assert config.enabled and "s3cret-client" not in config.client_secret_encrypted
    return config


def _set_idp_user(issuer, sub, **claims):
    assert requests.put(f"{issuer}/users/{sub}", json=claims, timeout=5).status_code in (200, 204)


def _idp_login(client, slug, sub, issuer_of_code=None):
    """Start at Levqor, sign in at the IdP as `sub`, come back; returns the callback response."""
    start = client.post(f"/accounts/oidc/tenant-{slug}/login/")
    assert start.status_code == 302, start.content[:300]
    authorize = start["Location"]
    if issuer_of_code:  # the code is obtained at another IdP (an attack), the state is ours
        authorize = issuer_of_code + authorize[len(f"{urlsplit(authorize).scheme}://{urlsplit(authorize).netloc}"):]
    back = requests.post(authorize, data={"sub": sub}, allow_redirects=False, timeout=5)
    assert back.status_code == 302, back.text[:300]
    callback = urlsplit(back.headers["Location"])
    return client.get(f"{callback.path}?{callback.query}")


def test_oidc_login_lands_in_the_right_tenant_with_the_mapped_role(make_tenant, idp_a, idp_b):
    a, _ = make_tenant(plan="pro")
    b, _ = make_tenant(plan="pro")
    _configure_through_portal(a, idp_a)
    _configure_through_portal(b, idp_b)
    _set_idp_user(idp_a, "alice", email="alice@a-corp.test", email_verified=True, groups=["eng-admins"])
    _set_idp_user(idp_a, "carol", email="carol@a-corp.test", email_verified=True, groups=["sales"])

    alice = Client()
    assert Client().get(f"/org/sso/{a.slug}").status_code == 200
    done = _idp_login(alice, a.slug, "alice")
    assert done.status_code == 302 and done["Location"] == "/org"
    member = TenantUser.dangerously_all_tenants.get(tenant=a, user__email="alice@a-corp.test")
    assert (member.role, member.sso_id) == ("admin", "alice")
    assert a.name in alice.get("/org").content.decode()
    login = AuditEvent.dangerously_all_tenants.filter(tenant_id=a.id, event="auth.login").get()
    assert login.metadata_json["groups"] == ["eng-admins"]
    assert alice.session["levqor_sso_tenants"] == [a.id]  # satisfies enforced SSO for A only

    carol = Client()
    _idp_login(carol, a.slug, "carol")
    assert TenantUser.dangerously_all_tenants.get(tenant=a, user__email="carol@a-corp.test").role == "viewer"

    # Tenant A's IdP users have nothing in tenant B.
    assert not TenantUser.dangerously_all_tenants.filter(tenant=b).exclude(role="owner").exists()
    assert b.name not in alice.get("/org/choose").content.decode()


def test_a_code_from_tenant_a_idp_cannot_log_into_tenant_b(make_tenant, idp_a, idp_b):
    a, _ = make_tenant(plan="pro")
    b, _ = make_tenant(plan="pro")
    _configure_through_portal(a, idp_a)
    _configure_through_portal(b, idp_b)
    _set_idp_user(idp_a, "mallory", email="mallory@a-corp.test", email_verified=True, groups=["eng-admins"])
    attacker = Client()
    response = _idp_login(attacker, b.slug, "mallory", issuer_of_code=idp_a)
    assert response.status_code in (200, 302, 400, 401)  # allauth shows its login error page
    assert not TenantUser.dangerously_all_tenants.filter(tenant=b, user__email="mallory@a-corp.test").exists()
    assert attacker.get("/org").status_code == 302  # not signed in anywhere
    assert AuditEvent.dangerously_all_tenants.filter(tenant_id=b.id, event="auth.login_failed").exists()


def test_sso_needs_a_plan_with_the_feature(make_tenant, idp_a):
    core, _ = make_tenant(plan="core")
    owner = _owner(core)
    page = owner.get("/org/settings/sso").content.decode()
    assert "Plan core lacks feature sso" in page
    owner.post("/org/settings/sso", {"op": "save", "issuer": idp_a, "client_id": "x", "client_secret": "y",
                                     "default_role": "viewer", "group_roles": "{}"})
    assert not TenantSSO.dangerously_all_tenants.filter(tenant=core).exists()
    assert Client().get(f"/org/sso/{core.slug}").status_code == 404


def test_the_global_login_page_lists_no_tenant_idp(make_tenant, idp_a):
    a, _ = make_tenant(plan="pro")
    _configure_through_portal(a, idp_a)
    page = Client().get("/accounts/login/").content.decode()
    assert a.slug not in page and a.name not in page


# --- SAML 2.0 --------------------------------------------------------------------------


@pytest.fixture
def saml_idp(tmp_path):
    from tests.portal.saml_idp import SamlIdP

    idp = SamlIdP(tmp_path, users={
        "dana": {"password": "idp-pass-1", "attributes": {"uid": ["dana"], "mail": ["dana@a-corp.test"],
                                                           "groups": ["eng-admins"]}},
    })
    yield idp
    idp.close()


def _saml_login(client, slug, idp, username, password):
    import html as html_lib
    import re

    start = client.post(f"/accounts/saml/{slug}/login/")
    assert start.status_code == 302, start.content[:300]
    answer = requests.post(start["Location"], data={"username": username, "password": password}, timeout=10)
    if answer.status_code != 200:
        return answer
    form = answer.text
    fields = dict(re.findall(r'name="(SAMLResponse|RelayState)" value="([^"]*)"', form))
    action = html_lib.unescape(re.search(r'action="([^"]+)"', form).group(1))
    acs = client.post(urlsplit(action).path, {k: html_lib.unescape(v) for k, v in fields.items()})
    if acs.status_code == 302 and acs["Location"].endswith("/acs/finish/"):
        return client.get(acs["Location"])  # allauth finishes in a second request (SameSite-safe)
    return acs


def test_saml_login_lands_in_the_right_tenant_with_the_mapped_role(make_tenant, saml_idp):
    tenant, _ = make_tenant(plan="enterprise")
    other, _ = make_tenant(plan="enterprise")
    owner = _owner(tenant)
    metadata = requests.get(f"{saml_idp.base}/metadata", timeout=5).text
    from django.core.files.uploadedfile import SimpleUploadedFile

    owner.post("/org/settings/sso", {"op": "save", "protocol": "saml", "default_role": "viewer",
                                     "group_roles": '{"eng-admins": "operator"}',
                                     "metadata": SimpleUploadedFile("idp.xml", metadata.encode())})
    config = TenantSSO.dangerously_all_tenants.get(tenant=tenant)
    assert config.protocol == "saml" and config.issuer == f"{saml_idp.base}/metadata"
    assert "Connection OK" in owner.post("/org/settings/sso", {"op": "test"}, follow=True).content.decode()
    owner.post("/org/settings/sso", {"op": "enable"})
    # The IdP trusts Levqor's service provider metadata, as an IdP admin would set up.
    config.refresh_from_db()
    assert config.enabled, config.tested_at
    sp_metadata = Client(HTTP_HOST="testserver").get(f"/accounts/saml/{tenant.slug}/metadata/")
    assert sp_metadata.status_code == 200
    saml_idp.trust_sp(sp_metadata.content.decode())

    dana = Client(HTTP_HOST="testserver")
    assert _saml_login(dana, tenant.slug, saml_idp, "dana", "wrong").status_code == 401  # the IdP refuses
    done = _saml_login(dana, tenant.slug, saml_idp, "dana", "idp-pass-1")
    assert done.status_code == 302, done.content.decode()[-1500:]
    member = TenantUser.dangerously_all_tenants.get(tenant=tenant, user__email="dana@a-corp.test")
    assert (member.role, member.sso_id) == ("operator", "dana")
    assert tenant.name in dana.get("/org").content.decode()
    login = AuditEvent.dangerously_all_tenants.filter(tenant_id=tenant.id, event="auth.login").get()
    assert login.metadata_json["method"] == "saml"
    assert not TenantUser.dangerously_all_tenants.filter(tenant=other, user__email="dana@a-corp.test").exists()
    # A response for this tenant replayed at another tenant's ACS is refused.
    assert Client(HTTP_HOST="testserver").get(f"/accounts/saml/{other.slug}/metadata/").status_code == 404  # no SSO there
