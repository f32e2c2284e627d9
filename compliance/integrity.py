"""The Integrity Pack: a tenant's controls checked and recorded, in its tenant context.

Each check returns (status, detail) with status pass | warn | fail | skipped; the run is
the worst of them. To add a check: write a function taking the Tenant and add it to
CHECKS; a check that cannot run yet (its subsystem is not built) says `skipped` with why,
it never passes by default.
"""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import connection, connections, transaction
from django.utils import timezone

from compliance import audit
from compliance.models import Alert, IntegrityRun

ORDER = {"pass": 0, "skipped": 0, "warn": 1, "fail": 2}


def check_audit_chain(tenant):
    intact, seq = audit.verify_chain(tenant.id)
    return ("pass", "hash chain intact") if intact else ("fail", f"hash chain broken at seq {seq}")


def check_isolation(tenant):
    from tenants import blueprint, broker
    from tenants.models import TenantKey

    problems = []
    if tenant.isolation == "schema":
        if not blueprint.schema_exists(tenant.schema_name):
            return "fail", f"schema {tenant.schema_name} is missing"
        with connection.cursor() as cursor:
            # Anything in this schema that points into another schema (other than public).
            cursor.execute(
                """SELECT DISTINCT c.conname, rn.nspname FROM pg_constraint c
                   JOIN pg_namespace n ON n.oid = c.connamespace
                   JOIN pg_class r ON r.oid = c.confrelid JOIN pg_namespace rn ON rn.oid = r.relnamespace
                   WHERE n.nspname = %s AND c.contype = 'f' AND rn.nspname NOT IN (%s, 'public')""",
                [tenant.schema_name, tenant.schema_name])
            problems += [f"foreign key {name} reaches schema {other}" for name, other in cursor.fetchall()]
            cursor.execute(
                """SELECT DISTINCT v.relname, dn.nspname FROM pg_class v
                   JOIN pg_namespace vn ON vn.oid = v.relnamespace
                   JOIN pg_rewrite rw ON rw.ev_class = v.oid
                   JOIN pg_depend d ON d.objid = rw.oid JOIN pg_class t ON t.oid = d.refobjid
                   JOIN pg_namespace dn ON dn.oid = t.relnamespace
                   WHERE vn.nspname = %s AND dn.nspname NOT IN (%s, 'public', 'pg_catalog')""",
                [tenant.schema_name, tenant.schema_name])
            problems += [f"view {name} reads schema {other}" for name, other in cursor.fetchall()]
            cursor.execute("SELECT count(*) FROM information_schema.role_table_grants WHERE table_schema = %s "
                           "AND grantee = 'PUBLIC'", [tenant.schema_name])
            if cursor.fetchone()[0]:
                problems.append("tables are granted to PUBLIC")
    else:
        name = broker.tenant_database_name(tenant.id)
        with broker.maintenance_cursor(broker.server_config(tenant.region)) as cursor:
            cursor.execute("SELECT datacl::text FROM pg_database WHERE datname = %s", [name])
            row = cursor.fetchone()
        if row is None:
            return "fail", f"database {name} is missing"
        acl = row[0] or ""
        if acl == "" or any(entry.startswith("=") and "c" in entry.split("/")[0] for entry in acl.strip("{}").split(",")):
            problems.append("any role may CONNECT to the tenant database")
    keys = TenantKey.dangerously_all_tenants.filter(tenant=tenant, revoked_at__isnull=True)
    if any(len(k.api_key_hash) != 64 for k in keys):
        problems.append("a key is stored other than as a keyed hash")
    return ("fail", "; ".join(problems)) if problems else ("pass", f"{tenant.isolation} isolation intact; "
                                                                   f"{keys.count()} live keys bound to this tenant only")


def check_migrations(tenant):
    from tenants import blueprint, broker

    expected = blueprint.expected_migrations()
    if tenant.isolation == "schema":
        with connection.cursor() as cursor:
            cursor.execute(f'SELECT app, name FROM "{tenant.schema_name}".django_migrations')
            applied = set(cursor.fetchall())
    else:
        with connections[broker.alias_for(tenant)].cursor() as cursor:
            cursor.execute("SELECT app, name FROM django_migrations")
            applied = set(cursor.fetchall())
    missing = expected - applied
    return ("pass", f"{len(expected)} tenant migrations applied") if not missing else (
        "fail", f"{len(missing)} migrations missing: {sorted(missing)[:3]}")


def check_policy_file(tenant):
    from policy.engine import PolicyFileError, load

    try:
        load()
    except PolicyFileError as exc:
        return "fail", str(exc)
    return "pass", "policy file valid"


def check_key_age(tenant):
    from tenants.models import TenantKey

    window = timedelta(days=settings.LEVQOR_KEY_ROTATION_DAYS)
    old = list(TenantKey.dangerously_all_tenants.filter(tenant=tenant, revoked_at__isnull=True,
                                                        created_at__lt=timezone.now() - window).values_list("prefix", flat=True))
    return ("warn", f"keys older than {window.days} days: {', '.join(old)}") if old else (
        "pass", f"no live key older than {window.days} days")


def check_open_alerts(tenant):
    open_alerts = list(Alert.objects.filter(tenant_id=tenant.id, audience=Alert.Audience.TENANT,
                                            resolved_at__isnull=True).values_list("kind", flat=True))
    return ("warn", f"{len(open_alerts)} open alerts: {', '.join(sorted(set(open_alerts)))}") if open_alerts else (
        "pass", "no open alerts")


def check_backups(tenant):
    """Replaced by the runtime app's check (runtime/backups.py) through register_check();
    only a deployment without it reports this."""
    return "skipped", "per-tenant backups are not installed; nothing to verify"


def register_check(name: str, check) -> None:
    """Apps above compliance add or replace a check (the runtime: backups)."""
    CHECKS[name] = check


def check_sso(tenant):
    """SSO and MFA settings against the plan: SSO only on plans with the feature; where
    SSO is not enforced, how many password members have a second factor."""
    from allauth.mfa.models import Authenticator

    from policy.plans import plan_has
    from tenants.models import TenantSSO, TenantUser

    config = TenantSSO.dangerously_all_tenants.filter(tenant=tenant).first()
    if config and config.enabled and not plan_has(tenant.plan, "sso"):
        return "fail", f"SSO is enabled but plan {tenant.plan} lacks the sso feature"
    members = TenantUser.dangerously_all_tenants.filter(tenant=tenant, sso_id="")
    with_mfa = members.filter(user__in=Authenticator.objects.filter(type=Authenticator.Type.TOTP).values("user")).count()
    total = members.count()
    sso_state = ("SSO enforced" if config and config.enforced else "SSO enabled" if config and config.enabled
                 else "no SSO")
    detail = f"{sso_state}; {with_mfa} of {total} password members use a second factor"
    if plan_has(tenant.plan, "sso") and not (config and config.enforced) and total and with_mfa < total:
        return "warn", detail
    return "pass", detail


CHECKS = {
    "audit_chain": check_audit_chain,
    "isolation": check_isolation,
    "migrations": check_migrations,
    "policy_file": check_policy_file,
    "key_rotation": check_key_age,
    "open_alerts": check_open_alerts,
    "backups": check_backups,
    "sso_mfa": check_sso,
}


def integrity_run(*, tenant, actor: str) -> IntegrityRun:
    from tenants.context import tenant_context

    results = []
    with tenant_context(tenant):
        for name, check in CHECKS.items():
            try:
                status, detail = check(tenant)
            except Exception as exc:  # a check that crashes is a failed check, with its reason
                status, detail = "fail", f"check crashed: {type(exc).__name__}: {exc}"[:300]
            results.append({"check": name, "status": status, "detail": detail})
    overall = max((r["status"] for r in results), key=ORDER.__getitem__)
    overall = "pass" if overall == "skipped" else overall
    with transaction.atomic():
        run = IntegrityRun(tenant_id=tenant.id, status=overall, results=results, actor=actor)
        run.save(force_insert=True)
        audit.record("integrity.checked", tenant_id=tenant.id, actor=actor,
                     metadata={"status": overall, "run_id": run.pk,
                               "failed": [r["check"] for r in results if r["status"] == "fail"]})
    return run
