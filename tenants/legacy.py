"""Single-tenant mode (`TENANCY_ENABLED=false`) and where the migration plan stands.

**The legacy layout.** Before multi-tenancy Levqor served one organization, with the
product tables (the tenant apps: workflows, runs, templates) in one place of the main
database. Here that place is the schema `LEVQOR_LEGACY_SCHEMA` (default `levqor_legacy`),
never `public`: every tenant's search_path ends in `public`, so product tables there would
be a fall-through target for any query that slipped past a tenant's schema. A deployment
whose pre-tenancy tables sit in `public` has them moved there by M1 (a catalog-only
`ALTER TABLE ... SET SCHEMA`).

**The organization.** The control plane (keys, members, plans, quotas, the audit trail)
is keyed by organization, so the one organization is the Tenant row `levqor-main`
(a reserved slug). Its `schema_name` says where its data lives *now*: the legacy schema
until M3 switches writes, its own schema `t_levqor_main` after, the legacy schema again
after a rollback. There is only ever one copy that takes writes, so flipping
`TENANCY_ENABLED` either way, in any order with the steps, loses nothing.

**The switch.** `TENANCY_ENABLED=false`: every tenant route serves `levqor-main`; no
tenant header or host is needed (and none is honoured); self-service signups are closed.
`true`: tenants are resolved per request as usual. While a migration is under way (M1
done, M4 not) a tenant route with no tenant named falls back to `levqor-main`, so the
single-tenant clients keep working; M4 closes that path and opens signups. A
deployment that never ran M1 (born multi-tenant) behaves exactly as before.
"""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import ProgrammingError

from tenants import hotcache

ORG_SLUG = "levqor-main"
STEPS = ("m1", "m2", "m3", "m4")
# The legacy copy is kept this long after M4 (the rollback path); not a setting on purpose.
DROP_AFTER = timedelta(days=14)
_STATE_CACHE_KEY = ("tenancy_migration", "state")


def legacy_schema() -> str:
    return settings.LEVQOR_LEGACY_SCHEMA


def tenant_schema() -> str:
    """The schema `levqor-main` moves into: the one provisioning would give it."""
    from tenants.provisioning import schema_name_for

    return schema_name_for(ORG_SLUG)


def organization():
    from tenants.models import Tenant

    return Tenant.objects.filter(slug=ORG_SLUG).first()


def steps_done() -> dict[str, object]:
    """{step: done_at} for every recorded step; read from the database."""
    from tenants.models import TenancyMigrationStep

    try:
        return dict(TenancyMigrationStep.objects.filter(done_at__isnull=False).values_list("step", "done_at"))
    except ProgrammingError:  # the table does not exist yet (before M1 applied its migration); any other
        # database error propagates: read as "no step done" it would open signups for a while
        return {}


def _cached_steps() -> dict:
    """The recorded steps as the hot path sees them: the hot cache's TTL and fleet
    generation bound how stale they are (the commands bump the generation)."""
    if hotcache.cache.ttl() <= 0:
        return steps_done()
    hit = hotcache.cache.get(hotcache.cache.tenants, _STATE_CACHE_KEY)
    if hit is None:
        hit = steps_done()
        hotcache.cache.put(hotcache.cache.tenants, _STATE_CACHE_KEY, hit)
    return hit


def migration_in_progress() -> bool:
    done = _cached_steps()
    return "m1" in done and "m4" not in done


def headerless_fallback_open() -> bool:
    """A tenant route that names no tenant may be served as `levqor-main`."""
    return settings.TENANCY_ENABLED and migration_in_progress()


def signups_open() -> bool:
    """Self-service `POST /api/tenants` is open: multi-tenant mode and no migration under way."""
    return settings.TENANCY_ENABLED and not migration_in_progress()
