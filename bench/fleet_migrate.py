"""Benchmark: `manage.py migrate` across a fleet of tenant schemas.

Prints one JSON line: with N tenant schemas (default 1,000),
- the time of a no-change `migrate` (every tenant already at the blueprint);
- the time of `migrate` after an additive one-column migration is added to a tenant app
  (a temporary migration file, removed at the end), and whether every schema got the column.
Targets (issue 9): no-change ≤ 15 s, additive ≤ 60 s on this 2-core machine.

Run: .venv/bin/python scripts/levqor_services.py exec -- .venv/bin/python bench/fleet_migrate.py [--tenants 1000]
Uses its own database (levqor_bench_fleet), dropped at the end unless --keep.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BENCH_MIGRATION = ROOT / "workflows" / "migrations" / "9000_bench_additive_column.py"


def _write_bench_migration() -> None:
    from django.db.migrations.loader import MigrationLoader

    leaf = MigrationLoader(None, ignore_no_migrations=True).graph.leaf_nodes("workflows")[0]
    BENCH_MIGRATION.write_text(
        "from django.db import migrations, models\n\n\n"
        "class Migration(migrations.Migration):\n"
        f"    dependencies = [{leaf!r}]\n"
        "    operations = [migrations.AddField('workflow', 'bench_note', models.TextField(null=True, blank=True))]\n"
    )
    importlib.invalidate_caches()


def _remove_bench_migration() -> None:
    BENCH_MIGRATION.unlink(missing_ok=True)
    shutil.rmtree(BENCH_MIGRATION.parent / "__pycache__", ignore_errors=True)
    importlib.invalidate_caches()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    from bench.database import bench_database, configure

    configure("levqor_bench_fleet")
    _remove_bench_migration()  # a crashed earlier run must not leave it in the tree
    with bench_database(fresh=True, keep=args.keep):
        from django.core.management import call_command
        from django.db import connection

        from tenants import blueprint
        from tenants.models import Tenant

        call_command("migrate", verbosity=0)
        Tenant.objects.bulk_create([
            Tenant(name=f"Fleet {i}", slug=f"fleet-{i}", schema_name=f"t_fleet_{i}", plan="core", region="local",
                   status=Tenant.Status.ACTIVE, isolation=Tenant.Isolation.SCHEMA) for i in range(args.tenants)])
        started = time.monotonic()
        for i in range(args.tenants):
            blueprint.create_tenant_schema(f"t_fleet_{i}")
            if i % 50 == 0 or i == args.tenants - 1:
                print(f"\rschemas {i + 1}/{args.tenants}", end="", file=sys.stderr, flush=True)
        print(f"  ({time.monotonic() - started:.1f} s)", file=sys.stderr)

        def migrate_in_a_new_process() -> float:
            # As an operator runs it: a fresh `manage.py migrate`, Django start-up included.
            t0 = time.monotonic()
            subprocess.run([sys.executable, "manage.py", "migrate", "--verbosity", "0", "--fleet-workers",
                            str(args.workers)], cwd=ROOT, check=True)
            return time.monotonic() - t0

        no_change = migrate_in_a_new_process()
        try:
            _write_bench_migration()
            additive = migrate_in_a_new_process()
        finally:
            _remove_bench_migration()
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM information_schema.columns WHERE table_schema LIKE 't\\_fleet\\_%%' "
                           "AND table_name = 'workflows_workflow' AND column_name = 'bench_note'")
            with_column = cursor.fetchone()[0]
        from tenants.models import FleetMigrationStatus

        statuses = {}
        for status in FleetMigrationStatus.objects.values_list("status", flat=True):
            statuses[status] = statuses.get(status, 0) + 1
    print(json.dumps({
        "bench": "fleet_migrate", "machine": {"cpus": os.cpu_count()}, "tenants": args.tenants,
        "workers": args.workers, "no_change_s": round(no_change, 2), "additive_column_s": round(additive, 2),
        "schemas_with_new_column": with_column, "statuses": statuses,
        "target": {"no_change_s": 15, "additive_column_s": 60},
        "met": no_change <= 15 and additive <= 60 and with_column == args.tenants,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
