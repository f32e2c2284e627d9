"""Chaos drill: a real Celery worker (`celery -A levqor worker`, on a Redis of the drill's
own) is SIGKILLed in the middle of a tenant's backup.

What the user sees: the backup stays `running` a little longer, then is `ok`; never a
backup that claims to be running forever, never a half-written archive, never two.

Provisioning itself runs in the web request, not in Celery; a process killed in the
middle of it is rolled back by the reaper (tests/test_provisioning_rollback.py::
test_a_process_killed_mid_provisioning_is_rolled_back_by_the_reaper).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

import psycopg2
import pytest

from tests.chaos.servers import CeleryWorker, RedisServer, django_env, levqor_on_redis
from tests.conftest import client_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def broker(settings):
    server = RedisServer().start()
    with levqor_on_redis(settings, server):
        yield server
    server.close()


@pytest.fixture
def backup_storage(settings, tmp_path):
    """The default region's backups go to a folder of this test's own."""
    region = settings.LEVQOR_DEFAULT_REGION
    folder = tmp_path / "storage"
    settings.LEVQOR_REGIONS = {**settings.LEVQOR_REGIONS,
                               region: dataclasses.replace(settings.LEVQOR_REGIONS[region], storage=str(folder))}
    return region, folder


def _worker(settings, region: str, folder: Path, tmp_path: Path, **env) -> CeleryWorker:
    return CeleryWorker(django_env(settings, LEVQOR_REGIONS=json.dumps({region: {"storage": str(folder)}}), **env),
                        log=tmp_path / f"worker-{time.monotonic_ns()}.log").start()


def _platform_connection(settings, *, autocommit: bool = False):
    db = settings.DATABASES["default"]
    conn = psycopg2.connect(host=db.get("HOST") or "127.0.0.1", port=db.get("PORT") or 5432,
                            user=db.get("USER") or "postgres", dbname=db["NAME"])
    conn.autocommit = autocommit  # pg_stat_activity is read once per transaction
    return conn


def _wait_for_blocked_backup(conn, lock_conn, timeout: float = 60) -> None:
    """Until the worker's backup waits on our lock (its COPY of the tenant's tables)."""
    end = time.monotonic() + timeout
    with conn.cursor() as cursor:
        while time.monotonic() < end:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                           [lock_conn.get_backend_pid()])
            if cursor.fetchone()[0]:
                return
            time.sleep(0.1)
    raise TimeoutError("the backup never reached the tenant's tables")


def _wait_for_status(backup_id: int, statuses: set[str], timeout: float = 90) -> str:
    from runtime.models import Backup

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        status = Backup.dangerously_all_tenants.get(pk=backup_id).status
        if status in statuses:
            return status
        time.sleep(0.2)
    raise TimeoutError(f"backup {backup_id} is still {status}")


def _start_blocked_backup(settings, tenant, key, lock_conn):
    """Hold an exclusive lock on one of the tenant's tables, ask for a backup, and wait
    until the worker's COPY is stuck behind it: the worker is now mid-task."""
    with lock_conn.cursor() as cursor:
        cursor.execute(f'LOCK TABLE "{tenant.schema_name}".workflows_workflow IN ACCESS EXCLUSIVE MODE')
    response = client_for(key, tenant).post("/api/org/backups", {}, format="json")
    assert response.status_code == 202, response.content
    _wait_for_blocked_backup(_platform_connection(settings, autocommit=True), lock_conn)
    return response.json()["id"]


def _assert_one_good_archive(tenant, backup_id: int, folder: Path, workflows: int) -> None:
    from compliance.models import AuditEvent
    from runtime.models import Backup

    backup = Backup.dangerously_all_tenants.get(pk=backup_id)
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert [p.relative_to(folder).as_posix() for p in files] == [backup.storage_name]  # one archive, no debris
    assert hashlib.sha256(files[0].read_bytes()).hexdigest() == backup.checksum_sha256
    rows = {t["table"]: t["rows"] for t in backup.manifest_json["tables"] if t["scope"] == "tenant"}
    assert rows["workflows_workflow"] == workflows
    assert AuditEvent.dangerously_all_tenants.filter(tenant_id=tenant.id, event="backup.created").count() == 1


def test_a_worker_child_killed_mid_backup_requeues_it_and_one_good_backup_results(
        settings, make_tenant, broker, backup_storage, tmp_path):
    region, folder = backup_storage
    tenant, key = make_tenant()
    owner = client_for(key, tenant)
    for i in range(5):
        assert owner.post("/api/workflows", {"name": f"w{i}"}, format="json").status_code == 201
    worker = _worker(settings, region, folder, tmp_path)
    lock = _platform_connection(settings)
    try:
        backup_id = _start_blocked_backup(settings, tenant, key, lock)
        killed = worker.kill_child()  # the process running the task dies (an OOM kill)
        worker.wait_for_log("WorkerLostError", timeout=30)
        # Mid-task death leaves the backup honestly `running` and nothing in storage.
        assert owner.get(f"/api/org/backups/{backup_id}").json()["status"] == "running"
        assert not [p for p in folder.rglob("*") if p.is_file()]
        lock.rollback()  # the table is free again: the redelivered task can finish
        assert _wait_for_status(backup_id, {"ok", "failed"}) == "ok", worker.output()[-3000:]
        assert killed not in worker.children()
    finally:
        lock.close()
        worker.close()
    assert owner.get(f"/api/org/backups/{backup_id}").json()["status"] == "ok"
    _assert_one_good_archive(tenant, backup_id, folder, workflows=5)


def test_a_whole_worker_killed_mid_backup_is_redelivered_to_the_next_worker(
        settings, make_tenant, broker, backup_storage, tmp_path):
    """The main process dies too (the host or container is gone): the message stays
    unacknowledged in Redis and is delivered again once the visibility timeout passes."""
    region, folder = backup_storage
    tenant, key = make_tenant()
    owner = client_for(key, tenant)
    for i in range(3):
        assert owner.post("/api/workflows", {"name": f"w{i}"}, format="json").status_code == 201
    worker = _worker(settings, region, folder, tmp_path, LEVQOR_TASK_VISIBILITY_SECONDS="3")
    lock = _platform_connection(settings)
    try:
        backup_id = _start_blocked_backup(settings, tenant, key, lock)
        worker.kill()
        lock.rollback()
        assert owner.get(f"/api/org/backups/{backup_id}").json()["status"] == "running"
        worker = _worker(settings, region, folder, tmp_path, LEVQOR_TASK_VISIBILITY_SECONDS="3")
        assert _wait_for_status(backup_id, {"ok", "failed"}) == "ok", worker.output()[-3000:]
    finally:
        lock.close()
        worker.close()
    _assert_one_good_archive(tenant, backup_id, folder, workflows=3)


def test_a_worker_knows_every_scheduled_and_queued_task():
    """What a fresh worker process registers (it imports only what autodiscovery names)."""
    import subprocess
    import sys

    from django.conf import settings

    from tests.chaos.servers import ROOT

    probe = ("import json, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'levqor.settings'); import django; "
             "django.setup(); from levqor.celery import app; app.loader.import_default_modules(); "
             "print(json.dumps(sorted(app.tasks)))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    registered = set(json.loads(out.stdout.strip().splitlines()[-1]))
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    queued = {"runtime.backup_tasks.take_backup", "compliance.tasks.generate_evidence", "compliance.tasks.deliver_stream",
              "runtime.metrics_tasks.deliver_alert", "workflows.tasks.run_workflow"}
    assert (scheduled | queued) - registered == set()
