"""Benchmark: audit events written with the hash chain, and SIEM stream throughput.

Prints one JSON line:
- write: events/s through compliance.audit.record() (each its own transaction, as a
  service writes it) from concurrent writers, all to one tenant and spread over 100
  tenants, and whether every chain still verifies (no fork, no gap);
- stream: events/s delivered by compliance.streams.deliver() to a local webhook receiver.

Run: scripts/levqor_services.py exec -- .venv/bin/python bench/audit.py
Uses its own database (levqor_bench_audit), dropped at the end unless --keep.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _write(tenant_ids: list[int], writers: int, per_writer: int) -> dict:
    from django.db import connections

    from compliance import audit

    errors = []

    def writer(index: int):
        try:
            for i in range(per_writer):
                tenant_id = tenant_ids[(index + i * writers) % len(tenant_ids)]
                audit.record("config.changed", tenant_id=tenant_id, actor=f"bench:{index}", metadata={"i": i})
        except Exception as exc:  # reported in the JSON, not hidden
            errors.append(repr(exc))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    intact = all(audit.verify_chain(t)[0] for t in tenant_ids)
    return {"writers": writers, "events": writers * per_writer, "seconds": round(elapsed, 2),
            "events_per_second": round(writers * per_writer / elapsed), "chains_intact": intact, "errors": errors[:3]}


def _stream(tenant_id: int, events: int) -> dict:
    from compliance import audit, streams
    from compliance.models import AuditStream
    from tests.compliance.receivers import Receiver

    receiver = Receiver()
    try:
        stream = streams.stream_create(tenant_id=tenant_id, name="bench", kind="webhook", url=receiver.url,
                                       secret="bench-secret-123", actor="bench")
        for i in range(events):
            audit.record("config.changed", tenant_id=tenant_id, actor="bench", metadata={"i": i})
        start = time.perf_counter()
        sent = 0
        while True:
            result = streams.deliver(stream.pk)
            sent += result["sent"]
            if not result["more"]:
                break
        elapsed = time.perf_counter() - start
        received = len(receiver.events("webhook"))
        stream.refresh_from_db()
        return {"events": sent, "received": received, "seconds": round(elapsed, 2),
                "events_per_second": round(sent / elapsed) if elapsed else None,
                "state": stream.state, "batch": streams.BATCH}
    finally:
        receiver.close()
        AuditStream.dangerously_all_tenants.filter(tenant_id=tenant_id).delete()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--per-writer", type=int, default=1500)
    parser.add_argument("--stream-events", type=int, default=5000)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    from bench.database import bench_database, configure

    configure("levqor_bench_audit", LEVQOR_OUTBOUND_ALLOW_HOSTS="127.0.0.1")
    with bench_database(fresh=True, keep=args.keep):
        from django.core.management import call_command

        from tenants import services

        call_command("migrate", verbosity=0)
        tenants = []
        for i in range(100):
            result = services.tenant_create(name=f"Audit {i}", slug=f"audit-bench-{i}", plan="pro",
                                            admin_email="a@bench.test", actor="bench")
            tenants.append(result.tenant.id)
            print(f"\rtenants {i + 1}/100", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        one = _write(tenants[:1], args.writers, args.per_writer)
        spread = _write(tenants, args.writers, args.per_writer)
        stream = _stream(tenants[1], args.stream_events)
    print(json.dumps({
        "bench": "audit", "machine": {"cpus": os.cpu_count()},
        "write_one_tenant": one, "write_100_tenants": spread, "stream_webhook": stream,
        "target": {"events_per_second_min": 2000, "chain_never_forks": True},
        "met": min(one["events_per_second"], spread["events_per_second"]) >= 2000
        and one["chains_intact"] and spread["chains_intact"],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
