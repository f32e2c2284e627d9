"""API key authentication (DRF).

A tenant key is bound to exactly one tenant. Used with another tenant's context it is
refused with 403; the attacked tenant's trail records the attempt with the key's prefix
only, and platform staff get an alert naming the key's own tenant.
"""
from __future__ import annotations

import time
from datetime import timedelta

from django.utils import timezone
from rest_framework import authentication, exceptions

from levqor.errors import APIError
from tenants import hotcache
from tenants import keys as keyring
from tenants.context import current_tenant_or_none
from tenants.models import PlatformKey, Tenant, TenantKey
from tenants.principals import Principal

LAST_USED_EVERY = timedelta(minutes=1)  # at most one write per key per minute


class APIKeyAuthentication(authentication.BaseAuthentication):
    keyword = "bearer"

    def authenticate_header(self, request):
        return 'Bearer realm="levqor"'

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, raw = header.partition(" ")
        if scheme.lower() != self.keyword:
            return None
        raw = raw.strip()
        ctx = current_tenant_or_none()
        if ctx is not None:  # tenant routes: a key verified moments ago needs only its hash looked up
            digest = keyring.digest(raw)
            hit = hotcache.verified_key(digest)
            if hit is not None and hit[0].tenant_id == ctx.id:
                _touch(hit[0], TenantKey.dangerously_all_tenants)
                return hit[1], hit[0]
        parsed = keyring.parse(raw)
        if parsed is None:
            raise exceptions.AuthenticationFailed("The API key is malformed.")
        if parsed.kind == keyring.PLATFORM_KEY_KIND:
            return self._platform(parsed)
        return self._tenant(parsed, request)

    def _platform(self, parsed):
        key = PlatformKey.objects.filter(prefix=parsed.prefix).first()
        if key is None or not keyring.matches(parsed, key.api_key_hash) or key.revoked_at:
            raise exceptions.AuthenticationFailed("The API key is not valid.")
        _touch(key, PlatformKey.objects)
        return Principal(kind="platform_key", actor=f"staff-key:{key.prefix}", is_staff=True, key_id=key.pk), key

    def _tenant(self, parsed, request):
        ctx = current_tenant_or_none()
        # Platform lookup: the key itself tells which tenant it belongs to. Tenant routes
        # read it from the hot cache (re-checked when the fleet generation moves).
        key = (hotcache.key_for(parsed.prefix) if ctx is not None else
               TenantKey.dangerously_all_tenants.select_related("tenant").filter(prefix=parsed.prefix).first())
        if key is None or not keyring.matches(parsed, key.api_key_hash):
            raise exceptions.AuthenticationFailed("The API key is not valid.")
        if key.revoked_at is not None or key.tenant.status in (Tenant.Status.DELETING, Tenant.Status.DELETED):
            raise exceptions.AuthenticationFailed("The API key has been revoked.")
        if ctx is not None and ctx.id != key.tenant_id:
            from tenants.security import cross_tenant_attempt

            cross_tenant_attempt(key=key, target_tenant_id=ctx.id, request=request)
            raise APIError("cross_tenant_forbidden", "This key does not belong to this tenant.", status_code=403)
        _touch(key, TenantKey.dangerously_all_tenants)
        principal = Principal(kind="tenant_key", actor=f"key:{key.prefix}", tenant_id=key.tenant_id, role=key.role,
                              key_id=key.pk)
        if ctx is not None:
            hotcache.remember_verified(key.api_key_hash, key, principal)
        return principal, key


def _touch(key, manager) -> None:
    # A clock read and a comparison on every request; the datetime work only once a minute.
    due = key.__dict__.get("_touch_due")
    if due is not None and time.monotonic() < due:
        return
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_EVERY:
        key.last_used_at = now  # the cached object too, or every request would write
        manager.filter(pk=key.pk).update(last_used_at=now)
    key._touch_due = time.monotonic() + (LAST_USED_EVERY - (now - key.last_used_at)).total_seconds()
