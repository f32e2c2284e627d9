"""The org admin portal as a member uses it (Django test client; the browser tests drive
the same pages in Chromium)."""
import re

from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client

from compliance.models import AuditEvent
from tenants.models import TenantUser


def _user(email, tenant=None, role=None):
    user = get_user_model().objects.create_user(username=email, email=email, password="a-long-pass-123")
    if tenant is not None:
        TenantUser(tenant=tenant, user=user, role=role).save(force_insert=True)
    client = Client()
    client.force_login(user)
    return user, client


def test_overview_shows_status_usage_members_and_activity(make_tenant):
    tenant, _ = make_tenant()
    _, owner = _user("owner@acme.test", tenant, "owner")
    page = owner.get("/org")
    assert page.status_code == 200
    html = page.content.decode()
    assert tenant.name in html and "plan <strong>core</strong>" in html and "api calls" in html
    assert "owner@acme.test" in html and "Recent activity" in html
    assert "Redeploy" in html and "No redeploys yet" in html


def test_member_of_two_orgs_picks_one(make_tenant):
    a, _ = make_tenant()
    b, _ = make_tenant()
    user, client = _user("both@x.test", a, "owner")
    TenantUser(tenant=b, user=user, role="viewer").save(force_insert=True)
    assert client.get("/org").url == "/org/choose"
    client.post("/org/choose", {"tenant_id": b.id})
    assert b.name in client.get("/org").content.decode()
    assert client.post("/org/choose", {"tenant_id": 999999}).status_code == 200  # not a member: stays


def test_invite_accept_change_role_and_last_owner_rules(make_tenant):
    tenant, _ = make_tenant()
    _, owner = _user("owner@acme.test", tenant, "owner")
    response = owner.post("/org/settings/members", {"op": "invite", "email": "new@acme.test", "role": "operator"},
                          follow=True)
    assert "Invitation sent to new@acme.test" in response.content.decode()
    link = re.search(r"/org/invite/[^\s<]+", mail.outbox[-1].body if mail.outbox else response.content.decode()).group(0)
    newbie, newbie_client = _user("new@acme.test")
    assert newbie_client.post(link).status_code == 302
    assert TenantUser.dangerously_all_tenants.get(tenant=tenant, user=newbie).role == "operator"
    assert newbie_client.post(link).status_code == 410  # single use
    _, stranger = _user("other@evil.test")
    assert stranger.post(link).status_code in (403, 410)
    member = TenantUser.dangerously_all_tenants.get(tenant=tenant, user=newbie)
    owner.post("/org/settings/members", {"op": "role", "member_id": member.id, "role": "admin"})
    assert TenantUser.dangerously_all_tenants.get(pk=member.pk).role == "admin"
    me = TenantUser.dangerously_all_tenants.get(tenant=tenant, user__email="owner@acme.test")
    demote = owner.post("/org/settings/members", {"op": "role", "member_id": me.id, "role": "viewer"}, follow=True)
    assert "last owner cannot be demoted" in demote.content.decode()
    remove = owner.post("/org/settings/members", {"op": "remove", "member_id": me.id}, follow=True)
    assert "last owner cannot be removed" in remove.content.decode()
    events = list(AuditEvent.dangerously_all_tenants.filter(tenant_id=tenant.id).values_list("event", flat=True))
    assert {"member.invited", "member.role_changed"} <= set(events)


def test_viewer_sees_actions_disabled_and_a_direct_post_is_denied_with_rationale(make_tenant):
    tenant, _ = make_tenant()
    _, viewer = _user("viewer@acme.test", tenant, "viewer")
    html = viewer.get("/org").content.decode()
    assert re.search(r"<button disabled[^>]*>Rotate keys", html)
    denied = viewer.post("/org/actions/rotate-keys", follow=True)
    assert "role viewer lacks keys:rotate" in denied.content.decode()
    assert viewer.get("/org/audit").status_code == 403  # viewers do not read the audit log
    deny = AuditEvent.dangerously_all_tenants.filter(tenant_id=tenant.id, event="policy.deny").first()
    assert deny.metadata_json["rationale"] == "role viewer lacks keys:rotate"


def test_owner_rotates_keys_and_sees_the_new_key_once(make_tenant):
    tenant, old_key = make_tenant()
    _, owner = _user("owner@acme.test", tenant, "owner")
    owner.post("/org/actions/rotate-keys")
    first = owner.get("/org").content.decode()
    new_key = re.search(r'<code class="key">([^<]+)</code>', first).group(1)
    assert new_key.startswith("lvq_") and new_key != old_key
    assert new_key not in owner.get("/org").content.decode()  # shown once
    from tests.conftest import client_for

    assert client_for(old_key, tenant).get("/api/workflows").status_code == 401
    assert client_for(new_key, tenant).get("/api/workflows").status_code == 200


def test_audit_log_filters_and_shows_denies(make_tenant):
    tenant, _ = make_tenant()
    _, owner = _user("owner@acme.test", tenant, "owner")
    _, viewer = _user("viewer@acme.test", tenant, "viewer")
    viewer.post("/org/actions/integrity")
    page = owner.get("/org/audit?event=policy.deny").content.decode()
    assert "integrity:run: role viewer lacks integrity:run" in page
    assert "tenant.created" not in page.split("<table>")[1]


def test_anonymous_is_sent_to_login_and_docs_render_the_matrix(db):
    assert Client().get("/org").url.startswith("/accounts/login/")
    docs = Client().get("/docs/multitenancy").content.decode()
    assert "<code>sso:configure</code>" in docs and "enterprise" in docs


def test_limits_backups_and_streams_pages(make_tenant, settings):
    from tests.compliance.receivers import Receiver

    settings.LEVQOR_OUTBOUND_ALLOW_HOSTS = ["127.0.0.1"]
    core, _ = make_tenant(plan="core")
    _, core_owner = _user("owner@core.test", core, "owner")
    assert "api calls" in core_owner.get("/org/settings/limits").content.decode()
    assert "No backups yet" in core_owner.get("/org/settings/backups").content.decode()
    assert "Plan core lacks feature audit_stream" in core_owner.get("/org/settings/streams").content.decode()

    ent, _ = make_tenant(plan="enterprise")
    _, owner = _user("owner@ent.test", ent, "owner")
    receiver = Receiver()
    try:
        added = owner.post("/org/settings/streams", {"op": "create", "name": "Splunk prod", "kind": "splunk_hec",
                                                     "url": receiver.url, "secret": "hec-token-123"}, follow=True)
        page = added.content.decode()
        assert "Stream added" in page and "Splunk prod" in page and ">active<" in page
        assert "hec-token-123" not in page
    finally:
        receiver.close()


def test_enforced_sso_sends_password_sessions_to_the_idp_but_not_owners(make_tenant):
    from tenants import secrets
    from tenants.models import TenantSSO

    tenant, _ = make_tenant(plan="pro")
    TenantSSO(tenant=tenant, issuer="https://idp.example.com", client_id="c", enabled=True, enforced=True,
              client_secret_encrypted=secrets.encrypt("s")).save()
    _, owner = _user("owner@acme.test", tenant, "owner")
    _, operator = _user("op@acme.test", tenant, "operator")
    assert owner.get("/org").status_code == 200  # break-glass: owners may still use a password
    assert operator.get("/org")["Location"] == f"/org/sso/{tenant.slug}"
    session = operator.session
    session["levqor_sso_tenants"] = [tenant.id]  # as the OIDC login records it
    session.save()
    assert operator.get("/org").status_code == 200


def test_password_login_asks_for_the_second_factor_when_totp_is_on(make_tenant):
    from allauth.mfa.totp.internal.auth import TOTP, format_hotp_value, generate_totp_secret, hotp_value, \
        yield_hotp_counters_from_time

    tenant, _ = make_tenant()
    user, _ = _user("mfa@acme.test", tenant, "admin")
    secret = generate_totp_secret()
    TOTP.activate(user, secret)
    browser = Client()
    step = browser.post("/accounts/login/", {"login": "mfa@acme.test", "password": "a-long-pass-123"})
    assert step.status_code == 302 and "/2fa/authenticate" in step["Location"]
    assert browser.get("/org").status_code == 302  # not signed in yet
    assert browser.post(step["Location"], {"code": "000000"}).status_code == 200  # wrong code: asked again
    code = format_hotp_value(hotp_value(secret, next(yield_hotp_counters_from_time())))
    done = browser.post(step["Location"], {"code": code})
    assert done.status_code == 302 and browser.get("/org").status_code == 200


def test_hand_made_form_values_are_refused_not_crashed(make_tenant):
    tenant, _ = make_tenant(plan="enterprise")
    _, owner = _user("owner@acme.test", tenant, "owner")
    for path, field in (("/org/settings/members", "member_id"), ("/org/settings/streams", "stream_id")):
        for value in ("abc", "-1", "9" * 40, ""):
            response = owner.post(path, {"op": "remove" if "members" in path else "delete", field: value}, follow=True)
            assert response.status_code == 200 and "No such" in response.content.decode()
