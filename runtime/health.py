"""Per-tenant health checks: what an org admin (and the staff fleet view) asks "is my
organization healthy?" about. Each check answers ok, warning or failing, with why.

- storage: the tenant's schema exists and answers, or its database accepts a query;
- backup: an OK backup younger than LEVQOR_KPI_BACKUP_FRESH_HOURS (26 h by default:
  one nightly run may be late, not missed);
- migrations: the tenant is at the fleet's migration level;
- keys: at least one live key exists (a tenant with none cannot be reached by API).
"""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import connection, connections
from django.utils import timezone

OK, WARNING, FAILING = "ok", "warning", "failing"


def _storage(tenant) -> tuple[str, str]:
    from tenants import blueprint, broker

    try:
        if tenant.isolation == "schema":
            if not blueprint.schema_exists(tenant.schema_name):
                return FAILING, f"schema {tenant.schema_name} is missing"
            with connection.cursor() as cursor:
                cursor.execute(f'SELECT count(*) FROM "{tenant.schema_name}".django_migrations')
        else:
            with connections[broker.alias_for(tenant)].cursor() as cursor:
                cursor.execute("SELECT 1")
    except Exception as exc:  # the check exists to report this
        return FAILING, f"{tenant.isolation} unreachable: {exc.__class__.__name__}"
    return OK, f"{tenant.isolation} answers"


def _backup(tenant) -> tuple[str, str]:
    from runtime.models import Backup

    fresh_hours = getattr(settings, "LEVQOR_KPI_BACKUP_FRESH_HOURS", 26)
    last = Backup.dangerously_all_tenants.filter(tenant_id=tenant.id, status=Backup.Status.OK).order_by(
        "-created_at").first()
    if last is None:
        return WARNING, "no backup yet"
    age = timezone.now() - last.created_at
    if age > timedelta(hours=fresh_hours):
        return WARNING, f"last backup {int(age.total_seconds() // 3600)} h old"
    return OK, f"last backup {last.created_at:%Y-%m-%d %H:%M} UTC"


def _migrations(tenant) -> tuple[str, str]:
    from tenants.models import FleetMigrationStatus

    row = FleetMigrationStatus.objects.filter(tenant=tenant).first()
    if row is not None and row.status == "failed":
        return FAILING, f"the last fleet migration failed: {row.error[:200]}"
    return OK, "at the fleet's level"


def _keys(tenant) -> tuple[str, str]:
    from tenants.models import TenantKey

    live = TenantKey.dangerously_all_tenants.filter(tenant=tenant, revoked_at__isnull=True).count()
    return (OK, f"{live} live keys") if live else (WARNING, "no live API key")


CHECKS = {"storage": _storage, "backup": _backup, "migrations": _migrations, "keys": _keys}


def tenant_health(tenant) -> dict:
    results = {}
    for name, check in CHECKS.items():
        state, detail = check(tenant)
        results[name] = {"state": state, "detail": detail}
    states = {r["state"] for r in results.values()}
    overall = FAILING if FAILING in states else WARNING if WARNING in states else OK
    return {"status": overall, "checks": results, "checked_at": timezone.now().isoformat()}
