"""Benchmark: the DR drill of tests/runtime/test_failover.py, outside pytest.

A real PostgreSQL primary with a synchronous streaming replica on free ports, region
"drill" pointing at them, enterprise (database-per-tenant) tenants there, writes through
the tenant API, the primary killed (`pg_ctl stop -m immediate`), the region failed over
(runtime/dr.py); then every acknowledged write is looked for on the promoted server.

Prints one JSON line and writes it to bench/results/failover.json:
- rpo_seconds / rpo_bytes: the replica lag at the failure, from the primary's
  pg_stat_replication (flush lag, unflushed WAL bytes), as the Failover row records it;
- rto_seconds: the primary stopped -> the first tenant request answered 2xx again;
- writes_acked / writes_found / lost: acknowledged writes, found on the promoted server.
Targets (issue 6): RPO <= 5 s, RTO <= 60 s, nothing acknowledged lost.

--async: the replica is asynchronous and streams over a relay delaying the primary's WAL
by --link-delay seconds (tests/runtime/drill.py DelayedLink); the outage cuts the link and
kills the primary, so WAL in flight is lost. Writes to bench/results/failover_async.json.
There the target is: lag at the failure (lag_at_failure_seconds, measured from the
promoted server's last replayed commit and the last write acknowledged before the stop;
lag_at_failure_bytes from the dead primary's end of WAL) and the health check's sample
(rpo_seconds) <= 5 s, RTO <= 60 s, and every lost write inside that lag window.

Run: .venv/bin/python scripts/levqor_services.py exec -- .venv/bin/python bench/failover.py [--tenants 2] [--async]
Uses its own database (levqor_bench_failover, dropped at the end unless --keep) and
Redis database 14 (BENCH_REDIS_URL; the benches use 13-15, test sessions lower ones),
where it deletes the keys it created: run benches one at a time.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
REGION = "drill"
TARGET = {"rpo_seconds": 5, "rto_seconds": 60, "lost": 0}
TARGET_ASYNC = {"rpo_seconds": 5, "rto_seconds": 60, "lost_outside_lag_window": 0}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", type=int, default=2)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--async", dest="asynchronous", action="store_true")
    parser.add_argument("--link-delay", type=float, default=1.0)
    parser.add_argument("--warmup-writes", type=int, default=0, help="writes before the failure (100; --async 300)")
    args = parser.parse_args()
    from bench.database import bench_database, configure

    os.environ.pop("LEVQOR_REGIONS", None)  # region "drill" is the bench's own
    configure("levqor_bench_failover", REDIS_URL=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
              DJANGO_EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend", LEVQOR_LOG_LEVEL="CRITICAL",
              STRIPE_SECRET_KEY="")
    with bench_database(fresh=True, keep=args.keep):
        from django.conf import settings
        from django.core.management import call_command

        from levqor.redis import client
        from tests.runtime.drill import PgPair, point_region, provision_tenants, run_drill

        keys_before = set(client().scan_iter())
        call_command("migrate", verbosity=0)
        pair = PgPair(sync=not args.asynchronous, link_delay=args.link_delay)
        try:
            pair.start()
            point_region(settings, REGION, pair.primary_port, pair.replica_port)
            result = run_drill(pair, provision_tenants(args.tenants, region=REGION, prefix="bench-dr"), region=REGION,
                               warmup_writes=args.warmup_writes or (300 if args.asynchronous else 100))
        finally:
            pair.close()
            created = set(client().scan_iter()) - keys_before
            if created:
                client().delete(*created)
    if args.asynchronous:
        line = json.dumps({
            "bench": "failover_async", "machine": {"cpus": os.cpu_count()}, "tenants": args.tenants,
            "link_delay_seconds": args.link_delay, **result, "target": TARGET_ASYNC,
            "met": (result["rpo_seconds"] is not None and result["rpo_seconds"] <= TARGET_ASYNC["rpo_seconds"]
                    and result["lag_at_failure_seconds"] is not None
                    and result["lag_at_failure_seconds"] <= TARGET_ASYNC["rpo_seconds"]
                    and result["rto_seconds"] is not None and result["rto_seconds"] <= TARGET_ASYNC["rto_seconds"]
                    and result["lost_in_lag_window"] == result["lost"]),
        })
        name = "failover_async.json"
    else:
        line = json.dumps({
            "bench": "failover", "machine": {"cpus": os.cpu_count()}, "tenants": args.tenants,
            "replication": "synchronous (synchronous_standby_names = '*')", **result, "target": TARGET,
            "met": (result["rpo_seconds"] is not None and result["rpo_seconds"] <= TARGET["rpo_seconds"]
                    and result["rto_seconds"] is not None and result["rto_seconds"] <= TARGET["rto_seconds"]
                    and result["lost"] == 0),
        })
        name = "failover.json"
    (ROOT / "bench" / "results" / name).write_text(line + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
