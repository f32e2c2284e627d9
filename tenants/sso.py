"""Per-tenant single sign-on (OIDC and SAML 2.0) through django-allauth.

Each tenant's identity provider is an allauth `openid_connect` or `saml` app with the
provider id `tenant-<slug>` (SAML apps are also named by the slug as client id, which
allauth's SAML URLs carry), built on the fly from `TenantSSO` (an OIDC client secret is
decrypted only then): nothing about tenants' IdPs sits in allauth's own tables in clear, and the global
login page lists none of them (that would reveal the tenants). A member signs in at
`/org/sso/<slug>`.

A login through tenant A's IdP creates or updates a membership of tenant A only: role
from the IdP's `groups` claim through `group_roles`, else `default_role`; `sso_id` is
the IdP's subject. Another tenant's portal still requires a membership there.
"""
from __future__ import annotations

import logging

import requests
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from allauth.socialaccount.models import SocialApp
from django.db import transaction
from django.utils import timezone

from compliance import audit, outbound
from levqor.errors import APIError
from tenants import secrets
from tenants.models import ROLES, Tenant, TenantSSO, TenantUser

logger = logging.getLogger(__name__)
PROVIDER_PREFIX = "tenant-"


SAML_ATTRIBUTES = {
    "uid": ["uid", "urn:oid:0.9.2342.19200300.100.1.1"],
    "email": ["email", "mail", "urn:oid:0.9.2342.19200300.100.1.3",
              "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress"],
    "first_name": ["givenName", "urn:oid:2.5.4.42"],
    "last_name": ["sn", "surname", "urn:oid:2.5.4.4"],
}


def parse_saml_metadata(xml: str) -> dict:
    """The IdP's entity id, SSO URL and signing certificate from its metadata XML."""
    from onelogin.saml2.idp_metadata_parser import OneLogin_Saml2_IdPMetadataParser

    try:
        idp = OneLogin_Saml2_IdPMetadataParser.parse(xml).get("idp", {})
    except Exception as exc:  # malformed XML, wrong document: the admin's input
        raise APIError("invalid_input", f"the IdP metadata cannot be read: {exc}"[:300]) from None
    cert = idp.get("x509cert") or (idp.get("x509certMulti", {}).get("signing") or [None])[0]
    sso_url = idp.get("singleSignOnService", {}).get("url")
    if not (idp.get("entityId") and sso_url and cert):
        raise APIError("invalid_input", "the IdP metadata lacks an entity id, an SSO URL or a signing certificate")
    return {"entity_id": idp["entityId"], "sso_url": sso_url, "x509cert": cert}


def _app_for(config: TenantSSO) -> SocialApp:
    if config.protocol == TenantSSO.Protocol.SAML:
        return SocialApp(provider="saml", provider_id=config.provider_id, name=config.tenant.name,
                         client_id=config.tenant.slug, settings={
                             "idp": parse_saml_metadata(config.idp_metadata_xml),
                             "attribute_mapping": SAML_ATTRIBUTES,
                             # Assertions must be signed by the IdP's key; HTTP only on allow-listed hosts.
                             "advanced": {"want_assertion_signed": True, "strict": True,
                                          "allow_single_label_domains": True}})
    return SocialApp(provider="openid_connect", provider_id=config.provider_id, name=config.tenant.name,
                     client_id=config.client_id, secret=secrets.decrypt(config.client_secret_encrypted),
                     settings={"server_url": config.issuer, "token_auth_method": "client_secret_post"})


def config_for_provider(provider_id: str, client_id: str | None = None) -> TenantSSO | None:
    if provider_id == "saml" and client_id:  # allauth's SAML views name the app by its client id (the slug)
        slug = client_id
    elif provider_id and provider_id.startswith(PROVIDER_PREFIX):
        slug = provider_id[len(PROVIDER_PREFIX):]
    else:
        return None
    return TenantSSO.dangerously_all_tenants.select_related("tenant").filter(
        tenant__slug=slug, tenant__status=Tenant.Status.ACTIVE).first()


class TenantSSOAdapter(DefaultSocialAccountAdapter):
    def list_apps(self, request, provider=None, client_id=None):
        # Only when a tenant's provider is named: listing every tenant's IdP would tell who
        # the tenants are.
        config = config_for_provider(provider or "", client_id)
        if config is None or not config.enabled:
            return []
        app = _app_for(config)
        if client_id and client_id != app.client_id:
            return []
        return [app]

    def on_authentication_error(self, request, provider, error=None, exception=None, extra_context=None):
        provider_id = getattr(getattr(provider, "app", None), "provider_id", "") or getattr(provider, "id", "")
        on_login_failed(request, provider_id, f"{error or ''} {exception or ''}".strip())
        return super().on_authentication_error(request, provider, error=error, exception=exception,
                                               extra_context=extra_context)

    def is_auto_signup_allowed(self, request, sociallogin):
        return True

    def populate_user(self, request, sociallogin, data):
        user = super().populate_user(request, sociallogin, data)
        # Usernames are global; a tenant's IdP subject is unique within that tenant.
        user.username = f"{sociallogin.account.provider}:{sociallogin.account.uid}"[:150]
        return user


def on_social_login(request, sociallogin, **kwargs) -> None:
    """allauth `user_logged_in` with a social login: the membership follows the IdP."""
    if sociallogin is None:
        return
    config = config_for_provider(sociallogin.account.provider)
    if config is None:
        return
    claims = sociallogin.account.extra_data or {}
    groups = claims.get("groups") or claims.get("userinfo", {}).get("groups") or []
    if isinstance(groups, str):
        groups = [groups]
    role = next((config.group_roles[g] for g in groups if config.group_roles.get(g) in ROLES), config.default_role)
    user = sociallogin.user
    with transaction.atomic():
        member, created = TenantUser.dangerously_all_tenants.get_or_create(
            tenant=config.tenant, user=user, defaults={"role": role, "sso_id": sociallogin.account.uid})
        if not created and (member.role != role or member.sso_id != sociallogin.account.uid):
            if member.role != role:
                audit.record("member.role_changed", tenant_id=config.tenant_id, actor=f"sso:{config.provider_id}",
                             metadata={"email": user.email, "from": member.role, "to": role, "via": "idp groups"})
            member.role, member.sso_id = role, sociallogin.account.uid
            member.save(update_fields=["role", "sso_id"])
        audit.record("auth.login", tenant_id=config.tenant_id, actor=f"user:{user.email}", request=request,
                     metadata={"method": config.protocol, "sub": sociallogin.account.uid, "role": role, "groups": groups[:20],
                               "new_member": created})
    from tenants.portal import SESSION_KEY, SSO_SESSION_KEY

    request.session[SESSION_KEY] = config.tenant_id
    request.session[SSO_SESSION_KEY] = sorted(set(request.session.get(SSO_SESSION_KEY, [])) | {config.tenant_id})


def on_login_failed(request, provider_id: str, reason: str) -> None:
    config = config_for_provider(provider_id)
    if config is not None:
        audit.record("auth.login_failed", tenant_id=config.tenant_id, actor=f"sso:{provider_id}", request=request,
                     metadata={"method": config.protocol, "reason": reason[:200]})


# --- configuration (services) --------------------------------------------------------------


def sso_configure(*, tenant: Tenant, default_role: str, group_roles: dict, actor: str, protocol: str = "oidc",
                  issuer: str = "", client_id: str = "", client_secret: str | None = None,
                  idp_metadata_xml: str = "") -> TenantSSO:
    if default_role not in ROLES or not isinstance(group_roles, dict) or any(r not in ROLES for r in group_roles.values()):
        raise APIError("invalid_input", f"roles must be among {', '.join(ROLES)}")
    existing = TenantSSO.dangerously_all_tenants.filter(tenant=tenant).first()
    if protocol == TenantSSO.Protocol.SAML:
        idp = parse_saml_metadata(idp_metadata_xml)
        outbound.check_destination(idp["sso_url"])
        issuer, client_id, client_secret = idp["entity_id"], "", None
    elif protocol == TenantSSO.Protocol.OIDC:
        if not isinstance(issuer, str) or not issuer.startswith(("https://", "http://")):
            raise APIError("invalid_input", "issuer must be the IdP's https:// URL")
        outbound.check_destination(issuer)
        if not client_id:
            raise APIError("invalid_input", "client_id is required")
        if not client_secret and (existing is None or not existing.client_secret_encrypted):
            raise APIError("invalid_input", "client_secret is required")
    else:
        raise APIError("invalid_input", "protocol must be oidc or saml")
    with transaction.atomic():
        config = existing or TenantSSO(tenant=tenant)
        changed_endpoint = (existing is None or existing.protocol != protocol or existing.issuer != issuer
                            or existing.client_id != client_id or existing.idp_metadata_xml != idp_metadata_xml)
        config.protocol, config.issuer, config.client_id = protocol, issuer, client_id
        config.default_role, config.group_roles = default_role, group_roles
        config.idp_metadata_xml = idp_metadata_xml if protocol == TenantSSO.Protocol.SAML else ""
        if protocol == TenantSSO.Protocol.SAML:
            config.client_secret_encrypted = ""
        if client_secret:
            config.client_secret_encrypted = secrets.encrypt(client_secret)
            changed_endpoint = True
        if changed_endpoint:
            config.enabled, config.tested_at = False, None  # test again before it may be enabled
        config.save()
        audit.record("sso.configured", tenant_id=tenant.id, actor=actor,
                     metadata={"protocol": protocol, "issuer": issuer, "client_id": client_id, "default_role": default_role,
                               "group_roles": group_roles, "enabled": config.enabled})
    return config


def sso_test(*, config: TenantSSO, actor: str) -> dict:
    """OIDC: fetch the IdP's discovery document and keys. SAML: the metadata names an SSO
    endpoint Levqor may reach and a signing certificate. Success lets SSO be enabled."""
    if config.protocol == TenantSSO.Protocol.SAML:
        try:
            idp = parse_saml_metadata(config.idp_metadata_xml)
            outbound.check_destination(idp["sso_url"])
        except APIError as exc:
            return {"ok": False, "error": exc.message}
        config.tested_at = timezone.now()
        config.save(update_fields=["tested_at"])
        return {"ok": True, "issuer": idp["entity_id"], "keys": 1}
    url = config.issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        outbound.check_destination(url)
        discovery = requests.get(url, timeout=5, allow_redirects=False).json()
        for field in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not discovery.get(field):
                raise ValueError(f"discovery document lacks {field}")
        outbound.check_destination(discovery["jwks_uri"])
        keys = requests.get(discovery["jwks_uri"], timeout=5, allow_redirects=False).json().get("keys", [])
        if not keys:
            raise ValueError("the IdP publishes no signing keys")
    except (requests.RequestException, ValueError, APIError) as exc:
        return {"ok": False, "error": str(getattr(exc, "message", exc))[:300]}
    config.tested_at = timezone.now()
    config.save(update_fields=["tested_at"])
    return {"ok": True, "issuer": discovery["issuer"], "keys": len(keys)}


def sso_enable(*, config: TenantSSO, enabled: bool, enforced: bool, actor: str) -> TenantSSO:
    if enabled and config.tested_at is None:
        raise APIError("sso_untested", "Test the connection successfully before enabling SSO.", status_code=409)
    with transaction.atomic():
        config.enabled, config.enforced = enabled, enabled and enforced
        config.save(update_fields=["enabled", "enforced"])
        audit.record("sso.configured", tenant_id=config.tenant_id, actor=actor,
                     metadata={"enabled": config.enabled, "enforced": config.enforced})
    return config
