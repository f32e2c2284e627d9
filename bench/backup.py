"""Benchmark: one tenant's backup and restore time as the fleet grows.

Prints one JSON line: for 10, 100 and 1,000 tenant schemas present, the median of
`runtime.backups.backup_tenant()` and of `restore_into_staging()` (load + verify) for
one seeded tenant, beside `pg_dump -n <schema>` of the same schema (the method the issue
warns about: it reads the catalog of every schema), and the growth from 10 to 1,000
(target: <= 2x for our backup). The failover drill's RPO/RTO are bench/failover.py's.

Run: .venv/bin/python scripts/levqor_services.py exec -- .venv/bin/python bench/backup.py [--sizes 10,100,1000]
Uses its own database (levqor_bench_backup), dropped at the end unless --keep.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TARGET_GROWTH = 2.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def grow_to(n: int) -> None:
    from tenants import services
    from tenants.models import Tenant
    from tenants.progress import ProgressBar

    have = Tenant.objects.filter(slug__startswith="fill-").count()
    if have >= n:
        return
    bar = ProgressBar(n - have, label=f"tenants (to {n})")
    for i in range(have, n):
        services.tenant_create(name=f"Fill {i}", slug=f"fill-{i}", plan="core", actor="bench")
        bar.advance()
    bar.finish()


def seed(tenant, workflows: int) -> None:
    from tenants.context import tenant_context
    from workflows.models import Workflow, WorkflowRun

    with tenant_context(tenant):
        made = Workflow.objects.bulk_create([Workflow(name=f"wf {i}", definition={"steps": list(range(20))})
                                             for i in range(workflows)])
        WorkflowRun.objects.bulk_create([WorkflowRun(workflow=w, status="succeeded", result={"ok": True})
                                         for w in made for _ in range(3)])


def pg_dump_ms(schema: str) -> float | None:
    from django.conf import settings

    binary = shutil.which("pg_dump") or "/usr/lib/postgresql/15/bin/pg_dump"
    if not Path(binary).exists():
        return None
    db = settings.DATABASES["default"]
    env = {**os.environ, "PGPASSWORD": db.get("PASSWORD") or ""}
    args = [binary, "-h", db.get("HOST") or "127.0.0.1", "-p", str(db.get("PORT") or 5432), "-U", db.get("USER") or "postgres",
            "-n", schema, "-Fc", "--no-sync", "-f", os.devnull, db["NAME"]]
    t0 = time.perf_counter()
    subprocess.run(args, check=True, env=env, capture_output=True)
    return (time.perf_counter() - t0) * 1000


def measure(tenant, samples: int) -> dict:
    from runtime import backups

    backup_ms, restore_ms, dump_ms = [], [], []
    for _ in range(samples):
        t0 = time.perf_counter()
        backup = backups.backup_tenant(tenant=tenant, actor="bench")
        backup_ms.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        backups.restore_into_staging(backup, actor="bench")
        restore_ms.append((time.perf_counter() - t0) * 1000)
        backups.discard_staging(backup)
        dumped = pg_dump_ms(tenant.schema_name)
        if dumped is not None:
            dump_ms.append(dumped)
    rows = sum(t["rows"] for t in backup.manifest_json["tables"])
    return {"backup_ms": round(statistics.median(backup_ms), 1), "restore_ms": round(statistics.median(restore_ms), 1),
            "pg_dump_ms": round(statistics.median(dump_ms), 1) if dump_ms else None, "rows": rows,
            "size_bytes": backup.size_bytes}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    storage = tempfile.mkdtemp(prefix="levqor-bench-backup-")
    from bench.database import bench_database, configure

    configure("levqor_bench_backup", LEVQOR_REGIONS=json.dumps({"local": {"storage": storage}}),
              REDIS_URL=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13"), STRIPE_SECRET_KEY="")
    try:
        with bench_database(fresh=not args.keep, keep=args.keep):
            from django.core.management import call_command

            from tenants import services

            call_command("migrate", verbosity=0, interactive=False)
            subject = services.tenant_create(name="Measured", slug="measured", plan="core", actor="bench").tenant
            seed(subject, workflows=500)
            rows = {}
            for n in sizes:
                grow_to(n)
                rows[n] = measure(subject, args.samples)
                log(f"{n} tenants: {rows[n]}")
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    first, last = rows[sizes[0]], rows[sizes[-1]]
    growth = round(last["backup_ms"] / first["backup_ms"], 2)
    dump_growth = round(last["pg_dump_ms"] / first["pg_dump_ms"], 2) if first["pg_dump_ms"] else None
    result = {"bench": "backup", "by_tenants": {str(n): v for n, v in rows.items()},
              "growth_backup": growth, "growth_restore": round(last["restore_ms"] / first["restore_ms"], 2),
              "growth_pg_dump": dump_growth,
              "target": {"growth_max": TARGET_GROWTH, "met": growth <= TARGET_GROWTH},
              "failover": "bench/failover.py"}
    print(json.dumps(result))
    if sizes[-1] >= 1000:
        (ROOT / "bench" / "results" / "backup.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
