"""The hot path's memory: tenant contexts and API keys, without a database query.

Every tenant request needs its tenant (status, plan, schema) and its caller's key. Both
change rarely, so each process keeps them in memory. Staleness is bounded two ways:

- a *generation* number in Redis, bumped (after commit) whenever a tenant, domain or key
  changes anywhere in the fleet. The quota script every tenant request already runs
  returns it, so a process learns of a change on its next request at no extra round trip
  and then re-checks that request against the database (`revalidate`);
- a TTL (LEVQOR_HOT_CACHE_SECONDS, default 5) as a backstop, should Redis be unreachable.

Only tenant routes use it; platform routes always read the database.
"""
from __future__ import annotations

import logging
import threading
import time

import redis
from django.conf import settings
from django.db import transaction

logger = logging.getLogger(__name__)
GENERATION_KEY = "levqor:tenancy:generation"


class _Cache:
    def __init__(self):
        self.lock = threading.Lock()
        self.tenants: dict[tuple, tuple[float, object]] = {}
        self.keys: dict[str, tuple[float, object]] = {}
        # Keys this process has verified: keyed hash of the presented key -> (key, principal).
        self.verified: dict[str, tuple[float, tuple]] = {}
        self.generation: int | None = None

    def ttl(self) -> float:
        return float(getattr(settings, "LEVQOR_HOT_CACHE_SECONDS", 5))

    def get(self, table: dict, key):
        entry = table.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, table: dict, key, value) -> None:
        with self.lock:
            table[key] = (time.monotonic() + self.ttl(), value)

    def clear(self) -> None:
        with self.lock:
            self.tenants.clear()
            self.keys.clear()
            self.verified.clear()


cache = _Cache()


def tenant_for(kind: str, value):
    """(tenant, context) for a tenant reference, from memory or the database."""
    from tenants.context import build_context
    from tenants.models import Tenant

    if cache.ttl() <= 0:
        tenant = _load_tenant(kind, value)
        return (tenant, build_context(tenant) if tenant and tenant.status == Tenant.Status.ACTIVE else None)
    hit = cache.get(cache.tenants, (kind, value))
    if hit is not None:
        return hit
    tenant = _load_tenant(kind, value)
    if tenant is None:
        return None, None
    ctx = build_context(tenant) if tenant.status == Tenant.Status.ACTIVE else None
    cache.put(cache.tenants, (kind, value), (tenant, ctx))
    return tenant, ctx


def _load_tenant(kind: str, value):
    from tenants.models import Tenant

    if kind == "slug":
        return Tenant.objects.filter(slug=value).first()
    return Tenant.objects.filter(pk=value).first()


def key_for(prefix: str):
    from tenants.models import TenantKey

    hit = cache.get(cache.keys, prefix) if cache.ttl() > 0 else None
    if hit is not None:
        return hit
    key = TenantKey.dangerously_all_tenants.select_related("tenant").filter(prefix=prefix).first()
    if key is not None and cache.ttl() > 0:
        cache.put(cache.keys, prefix, key)
    return key


def verified_key(digest: str):
    """(key, principal) for a presented key whose keyed hash is `digest`, if this process
    verified that very key within the TTL; None otherwise (verify it in full).

    The keyed hash is what the key table stores and what verification compares, so a hit
    is the same check as a full verification, without parsing the key, walking the key
    and tenant objects and building the principal again. Entries go with the rest of the
    cache: on a change made here at once, on one made elsewhere at the request that learns
    of it (whose key revalidate() then re-reads from the database), at the TTL otherwise.
    The plaintext key is never kept."""
    return cache.get(cache.verified, digest) if cache.ttl() > 0 else None


def remember_verified(digest: str, key, principal) -> None:
    if cache.ttl() > 0:
        cache.put(cache.verified, digest, (key, principal))


def observe_generation(generation: int | None) -> bool:
    """Record the fleet generation seen by this request; True if it moved (re-check!)."""
    if generation is None or generation == cache.generation:  # the usual case needs no lock
        return False
    with cache.lock:
        previous = cache.generation
        cache.generation = generation
    if previous is not None and previous != generation:
        cache.clear()
        return True
    return False


def bump() -> None:
    """Tell every process that tenancy data changed (after the current transaction commits)."""
    cache.clear()

    def _send():
        from levqor.redis import client

        try:
            client().incr(GENERATION_KEY)
        except redis.RedisError:  # the TTL bounds staleness until Redis is back
            logger.warning("could not publish a tenancy change: Redis unavailable")

    transaction.on_commit(_send)


# Load shedding: a tenant over its rate limit is refused here, before authentication and
# the quota round trip, until its Retry-After has passed. The limit is per tenant, so this
# refuses nothing the token bucket would have let through.
_throttled: dict[int, float] = {}


def throttle(tenant_id: int, seconds: float) -> None:
    _throttled[tenant_id] = time.monotonic() + seconds


def throttled_for(tenant_id: int) -> float:
    """Seconds this process will keep refusing the tenant; 0 when it is not throttled."""
    until = _throttled.get(tenant_id)
    if until is None:
        return 0
    left = until - time.monotonic()
    if left <= 0:
        _throttled.pop(tenant_id, None)
        return 0
    return left
