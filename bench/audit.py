"""Benchmark: audit events written with the hash chain, and SIEM stream throughput.

Prints one JSON line (and writes it to bench/results/audit.json unless --no-save):
- write: events/s through compliance.audit.record() (each its own transaction, as a
  service writes it, sealed after its commit) from concurrent writers, all to one tenant
  and spread over 100 tenants; how many events were still unsealed when the writers
  returned (sealed later by the periodic sweep or a reader); how many of the events
  written are then in a chain (none lost); and whether every chain verifies (no fork,
  no gap);
- stream: events/s delivered by compliance.streams.deliver() to a local webhook receiver.

Measured with DEBUG off, as deployed. Also prints, per write run, the CPU time spent per
event by this process and by its PostgreSQL backends: on a shared machine the events/s
follow whatever else runs, the CPU per event does not (much).

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
    from django.db import connection, connections

    from compliance import audit
    from compliance.models import AuditEvent

    errors, backends = [], []
    before = AuditEvent.dangerously_all_tenants.order_by("-id").values_list("id", flat=True).first() or 0
    # Writers connect first, then all start together, and keep their connections until the
    # clock and the CPU counters are read.
    gate = threading.Barrier(writers + 1)

    def writer(index: int):
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                backends.append(cursor.fetchone()[0])
        except Exception as exc:
            errors.append(repr(exc))
        gate.wait()  # ready
        gate.wait()  # go
        try:
            for i in range(per_writer):
                tenant_id = tenant_ids[(index + i * writers) % len(tenant_ids)]
                audit.record("config.changed", tenant_id=tenant_id, actor=f"bench:{index}", metadata={"i": i})
        except Exception as exc:  # reported in the JSON, not hidden
            errors.append(repr(exc))
        finally:
            gate.wait()  # done
            gate.wait()  # measured
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    gate.wait()
    cpu_before = time.process_time(), _cpu_seconds(backends)
    start = time.perf_counter()
    gate.wait()
    gate.wait()
    elapsed = time.perf_counter() - start
    cpu_after = time.process_time(), _cpu_seconds(backends)
    gate.wait()
    for t in threads:
        t.join()
    events = writers * per_writer
    written = AuditEvent.dangerously_all_tenants.filter(tenant_id__in=tenant_ids, id__gt=before)
    unsealed = written.filter(seq__isnull=True).count()
    intact = all(audit.verify_chain(t)[0] for t in tenant_ids)  # seals what is left first
    return {"writers": writers, "events": events, "seconds": round(elapsed, 2),
            "events_per_second": round(events / elapsed), "unsealed_after_writers": unsealed,
            "events_in_chains": written.filter(seq__isnull=False).count(), "chains_intact": intact,
            "cpu_us_per_event": {
                "bench_process": round((cpu_after[0] - cpu_before[0]) * 1e6 / events),
                "postgres_backends": (round((cpu_after[1] - cpu_before[1]) * 1e6 / events)
                                      if None not in (cpu_before[1], cpu_after[1]) else None)},
            "load_average_1m": round(os.getloadavg()[0], 2), "errors": errors[:3]}


def _cpu_seconds(pids: list[int]) -> float | None:
    """CPU time (user + system) of these local processes; None when they are not local
    (BENCH_DATABASE_URL on another host)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    try:
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None
    return total / ticks


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
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--per-writer", type=int, default=750)
    parser.add_argument("--stream-events", type=int, default=5000)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/audit.json")
    args = parser.parse_args()
    from bench.database import bench_database, configure

    configure("levqor_bench_audit", LEVQOR_OUTBOUND_ALLOW_HOSTS="127.0.0.1")
    with bench_database(fresh=True, keep=args.keep):
        from django.core.management import call_command
        from django.test.utils import override_settings

        from tenants import services

        call_command("migrate", verbosity=0)
        tenants = []
        for i in range(100):
            result = services.tenant_create(name=f"Audit {i}", slug=f"audit-bench-{i}", plan="pro",
                                            admin_email="a@bench.test", actor="bench")
            tenants.append(result.tenant.id)
            print(f"\rtenants {i + 1}/100", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        # Measured as deployed: DEBUG off (bench.database turns it on only so that Django
        # starts without a secret key). With it on, Django's debug cursor formats and keeps
        # every statement, a cost no deployment has (bench/policy.py does the same).
        with override_settings(DEBUG=False):
            one = _write(tenants[:1], args.writers, args.per_writer)
            spread = _write(tenants, args.writers, args.per_writer)
            stream = _stream(tenants[1], args.stream_events)
    line = json.dumps({
        "bench": "audit", "machine": {"cpus": os.cpu_count()},
        "write_one_tenant": one, "write_100_tenants": spread, "stream_webhook": stream,
        "target": {"events_per_second_min": 2000, "chain_never_forks": True},
        "met": min(one["events_per_second"], spread["events_per_second"]) >= 2000
        and all(w["chains_intact"] and w["events_in_chains"] == w["events"] for w in (one, spread)),
    })
    print(line)
    if not args.no_save:
        (ROOT / "bench" / "results" / "audit.json").write_text(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
