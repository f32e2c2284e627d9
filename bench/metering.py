"""Benchmark: metering, from the per-request counter to Stripe's meters.

Prints one JSON line:
- counter: usage events/s through the quota counter path (`policy.quotas.consume`, one
  Redis round trip each) spread over 1,000 tenants, by 1 and by 2 threads;
- sync: the nightly usage sync of 1,000 billed tenants (3 meters each) against the local
  Stripe server running in its own process: seconds, events sent, and a re-run's
  seconds and events (must be 0); then the reconciliation's seconds and drifts;
- exact: whether, for every tenant and metric, the ledger, what we reported and what
  Stripe's meter summaries say are equal (no event lost or doubled).

The 1,000 tenants are provisioned for real (schema per tenant, Stripe customer and
subscription at the local server), once; the bench database is kept for re-runs with
--keep and dropped otherwise.

Run: .venv/bin/python scripts/levqor_services.py exec -- .venv/bin/python bench/metering.py [--tenants 1000]
Target: the sync of 1,000 tenants in <= 60 s, nothing lost or doubled.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KEY = "sk_test_" + "benchmeteringlevqor12345"
TARGET_SYNC_S = 60.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def start_stripe() -> tuple[subprocess.Popen, str]:
    from tests.ports import free_port, wait_for_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "stripe_server.py"), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    return proc, f"http://127.0.0.1:{port}"


def provision(n: int) -> list:
    from tenants import services
    from tenants.models import Tenant
    from tenants.progress import ProgressBar

    have = list(Tenant.objects.filter(slug__startswith="meter-", status="active").order_by("id"))
    if len(have) >= n:
        return have[:n]
    bar = ProgressBar(n - len(have), label="tenants provisioned")
    for i in range(len(have), n):
        have.append(services.tenant_create(name=f"Meter {i}", slug=f"meter-{i}", plan="core", actor="bench").tenant)
        bar.advance()
    bar.finish()
    return have


def counter_rate(tenant_ids: list[int], seconds: float, threads: int) -> float:
    from policy import quotas

    limits = {"api_calls": 10**12, "rate_per_second": 0}
    counts = [0] * threads
    stop = time.monotonic() + seconds

    def work(slot: int) -> None:
        rnd = random.Random(slot)
        while time.monotonic() < stop:
            for _ in range(100):
                quotas.consume(tenant_id=rnd.choice(tenant_ids), metric="api_calls", limits=limits, rate_limit=False)
            counts[slot] += 100

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return round(sum(counts) / seconds)


def exactness(tenant_ids: list[int], period: str) -> dict:
    """Ledger == reported == Stripe, per tenant and metric."""
    from billing import catalog, usage
    from billing.models import MeterReport
    from policy.models import UsageCounter

    ledger = {(c.tenant_id, c.metric): c.count for c in UsageCounter.dangerously_all_tenants.filter(
        tenant_id__in=tenant_ids, period=period)}
    reported: dict[tuple, int] = {}
    for r in MeterReport.dangerously_all_tenants.filter(tenant_id__in=tenant_ids, period=period, status="sent"):
        reported[(r.tenant_id, r.metric)] = reported.get((r.tenant_id, r.metric), 0) + r.value
    mismatched = []
    for tenant_id in tenant_ids:
        for m in catalog.METERED:
            if m.ledger_metric and ledger.get((tenant_id, m.ledger_metric), 0) != reported.get((tenant_id, m.metric), 0):
                mismatched.append((tenant_id, m.metric))
    drifts = usage.reconcile(period=period, tenant_ids=tenant_ids)["drifts"]
    return {"ledger_equals_reported": not mismatched, "stripe_equals_reported": not drifts,
            "mismatches": len(mismatched) + len(drifts)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0, help="for each counter measurement")
    parser.add_argument("--keep", action="store_true", help="keep the bench database (and its tenants) for re-runs")
    args = parser.parse_args()

    stripe_proc, stripe_url = start_stripe()
    from bench.database import bench_database, configure

    configure("levqor_bench_metering", STRIPE_SECRET_KEY=KEY, STRIPE_API_BASE=stripe_url,
              STRIPE_MAX_NETWORK_RETRIES="0", REDIS_URL=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"))
    try:
        with bench_database(fresh=not args.keep, keep=args.keep):
            from django.core.management import call_command
            from django.utils import timezone

            from billing import catalog, usage
            from levqor.redis import client as redis_client
            from policy import quotas

            redis_client().flushdb()
            call_command("migrate", verbosity=0, interactive=False)
            catalog.sync_catalog()
            log(f"provisioning {args.tenants} tenants with Stripe customers ...")
            tenants = provision(args.tenants)
            ids = [t.id for t in tenants]

            counter = {"tenants": len(ids), "events_per_s_1_thread": counter_rate(ids, args.seconds, 1),
                       "events_per_s_2_threads": counter_rate(ids, args.seconds, 2)}
            log(f"counter: {counter}")
            runs = random.Random(7)
            limits = {"jobs": 10**12, "rate_per_second": 0}
            for tenant_id in ids:  # some workflow runs too, so every meter has something
                quotas.consume(tenant_id=tenant_id, metric="jobs", limits=limits, n=runs.randint(0, 5), rate_limit=False)

            window = timezone.now().date()
            t0 = time.monotonic()
            first = usage.sync_usage(window=window, tenant_ids=ids)
            sync_s = time.monotonic() - t0
            t0 = time.monotonic()
            again = usage.sync_usage(window=window, tenant_ids=ids)
            rerun_s = time.monotonic() - t0
            t0 = time.monotonic()
            exact = exactness(ids, quotas.period_of())
            reconcile_s = time.monotonic() - t0
            result = {
                "bench": "metering", "counter": counter,
                "sync": {"tenants": first["tenants"], "seconds": round(sync_s, 2), "events_sent": first["sent"],
                         "failed": first["failed"], "rerun_seconds": round(rerun_s, 2), "rerun_events_sent": again["sent"],
                         "reconcile_seconds": round(reconcile_s, 2), "workers": int(os.environ.get(
                             "LEVQOR_BILLING_SYNC_WORKERS", "8"))},
                "exact": exact,
                "target": {"sync_s_at_1000": TARGET_SYNC_S,
                           "met": sync_s <= TARGET_SYNC_S and exact["mismatches"] == 0 and again["sent"] == 0},
            }
    finally:
        stripe_proc.terminate()
        stripe_proc.wait(timeout=10)
    print(json.dumps(result))
    if args.tenants >= 1000:
        (ROOT / "bench" / "results" / "metering.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
