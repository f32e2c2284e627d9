"""Benchmark: time to provision a tenant, by isolation strategy and fleet size.

Not a test. Prints ONE JSON line of figures to stdout; progress goes to stderr.

    cd /work/main && .venv/bin/python bench/provision.py [--sizes 0,100,1000] [--samples N] [--keep]

Measured through the real service `tenants.services.tenant_create(...)`:

- "schema":   plan "core", a schema per tenant built from the template schema;
- "database": plan "enterprise", a database per tenant (CREATE DATABASE ... TEMPLATE);
- "migrate_baseline": the old way, what django-tenants' migrate_schemas does for a new
  tenant: CREATE SCHEMA, then MigrationExecutor.migrate() to every leaf node of the
  migration graph (state only for the shared apps, DDL for the tenant apps).

"N tenants present" means N tenant schemas (t_*) in the catalog when the samples of that
size start; the fleet is filled with `blueprint.create_tenant_schema()` (schemas only, no
Tenant rows: the catalog size is what matters). Samples taken at one size stay in the
fleet for the next size.

Runs against its own database (BENCH_DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/levqor_bench) and its own Redis database
(BENCH_REDIS_URL, default redis://127.0.0.1:6379/15), never the dev ones. At the end the
tenant databases are dropped, then the bench database and its template database; with
--keep the bench database stays but the tenant schemas, databases and rows are removed.
Redis keys the run created are deleted.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BENCH_URL = "postgres://postgres@127.0.0.1:5432/levqor_bench"
# Provisioning publishes to Redis (the fleet's tenancy generation): a Redis database of
# its own, so the dev processes never see the bench's tenants come and go.
DEFAULT_BENCH_REDIS_URL = "redis://127.0.0.1:6379/15"
BENCH_SLUG_PREFIX = "bench-"
TARGET = {"schema_p95_ms_at_1000": 1000, "speedup_min": 20}
MIGRATE_SLOW_S = 60.0  # above this per baseline sample, take 3 samples only


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- setup ---------------------------------------------------------------------------


def configure_environment() -> str:
    url = os.environ.get("BENCH_DATABASE_URL") or DEFAULT_BENCH_URL
    os.environ["DATABASE_URL"] = url
    os.environ["DJANGO_DEBUG"] = "true"
    os.environ["REDIS_URL"] = os.environ.get("BENCH_REDIS_URL") or DEFAULT_BENCH_REDIS_URL
    for name in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):  # they follow REDIS_URL
        os.environ.pop(name, None)
    os.environ["DJANGO_SETTINGS_MODULE"] = "levqor.settings"
    # Regions would otherwise be free to point tenant databases at another server.
    os.environ.pop("LEVQOR_REGIONS", None)
    # No injected faults in a benchmark.
    os.environ.pop("LEVQOR_FAULTS", None)
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    return url


def ensure_database(url: str) -> tuple[str, dict]:
    import dj_database_url
    import psycopg2

    cfg = dj_database_url.parse(url)
    name = cfg["NAME"]
    if "bench" not in name:
        # The bench drops schemas and, at the end, the whole database.
        raise SystemExit(f"refusing to run against database {name!r}: its name must contain 'bench'")
    conn = psycopg2.connect(dbname="postgres", user=cfg.get("USER") or None, password=cfg.get("PASSWORD") or None,
                            host=cfg.get("HOST") or None, port=cfg.get("PORT") or None)
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE DATABASE "{name}"')
                log(f"created database {name}")
    finally:
        conn.close()
    return name, cfg


# --- catalog helpers -----------------------------------------------------------------


def tenant_schemas() -> list[str]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(r"SELECT nspname FROM pg_namespace WHERE nspname LIKE 't\_%' ORDER BY nspname")
        return [row[0] for row in cursor.fetchall()]


def tenant_database_names(server: dict) -> list[str]:
    """Every tenant database of the bench database on the server (leaks included)."""
    from tenants import broker

    pattern = re.compile("^" + re.escape(broker.tenant_database_name(0)[:-1]) + r"\d+$")
    with broker.maintenance_cursor(server) as cursor:
        cursor.execute("SELECT datname FROM pg_database")
        names = [row[0] for row in cursor.fetchall()]
    return sorted(n for n in names if pattern.match(n))


def redis_keys() -> set:
    try:
        from levqor.redis import client

        return set(client().scan_iter(count=1000))
    except Exception as exc:  # Redis down: provisioning only logs a warning then
        log(f"warning: cannot list Redis keys ({exc})")
        return set()


def drop_new_redis_keys(before: set) -> int:
    new = redis_keys() - before
    if new:
        from levqor.redis import client

        client().delete(*new)
    return len(new)


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# --- statistics ------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summary(values: list[float]) -> dict:
    return {
        "p50_ms": round(percentile(values, 50), 1),
        "p95_ms": round(percentile(values, 95), 1),
        "max_ms": round(max(values), 1),
        "min_ms": round(min(values), 1),
    }


# --- the measurements --------------------------------------------------------------------


class Bench:
    def __init__(self, server: dict):
        self.server = server
        self.created = []  # Tenant rows made by tenant_create, for cleanup
        self.fill_counter = 0

    def fill_fleet(self, size: int) -> int:
        from tenants import blueprint

        present = len(tenant_schemas())
        missing = max(0, size - present)
        if missing:
            started = time.perf_counter()
            for done in range(1, missing + 1):
                blueprint.create_tenant_schema(f"t_benchfill_{self.fill_counter}")
                self.fill_counter += 1
                if done == missing or done % 10 == 0:
                    elapsed = time.perf_counter() - started
                    print(f"\r  filling fleet: {done}/{missing} schemas ({elapsed:5.1f}s)", end="",
                          file=sys.stderr, flush=True)
            print(file=sys.stderr, flush=True)
        return len(tenant_schemas())

    def provision(self, *, strategy: str, slug: str) -> tuple[float, dict]:
        from tenants import broker
        from tenants.services import tenant_create

        plan = "core" if strategy == "schema" else "enterprise"
        t0 = time.perf_counter()
        result = tenant_create(name=f"Bench {slug}", slug=slug, plan=plan, admin_email=f"{slug}@bench.invalid",
                               actor="bench")
        wall_ms = (time.perf_counter() - t0) * 1000
        tenant = result.tenant
        self.created.append(tenant)
        expected = "schema" if strategy == "schema" else "database"
        if tenant.isolation != expected:
            raise RuntimeError(f"plan {plan} provisioned a {tenant.isolation} tenant, expected {expected}")
        if tenant.isolation == "database":
            # Not part of the timing: keep connections (max_connections) from piling up.
            broker.forget(broker.alias_name(tenant.id))
        return wall_ms, {"provision_ms": tenant.provision_ms, "steps": dict(tenant.provision_steps or {})}

    def migrate_baseline(self, schema_name: str) -> float:
        from django.db import connection
        from django.db.migrations.executor import MigrationExecutor

        t0 = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE SCHEMA {quote(schema_name)}")
        connection.set_schema(schema_name)
        try:
            executor = MigrationExecutor(connection)
            targets = executor.loader.graph.leaf_nodes()
            executor.migrate(targets)
        finally:
            connection.set_schema_to_public()
        return (time.perf_counter() - t0) * 1000

    def run_size(self, size: int, samples: dict) -> dict:
        fleet = self.fill_fleet(size)
        log(f"size {size}: {fleet} tenant schemas present")
        out: dict = {"fleet_schemas_at_start": fleet}

        for strategy in ("schema", "database"):
            walls, stored, steps = [], [], {}
            for i in range(samples[strategy]):
                slug = f"bench-{strategy[0]}-{size}-{i}"
                wall, info = self.provision(strategy=strategy, slug=slug)
                walls.append(wall)
                stored.append(float(info["provision_ms"]))
                for name, ms in info["steps"].items():
                    steps.setdefault(name, []).append(float(ms))
                log(f"  {strategy:8s} {i + 1}/{samples[strategy]}: {wall:8.1f} ms wall, "
                    f"{info['provision_ms']} ms stored")
            out[strategy] = {
                "samples": len(walls),
                **summary(walls),
                "stored_provision_ms": summary(stored),
                "steps_p50_ms": {name: round(percentile(v, 50), 1) for name, v in steps.items()},
            }

        walls = []
        wanted = samples["migrate"]
        i = 0
        while i < wanted:
            wall = self.migrate_baseline(f"t_benchmig_{size}_{i}")
            walls.append(wall)
            log(f"  migrate  {i + 1}/{wanted}: {wall:8.1f} ms wall")
            if wall > MIGRATE_SLOW_S * 1000 and wanted > 3:
                log(f"  migrate baseline takes over {MIGRATE_SLOW_S:.0f} s per tenant: 3 samples only")
                wanted = 3
            i += 1
        out["migrate_baseline"] = {"samples": len(walls), **summary(walls)}
        if wanted < samples["migrate"]:
            out["migrate_baseline"]["note"] = f"over {MIGRATE_SLOW_S:.0f} s per tenant: {wanted} samples only"
        out["speedup_p95"] = round(out["migrate_baseline"]["p95_ms"] / out["schema"]["p95_ms"], 1)
        return out

    # --- cleanup ----------------------------------------------------------------------

    def drop_tenant_databases(self) -> list[str]:
        from tenants import broker

        names = {broker.tenant_database_name(t.id) for t in self.created if t.isolation == "database"}
        names.update(tenant_database_names(self.server))  # leaks from a crashed run, too
        for tenant in self.created:
            broker.forget(broker.alias_name(tenant.id))
        for name in sorted(names):
            broker.drop_database(self.server, name)
        return sorted(names)

    def drop_schemas_and_rows(self) -> int:
        """Remove the bench's tenants without a trace, then every tenant schema left."""
        from django.db import connection

        from tenants import provisioning
        from tenants.models import Tenant

        tenants = {t.id: t for t in self.created}
        tenants.update({t.id: t for t in Tenant.objects.filter(slug__startswith=BENCH_SLUG_PREFIX)})
        # The provisioning rollback: each step's compensation, in reverse. It is the
        # project's own "leave no trace" path (audit rows go through audit.purge, which
        # the append-only trigger allows), so it stays right as steps are added.
        steps = list(reversed(provisioning.registered_steps()))
        for tenant in tenants.values():
            request = provisioning.ProvisionRequest(name=tenant.name, slug=tenant.slug, plan=tenant.plan,
                                                    region=tenant.region, actor="bench", isolation=tenant.isolation)
            p = provisioning.Provisioning(request=request, tenant=tenant)
            for step in steps:
                step.compensate(p)
        schemas = tenant_schemas()
        started = time.perf_counter()
        for n, schema in enumerate(schemas, 1):
            with connection.cursor() as cursor:
                cursor.execute(f"DROP SCHEMA IF EXISTS {quote(schema)} CASCADE")
            if n == len(schemas) or n % 50 == 0:
                print(f"\r  dropping schemas: {n}/{len(schemas)} ({time.perf_counter() - started:5.1f}s)", end="",
                      file=sys.stderr, flush=True)
        if schemas:
            print(file=sys.stderr, flush=True)
        leftover_rows = Tenant.objects.filter(slug__startswith=BENCH_SLUG_PREFIX).count()
        if leftover_rows:
            log(f"warning: {leftover_rows} bench tenant rows could not be removed")
        return len(schemas)

    def drop_bench_databases(self, name: str) -> list[str]:
        from django.db import connections
        from tenants import broker

        connections.close_all()
        dropped = []
        for db in (broker.template_database_name(), name):
            broker.drop_database(self.server, db)
            dropped.append(db)
        return dropped


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0,100,1000", help="fleet sizes, comma separated (default 0,100,1000)")
    parser.add_argument("--samples", type=int, default=None,
                        help="samples per strategy and size (overrides the defaults 20 schema, 10 database, 3 migrate)")
    parser.add_argument("--schema-samples", type=int, default=20)
    parser.add_argument("--database-samples", type=int, default=10)
    parser.add_argument("--migrate-samples", type=int, default=3)
    parser.add_argument("--keep", action="store_true",
                        help="keep the bench database (tenant schemas, databases and rows are still removed)")
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if args.samples is not None:
        args.schema_samples = args.database_samples = args.migrate_samples = args.samples
    if min(args.schema_samples, args.database_samples, args.migrate_samples) < 1:
        parser.error("samples must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    url = configure_environment()
    db_name, _ = ensure_database(url)

    import django

    django.setup()

    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    server = settings.DATABASES["default"]
    redis_before = redis_keys()
    if settings.DATABASES["default"]["NAME"] != db_name:
        raise SystemExit(f"settings picked database {settings.DATABASES['default']['NAME']!r}, not {db_name!r}")
    bench = Bench(server)

    log(f"migrating {db_name} (public schema, template schema, template database)...")
    t0 = time.perf_counter()
    call_command("migrate", verbosity=0, interactive=False)
    log(f"  migrated in {time.perf_counter() - t0:.1f}s")
    connection.set_schema_to_public()

    # Leftovers of an interrupted run: this is the bench's own database.
    leaked_dbs = bench.drop_tenant_databases()
    leaked_schemas = bench.drop_schemas_and_rows()
    if leaked_dbs or leaked_schemas:
        log(f"removed leftovers of an earlier run: {leaked_schemas} schemas, {len(leaked_dbs)} databases")

    samples = {"schema": args.schema_samples, "database": args.database_samples, "migrate": args.migrate_samples}
    results: dict = {}
    warmup: dict = {}
    cleanup: dict = {}
    error = None
    started = time.perf_counter()
    try:
        # One unmeasured tenant per strategy: the first call in a process builds the
        # blueprint DDL, loads the policy file, etc. Reported, not counted.
        for strategy in ("schema", "database"):
            wall, _ = bench.provision(strategy=strategy, slug=f"bench-warm-{strategy[0]}")
            warmup[strategy] = round(wall, 1)
            log(f"warm-up {strategy}: {wall:.1f} ms")
        # ...and gone again, so that size 0 really starts with no tenant schema.
        bench.drop_tenant_databases()
        bench.drop_schemas_and_rows()
        bench.created.clear()
        for size in args.sizes:
            size_started = time.perf_counter()
            results[str(size)] = r = bench.run_size(size, samples)
            r["duration_s"] = round(time.perf_counter() - size_started, 1)
            log(f"size {size}: schema p95 {r['schema']['p95_ms']} ms, database p95 {r['database']['p95_ms']} ms, "
                f"migrate p95 {r['migrate_baseline']['p95_ms']} ms, speedup {r['speedup_p95']}x")
    except BaseException as exc:  # still clean up, then report
        error = f"{type(exc).__name__}: {exc}"
        log(f"bench failed: {error}")
        import traceback

        traceback.print_exc(file=sys.stderr)
    finally:
        log("cleaning up...")
        connection.set_schema_to_public()
        cleanup["tenant_databases_dropped"] = len(bench.drop_tenant_databases())
        if args.keep:
            cleanup["tenant_schemas_dropped"] = bench.drop_schemas_and_rows()
            cleanup["bench_databases_dropped"] = []
        else:
            cleanup["bench_databases_dropped"] = bench.drop_bench_databases(db_name)
        cleanup["leftover_tenant_databases"] = tenant_database_names(server)
        cleanup["redis_keys_deleted"] = drop_new_redis_keys(redis_before)

    measured = [s for s in args.sizes if str(s) in results]
    check_size = 1000 if 1000 in measured else (max(measured) if measured else None)
    met = bool(
        error is None and measured
        and results[str(check_size)]["schema"]["p95_ms"] <= TARGET["schema_p95_ms_at_1000"]
        and all(results[str(s)]["speedup_p95"] >= TARGET["speedup_min"] for s in measured)
    )
    report = {
        "bench": "provision",
        "machine": {"cpus": os.cpu_count()},
        "results": results,
        "target": TARGET,
        "met": met,
        "met_checked_at_size": check_size,
        "warmup_ms": warmup,
        "samples_requested": samples,
        "percentiles": "linear interpolation; wall time (perf_counter) around the call, in ms",
        "duration_s": round(time.perf_counter() - started, 1),
        "cleanup": cleanup,
    }
    if error:
        report["error"] = error
    print(json.dumps(report), flush=True)
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())
