"""Benchmark: load across 100 tenants through gunicorn, and the noisy-neighbour case.

Prints one JSON line:
- baseline: steady traffic spread over 100 tenants (GET /api/workflows with each tenant's key),
  throughput and p50/p95;
- noisy: the same traffic while one more tenant sends 10× its plan's rate limit
  (--noisy-factor); the others' p95 and how much of the noisy tenant's traffic got 429.
Target (issue 9): the others' p95 rises ≤ 20 % while the noisy tenant is throttled.

Run: .venv/bin/python scripts/levqor_services.py exec -- .venv/bin/python bench/load.py [--seconds 15]
Uses its own database (levqor_bench_load), dropped at the end unless --keep. Traffic goes
to 127.0.0.1 only.
"""
from __future__ import annotations

import argparse
import http.client
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


def _percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else None


def _drive(port: int, targets: list[tuple[str, str]], seconds: float, pause: float, out: list, stop: threading.Event,
           interval: float = 0.0):
    """Send requests for `seconds`: `pause` after each, or one every `interval` seconds."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    rng = random.Random()
    start = time.monotonic()
    end = start + seconds
    sent = 0
    while time.monotonic() < end and not stop.is_set():
        if interval:
            delay = start + sent * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        sent += 1
        slug, key = rng.choice(targets)
        t0 = time.perf_counter()
        try:
            conn.request("GET", "/api/workflows", headers={"Authorization": f"Bearer {key}", "X-Tenant-ID": slug})
            response = conn.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            status = 0
        out.append((time.perf_counter() - t0, status))
        if pause:
            time.sleep(pause)
    conn.close()


def _phase(port, quiet, noisy, seconds, quiet_threads, noisy_threads, pause, noisy_rps=0.0):
    stop = threading.Event()
    quiet_results: list = []
    noisy_results: list = []
    threads = [threading.Thread(target=_drive, args=(port, quiet, seconds, pause, quiet_results, stop))
               for _ in range(quiet_threads)]
    interval = noisy_threads / noisy_rps if noisy_rps else 0.0
    threads += [threading.Thread(target=_drive, args=(port, noisy, seconds, 0, noisy_results, stop, interval))
                for _ in range(noisy_threads if noisy else 0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = [d for d, s in quiet_results if s == 200]
    summary = {"requests": len(quiet_results), "ok": len(ok), "throughput_rps": round(len(quiet_results) / seconds, 1),
               "p50_ms": round(_percentile(ok, 0.5) * 1000, 2) if ok else None,
               "p95_ms": round(_percentile(ok, 0.95) * 1000, 2) if ok else None,
               "errors": sum(1 for _, s in quiet_results if s not in (200,))}
    if noisy:
        summary["noisy"] = {"requests": len(noisy_results), "attempted_rps": round(len(noisy_results) / seconds, 1),
                            "throttled_429": sum(1 for _, s in noisy_results if s == 429),
                            "served_200": sum(1 for _, s in noisy_results if s == 200)}
    return summary


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--threads", type=int, default=4, help="steady client threads")
    parser.add_argument("--noisy-threads", type=int, default=2)
    parser.add_argument("--noisy-factor", type=float, default=10, help="the noisy tenant's rate, in multiples of its limit")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    from bench.database import bench_database, configure

    configure("levqor_bench_load")
    with bench_database(fresh=True, keep=args.keep):
        from django.core.management import call_command

        from tenants import services

        call_command("migrate", verbosity=0)
        tenants = []
        for i in range(args.tenants + 1):
            result = services.tenant_create(name=f"Load {i}", slug=f"load-{i}", plan="core", admin_email="l@bench.test",
                                            actor="bench")
            tenants.append((result.tenant.slug, result.api_key))
            print(f"\rtenants {i + 1}/{args.tenants + 1}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        quiet, noisy = tenants[1:], tenants[:1]
        from tests.ports import free_port, wait_for_port

        port = free_port()
        server = subprocess.Popen([str(ROOT / ".venv" / "bin" / "gunicorn"), "levqor.wsgi:application", "--workers", "2",
                                   "--threads", "2", "--bind", f"127.0.0.1:{port}", "--log-level", "warning"],
                                  cwd=ROOT, env=os.environ.copy())
        try:
            wait_for_port(port)
            # Steady traffic well inside each tenant's limit: a short pause per request.
            _phase(port, quiet, [], 2, args.threads, 0, 0.01)  # warm up
            baseline = _phase(port, quiet, [], args.seconds, args.threads, 0, 0.01)
            from policy.plans import plan_limits

            limit = plan_limits("core")["rate_per_second"]
            noisy_run = _phase(port, quiet, noisy, args.seconds, args.threads, args.noisy_threads, 0.01,
                               noisy_rps=limit * args.noisy_factor)
        finally:
            server.terminate()
            server.wait(timeout=10)
    rise = (noisy_run["p95_ms"] - baseline["p95_ms"]) * 100 / baseline["p95_ms"]
    print(json.dumps({
        "bench": "load", "machine": {"cpus": os.cpu_count()}, "tenants": args.tenants, "seconds": args.seconds,
        "noisy_rate_limit_rps": 20, "noisy_factor": args.noisy_factor, "baseline": baseline, "with_noisy_neighbour": noisy_run,
        "others_p95_rise_percent": round(rise, 1),
        "target": {"others_p95_rise_percent_max": 20},
        "met": rise <= 20 and noisy_run["noisy"]["throttled_429"] > 0,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
