"""Migrating the fleet: every tenant schema and database that is behind the blueprint.

- **Skip cheaply.** One UNION query per 200 schemas tells which tenants already hold every
  expected `django_migrations` row; they are not touched and no migration graph is loaded.
- **Replay.** A tenant that is behind replays the SQL its missing migrations ran on the
  template schema (captured by `blueprint.migrate_tenant_apps(capture=True)`), in one
  transaction with the `django_migrations` rows. Migrations that are not pure schema
  operations (RunPython) fall back to Django's executor for that tenant.
- **Waves.** A canary wave runs first, one tenant at a time; then the rest run in parallel
  on `workers` threads (each with its own connection). The first failure stops the run:
  nothing new is started, and the failure is recorded.
- **Progress and resume.** A progress bar while it runs; a per-tenant status row
  (`manage.py fleet_status`). At the start every tenant to migrate is marked `pending` and
  the rows of tenants found current are cleared, so after a stop the table says exactly
  which tenants failed, which were `running` when the process died, and which never
  started. Running again resumes: finished tenants are skipped by the cheap check.
"""
from __future__ import annotations

import math
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

from django.db import DatabaseError, connection, connections, transaction

from tenants import blueprint, broker
from tenants.progress import ProgressBar


class FleetMigrationFailed(RuntimeError):
    pass


def _behind_schemas(schemas: list[str], expected: set[tuple[str, str]]) -> list[str]:
    if not schemas or not expected:
        return []
    pairs = ", ".join(["(%s, %s)"] * len(expected))
    params_pairs = [value for pair in sorted(expected) for value in pair]
    behind = []

    def counts(chunk):
        parts, params = [], []
        for schema in chunk:
            parts.append(
                f'SELECT %s, count(*) FROM {blueprint._quote(schema)}.django_migrations WHERE (app, name) IN ({pairs})'
            )
            params.extend([schema, *params_pairs])
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(" UNION ALL ".join(parts), params)
            return cursor.fetchall()

    for start in range(0, len(schemas), 200):
        chunk = schemas[start : start + 200]
        try:
            rows = counts(chunk)
        except DatabaseError:
            # A damaged schema fails the whole query: check one by one, and treat the ones
            # that cannot answer as behind, so that their migration fails visibly.
            rows = []
            for schema in chunk:
                try:
                    rows += counts([schema])
                except DatabaseError:
                    rows.append((schema, -1))
        behind.extend(schema for schema, count in rows if count < len(expected))
    return behind


def _applied(cursor, table: str) -> set[tuple[str, str]]:
    cursor.execute(f"SELECT app, name FROM {table}")
    return set(cursor.fetchall())


def _replay(cursor, missing, scripts, table: str) -> None:
    for app, name in missing:
        for sql, params in scripts[(app, name)].statements:
            cursor.execute(sql, params)
        cursor.execute(f"INSERT INTO {table} (app, name, applied) VALUES (%s, %s, now())", [app, name])


def migrate_tenant(tenant, *, order, scripts) -> tuple[str, list]:
    """Bring one tenant to the blueprint; returns (how, applied migrations)."""
    if tenant.isolation == "schema":
        table = f"{blueprint._quote(tenant.schema_name)}.django_migrations"
        with transaction.atomic():
            with connection.cursor() as cursor:
                missing = [m for m in order if m not in _applied(cursor, table)]
            if not missing:
                return "up_to_date", []
            if all(m in scripts for m in missing):
                with blueprint.in_schema(tenant.schema_name, include_public=True), connection.cursor() as cursor:
                    _replay(cursor, missing, scripts, table)
                return "replayed", missing
        connection.set_schema(tenant.schema_name)
        try:
            blueprint.migrate_tenant_apps(connection)
        finally:
            connection.set_schema_to_public()
        return "migrated", missing
    alias = broker.alias_for(tenant)
    try:
        conn = connections[alias]
        with transaction.atomic(using=alias), conn.cursor() as cursor:
            missing = [m for m in order if m not in _applied(cursor, "django_migrations")]
            if not missing:
                return "up_to_date", []
            if all(m in scripts for m in missing):
                _replay(cursor, missing, scripts, "django_migrations")
                return "replayed", missing
        blueprint.migrate_tenant_apps(conn)
        return "migrated", missing
    finally:
        broker.forget(alias)


def _record(tenant, status: str, applied, error: str = "", seconds: float = 0.0) -> None:
    from tenants.models import FleetMigrationStatus

    FleetMigrationStatus.objects.update_or_create(
        tenant=tenant, defaults={"status": status, "applied": [list(m) for m in applied], "error": error[:2000],
                                 "seconds": round(seconds, 3)})


def _start_status_table(todo) -> None:
    """The table describes this run only: every tenant it will migrate is `pending`, every
    other row (tenants found current, or left over from an earlier run) is cleared. After a
    stop, `pending` rows are exactly the tenants that never started."""
    from tenants.models import FleetMigrationStatus

    rows = [FleetMigrationStatus(tenant=t, status="pending", applied=[], error="", seconds=0) for t in todo]
    with transaction.atomic():
        FleetMigrationStatus.objects.exclude(tenant_id__in=[t.pk for t in todo]).delete()
        FleetMigrationStatus.objects.bulk_create(
            rows, batch_size=1000, update_conflicts=True, unique_fields=["tenant"],
            update_fields=["status", "applied", "error", "seconds", "updated_at"])


def migrate_fleet(*, stdout=None, workers: int = 2, canary: int | None = None) -> dict:
    from tenants.models import Tenant, TenantMigrationScript

    expected = blueprint.expected_migrations()
    order = [m for m in blueprint.ordered_expected_migrations() if m in expected]
    scripts = {(s.app, s.name): s for s in TenantMigrationScript.objects.filter(replayable=True)}
    tenants = list(Tenant.objects.exclude(status__in=[Tenant.Status.DELETED, Tenant.Status.PROVISIONING]).order_by("id"))
    schema_tenants = [t for t in tenants if t.isolation == Tenant.Isolation.SCHEMA]
    behind = set(_behind_schemas([t.schema_name for t in schema_tenants if blueprint.schema_exists(t.schema_name)],
                                 expected))
    todo = [t for t in schema_tenants if t.schema_name in behind]
    todo += [t for t in tenants if t.isolation == Tenant.Isolation.DATABASE]  # checked inside, one query each
    result = {"checked": len(tenants), "behind": len(todo), "replayed": 0, "migrated": 0, "up_to_date": 0,
              "failed": 0}
    _start_status_table(todo)
    if not todo:
        if stdout:
            stdout.write(f"Tenants checked: {len(tenants)}; all at the blueprint.")
        return result
    bar = ProgressBar(len(todo), label="tenants", stream=stdout) if stdout else None
    lock = threading.Lock()
    failures: list[str] = []
    stop = threading.Event()  # set by the first failure: queued tenants are not started

    def one(tenant):
        if stop.is_set():
            return  # a pool worker can dequeue the next tenant before the main thread cancels it
        started = time.monotonic()
        try:
            _record(tenant, "running", [])
            try:
                how, applied = migrate_tenant(tenant, order=order, scripts=scripts)
            except Exception as exc:
                stop.set()
                with lock:
                    result["failed"] += 1
                    failures.append(f"{tenant.slug}: {type(exc).__name__}: {exc}")
                _record(tenant, "failed", [], f"{type(exc).__name__}: {exc}", time.monotonic() - started)
                raise FleetMigrationFailed(f"{tenant.slug}: {exc}") from exc
            _record(tenant, how, applied, seconds=time.monotonic() - started)
            with lock:
                result[how] += 1
                if bar:
                    bar.advance()
        finally:
            if threading.current_thread() is not threading.main_thread():
                connections.close_all()  # pool threads hold no connection between tenants

    canary = canary if canary is not None else max(1, math.ceil(len(todo) / 100))
    try:
        for tenant in todo[:canary]:  # wave 1: canaries, one by one
            one(tenant)
        rest = todo[canary:]
        if rest:
            with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                futures = [pool.submit(one, t) for t in rest]
                done, pending = wait(futures, return_when=FIRST_EXCEPTION)
                for future in pending:
                    future.cancel()
                for future in done:
                    if future.exception():
                        raise future.exception()
    except FleetMigrationFailed:
        if bar:
            bar.end()  # the line stays at what was done: a stopped run never shows n/n
        raise FleetMigrationFailed("stopped at the first failure: " + "; ".join(failures[:3]))
    if bar:
        bar.finish()
    if stdout:
        stdout.write(f"Tenants checked: {result['checked']}, replayed: {result['replayed']}, "
                     f"migrated: {result['migrated']}, already current: {result['up_to_date']}.")
    return result
