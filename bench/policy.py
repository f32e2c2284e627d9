"""Benchmark: the policy engine, and what the whole tenancy stack adds to a request.

Prints one JSON line and writes it to bench/results/policy.json:
- engine: decisions per second and p50/p99 latency on one core, for the cached path every
  request takes and for a cold evaluation of the rules;
- stack: p50/p95 of `GET /api/workflows` through everything (tenant middleware, API key
  auth, policy, quota counter) against the same DRF view with those layers off (a
  pre-built tenant context, no auth, no policy, no counter), in one run, the two paths
  taking turns request by request, in-process (Django test client: no network noise) and
  over HTTP, and the overhead in percent.

Run: .venv/bin/python scripts/levqor_services.py exec -- .venv/bin/python bench/policy.py
Uses its own database (levqor_bench_policy), created and dropped here.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _configure():
    from bench.database import configure

    # The real policy file, with a rate limit the benchmark's tight loop does not hit (the
    # token bucket still runs on every request: only its refill rate differs).
    import tempfile

    data = json.loads((ROOT / "policy" / "policies.json").read_text())
    data["plans"]["pro"]["limits"]["rate_per_second"] = 1_000_000
    handle = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
    json.dump(data, handle)
    handle.close()
    configure("levqor_bench_policy", LEVQOR_POLICY_FILE=handle.name)


def _percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def bench_engine(n: int) -> dict:
    from policy.engine import ROLES, get_policy

    policy = get_policy()
    actions = list(policy.actions)
    plans = list(policy.plans)
    combos = [(p, r, a) for p in plans for r in ROLES for a in actions]
    # Cached path (what each request does): batches timed, per-decision latency derived.
    for plan, role, action in combos:
        policy.decide(plan=plan, role=role, action=action)
    latencies = []
    start = time.perf_counter()
    for i in range(n):
        plan, role, action = combos[i % len(combos)]
        t0 = time.perf_counter_ns()
        policy.decide(plan=plan, role=role, action=action)
        latencies.append(time.perf_counter_ns() - t0)
    elapsed = time.perf_counter() - start
    cold = []
    for i in range(min(n, 20000)):
        plan, role, action = combos[i % len(combos)]
        t0 = time.perf_counter_ns()
        policy._decide(plan, role, action)
        cold.append(time.perf_counter_ns() - t0)
    return {
        "decisions": n,
        "per_second": round(n / elapsed),
        "p50_us": round(_percentile(latencies, 0.5) / 1000, 2),
        "p99_us": round(_percentile(latencies, 0.99) / 1000, 2),
        "cold_p50_us": round(_percentile(cold, 0.5) / 1000, 2),
        "cold_p99_us": round(_percentile(cold, 0.99) / 1000, 2),
    }


def _plain_view():
    """The same endpoint with the tenancy layers off."""
    from django.urls import path
    from rest_framework import permissions

    from tenants.context import tenant_context
    from workflows.api import WorkflowViewSet

    class PlainWorkflows(WorkflowViewSet):
        authentication_classes = []
        permission_classes = [permissions.AllowAny]

    view = PlainWorkflows.as_view({"get": "list"})
    state = {}

    def plain(request):
        with tenant_context(state["ctx"]):
            return view(request)

    return path("bench/plain/workflows", plain), state


def bench_stack(requests: int) -> dict:
    from django.core.management import call_command
    from django.test import Client
    from django.test.utils import override_settings

    from levqor import urls
    from tenants import services
    from tenants.context import build_context

    call_command("migrate", verbosity=0)
    slug = f"bench-{os.getpid()}"
    result = services.tenant_create(name="Bench", slug=slug, plan="pro", admin_email="b@bench.test", actor="bench")
    tenant, key = result.tenant, result.api_key
    route, state = _plain_view()
    state["ctx"] = build_context(tenant)
    urls.urlpatterns.append(route)
    client = Client()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}", "HTTP_X_TENANT_ID": slug}
    for i in range(5):
        client.post("/api/workflows", data=json.dumps({"name": f"wf {i}"}), content_type="application/json", **headers)

    def full_request():
        return client.get("/api/workflows", **headers).status_code

    def plain_request():
        return client.get("/bench/plain/workflows").status_code

    with override_settings(DEBUG=False):
        _alternate(100, full_request, plain_request)  # warm up both paths
        full, plain = _alternate(5 * requests, full_request, plain_request)
    http = bench_http(slug, key, requests)
    services.tenant_delete(tenant=tenant, actor="bench")
    services.tenant_purge(tenant=tenant, actor="bench")
    return {**_compare(full, plain), "over_http": http}


def _alternate(n: int, full_request, plain_request) -> tuple[list[int], list[int]]:
    """Time n requests on each path, one of each in turn (which goes first alternates too),
    so that load from other work on the machine, which drifts over seconds, hits both alike."""
    times = {full_request: [], plain_request: []}
    for i in range(n):
        for request in (full_request, plain_request) if i % 2 else (plain_request, full_request):
            t0 = time.perf_counter_ns()
            status = request()
            times[request].append(time.perf_counter_ns() - t0)
            assert status == 200, status
    return times[full_request], times[plain_request]


def _compare(full: list[int], plain: list[int]) -> dict:
    """Latency figures (ns samples in, ms out) of the full stack against the plain view."""
    p50_full, p50_plain = _percentile(full, 0.5) / 1e6, _percentile(plain, 0.5) / 1e6
    return {
        "requests_each": len(full),
        "full_stack_p50_ms": round(p50_full, 3), "full_stack_p95_ms": round(_percentile(full, 0.95) / 1e6, 3),
        "plain_drf_p50_ms": round(p50_plain, 3), "plain_drf_p95_ms": round(_percentile(plain, 0.95) / 1e6, 3),
        "added_p50_ms": round(p50_full - p50_plain, 3),
        "overhead_percent_p50": round((p50_full - p50_plain) * 100 / p50_plain, 1),
    }


def bench_http(slug: str, key: str, requests: int) -> dict:
    """The same comparison as a client sees it: gunicorn (1 sync worker) over loopback HTTP."""
    import http.client
    import subprocess

    from tests.ports import free_port, wait_for_port

    port = free_port()
    env = {**os.environ, "BENCH_TENANT_SLUG": slug, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([str(ROOT / ".venv" / "bin" / "gunicorn"), "bench.wsgi_plain:application", "--workers", "1",
                               "--bind", f"127.0.0.1:{port}", "--log-level", "warning"], env=env, cwd=ROOT)
    try:
        wait_for_port(port)

        conn = http.client.HTTPConnection("127.0.0.1", port)
        headers = {"Authorization": f"Bearer {key}", "X-Tenant-ID": slug, "Connection": "keep-alive"}

        def get(path, headers):
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            response.read()
            return response.status

        def full_request():
            return get("/api/workflows", headers)

        def plain_request():
            return get("/bench/plain/workflows", {"Connection": "keep-alive"})

        _alternate(100, full_request, plain_request)
        full, plain = _alternate(5 * requests, full_request, plain_request)
        conn.close()
    finally:
        server.terminate()
        server.wait(timeout=10)
    return _compare(full, plain)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=500_000)
    parser.add_argument("--requests", type=int, default=400, help="a fifth of the requests per path")
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    args = parser.parse_args()
    _configure()
    from bench.database import bench_database

    with bench_database(fresh=False, keep=args.keep):
        engine = bench_engine(args.decisions)
        stack = bench_stack(args.requests)
    line = json.dumps({
        "bench": "policy", "machine": {"cpus": os.cpu_count()},
        "engine": engine, "stack": stack,
        "target": {"decision_us_max": 20, "decisions_per_second_min": 50000, "stack_overhead_percent_max": 15},
        "met": {"engine": engine["p99_us"] <= 20 and engine["per_second"] >= 50000,
                "stack_in_process": stack["overhead_percent_p50"] <= 15,
                "stack_over_http": stack["over_http"]["overhead_percent_p50"] <= 15},
    })
    print(line)
    (ROOT / "bench" / "results" / "policy.json").write_text(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
