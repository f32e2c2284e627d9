"""Cost controls: the plans' autoscale caps on tenant tasks (queue share, worker pool) with
the real Celery task code sending to a queue in this test's Redis, and the storage
lifecycle deleting files past the plan's retention."""
from __future__ import annotations

import base64
import dataclasses
import json
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone

from compliance.models import Alert, AuditEvent, EvidenceReport
from runtime import backups, capacity, lifecycle
from runtime.models import Backup, ExpiredFile
from tests.conftest import client_for

QUEUE = "cap-test"


@pytest.fixture
def broker(settings):
    """Tasks go to QUEUE in this test's Redis; returns a reader of it: [(tenant id, args, kwargs)], oldest first."""
    from levqor.redis import client as redis_client

    settings.CELERY_BROKER_URL = settings.REDIS_URL
    settings.LEVQOR_QUEUE_CAPACITY = 40  # core's 5 % share: 2 waiting tasks; pro's 15 %: 6
    r = redis_client()
    for key in list(r.scan_iter("levqor:cap:*")):
        r.delete(key)
    r.delete(QUEUE)

    def waiting():
        out = []
        for raw in reversed(r.lrange(QUEUE, 0, -1)):  # kombu pushes left, workers pop right
            message = json.loads(raw)
            args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
            out.append((kwargs["tenant_id"], args, kwargs))
        return out

    def take(tenant_id):
        """What a worker does: take the tenant's oldest waiting message off the queue."""
        for raw in reversed(r.lrange(QUEUE, 0, -1)):
            message = json.loads(raw)
            args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
            if kwargs["tenant_id"] == tenant_id:
                r.lrem(QUEUE, 1, raw)
                return args, kwargs
        raise AssertionError("no waiting task of that tenant")

    waiting.take = take
    yield waiting
    r.delete(QUEUE)
    for key in list(r.scan_iter("levqor:cap:*")):
        r.delete(key)


def _workflow(key, tenant) -> str:
    return client_for(key, tenant).post("/api/workflows", {"name": "w"}, format="json").json()["id"]


def _runs(key, tenant) -> int:
    return client_for(key, tenant).get("/api/org/metrics").json()["jobs"]["succeeded"]


def test_a_tenant_past_its_queue_share_waits_in_its_own_list_others_are_not_slowed(make_tenant, broker):
    from workflows.tasks import run_workflow

    core, core_key = make_tenant(plan="core")
    pro, pro_key = make_tenant(plan="pro")
    core_wf, pro_wf = _workflow(core_key, core), _workflow(pro_key, pro)
    for i in range(5):
        run_workflow.apply_for(core.id, args=[core_wf], kwargs={"actor": f"test:{i}"}, queue=QUEUE)
        run_workflow.apply_for(pro.id, args=[pro_wf], queue=QUEUE)
    queued = [(tenant_id, kwargs.get("actor")) for tenant_id, _, kwargs in broker()]
    assert [a for t, a in queued if t == core.id] == ["test:0", "test:1"]  # its share of the queue: 2
    assert sum(1 for t, _ in queued if t == pro.id) == 5  # pro's share is 6: all sent
    status = capacity.pool_status(core.id)
    assert (status["queued"], status["held"], status["queue_cap"]) == (2, 3, 2)

    # A worker runs one of core's tasks: its place in the queue goes to the oldest held one.
    args, kwargs = broker.take(core.id)
    run_workflow.apply(args=args, kwargs=kwargs)
    assert _runs(core_key, core) == 1
    assert [kw.get("actor") for t, _, kw in broker() if t == core.id] == ["test:1", "test:2"]
    assert capacity.pool_status(core.id)["held"] == 2
    # A new task goes behind the held ones, not past them.
    run_workflow.apply_for(core.id, args=[core_wf], kwargs={"actor": "test:late"}, queue=QUEUE)
    assert capacity.pool_status(core.id)["held"] == 3
    assert [kw.get("actor") for t, _, kw in broker() if t == core.id] == ["test:1", "test:2"]


def test_a_tenant_at_its_worker_pool_cap_queues_instead_of_growing(make_tenant, broker):
    from workflows.tasks import run_workflow

    core, core_key = make_tenant(plan="core")  # worker_pool_max 2
    pro, pro_key = make_tenant(plan="pro")  # worker_pool_max 8
    wf = _workflow(core_key, core)
    slots = [capacity.start(run_workflow, core.id, [wf], {}) for _ in range(2)]  # two of its tasks running
    assert all(slots) and capacity.pool_status(core.id)["size"] == 2  # grew from 1 to its cap

    run_workflow.apply(args=[wf], kwargs={"tenant_id": core.id}, routing_key=QUEUE)  # a third starts on a worker
    assert _runs(core_key, core) == 0  # not run: the pool did not grow past the cap
    status = capacity.pool_status(core.id)
    assert (status["size"], status["running"], status["held"]) == (2, 2, 1)
    pro_slots = [capacity.start(run_workflow, pro.id, [], {}) for _ in range(3)]
    assert all(pro_slots) and len(set(pro_slots)) == 3  # each of pro's three tasks got its own slot
    assert capacity.pool_status(pro.id)["size"] == 3  # another tenant's pool grows meanwhile

    capacity.finish(core.id, slots[0])  # one of core's tasks ends: the waiting one is sent
    assert [(t, a) for t, a, _ in broker()] == [(core.id, [wf])]
    args, kwargs = broker.take(core.id)
    run_workflow.apply(args=args, kwargs=kwargs)
    assert _runs(core_key, core) == 1
    assert capacity.scale_pool(core.id, 50) == 2 and capacity.scale_pool(pro.id, 0) == 1  # auto-heal stays in the caps
    capacity.finish(core.id, slots[1])
    assert capacity.pool_status(core.id) | {"queue_cap": None} == {
        "size": 2, "running": 0, "worker_pool_max": 2, "queued": 0, "held": 0, "queue_cap": None}


# --- storage lifecycle -----------------------------------------------------------------------------


@pytest.fixture
def storage(settings, tmp_path):
    settings.LEVQOR_REGIONS = {name: dataclasses.replace(region, storage=str(tmp_path / name))
                               for name, region in settings.LEVQOR_REGIONS.items()}
    return tmp_path


def _evidence(tenant, age_days: int) -> EvidenceReport:
    from compliance import evidence

    report = EvidenceReport.dangerously_all_tenants.create(
        tenant_id=tenant.id, period_start=timezone.now() - timedelta(days=30), period_end=timezone.now(),
        status="ready", requested_by="test")
    name = evidence.region_storage(tenant.region).save(f"evidence/{tenant.id}/report-{report.pk}.pdf",
                                                        ContentFile(b"%PDF-1.4 test"))
    EvidenceReport.dangerously_all_tenants.filter(pk=report.pk).update(
        path=name, created_at=timezone.now() - timedelta(days=age_days))
    return EvidenceReport.dangerously_all_tenants.get(pk=report.pk)


def test_files_past_the_plans_retention_are_deleted_and_recorded(make_tenant, storage):
    core, core_key = make_tenant(plan="core")  # backups 7 days, evidence 90
    pro, _ = make_tenant(plan="pro")  # backups 30 days, evidence 365
    old_backup, new_backup = (backups.backup_tenant(tenant=core, actor="test") for _ in range(2))
    # Taken 8 days ago under a plan that kept backups 90 days: core keeps them 7 now.
    Backup.dangerously_all_tenants.filter(pk=old_backup.pk).update(
        created_at=timezone.now() - timedelta(days=8), expires_at=timezone.now() + timedelta(days=82))
    pro_backup = backups.backup_tenant(tenant=pro, actor="test")
    Backup.dangerously_all_tenants.filter(pk=pro_backup.pk).update(created_at=timezone.now() - timedelta(days=8))
    old_report, kept_report, pro_report = _evidence(core, 91), _evidence(core, 30), _evidence(pro, 91)

    result = lifecycle.expire_files()

    assert result == {"backups": [old_backup.pk], "evidence": [old_report.pk]}
    region = storage / core.region
    assert not (region / old_backup.storage_name).exists() and not (region / old_report.path).exists()
    for kept in (new_backup.storage_name, pro_backup.storage_name, kept_report.path, pro_report.path):
        assert (region / kept).exists()
    assert Backup.dangerously_all_tenants.get(pk=old_backup.pk).status == "expired"
    records = {(r.kind, r.object_id): r for r in ExpiredFile.objects.all()}
    assert set(records) == {("backup", old_backup.pk), ("evidence", old_report.pk)}
    assert records[("backup", old_backup.pk)].retention_days == 7 and records[("backup", old_backup.pk)].size_bytes > 0
    event = AuditEvent.dangerously_all_tenants.get(tenant_id=core.id, event="storage.expired")
    assert (event.metadata_json["backups"], event.metadata_json["evidence_reports"]) == (1, 1)
    assert not AuditEvent.dangerously_all_tenants.filter(tenant_id=pro.id, event="storage.expired").exists()

    # What the org admin sees: the report is expired, with no download link; nothing is half-there.
    report = client_for(core_key, core).get(f"/api/org/evidence/{old_report.pk}").json()
    assert report["status"] == "expired" and "download_url" not in report
    restore = client_for(core_key, core).post(f"/api/org/backups/{old_backup.pk}/export", {}, format="json")
    assert restore.status_code == 409 and restore.json()["error"]["code"] == "invalid_state"
    assert lifecycle.expire_files() == {"backups": [], "evidence": []}  # a second run changes nothing


def test_a_tenant_without_a_fresh_backup_raises_backup_stale_once(make_tenant, storage, settings):
    settings.LEVQOR_KPI_BACKUP_FRESH_HOURS = 26
    tenant, _ = make_tenant(plan="core")
    from tenants.models import Tenant

    Tenant.objects.filter(pk=tenant.pk).update(created_at=timezone.now() - timedelta(days=3))
    assert lifecycle.check_stale_backups() == [tenant.id]
    assert lifecycle.check_stale_backups() == []  # once, until resolved
    alert = Alert.objects.get(kind="backup.stale", tenant_id=tenant.id)
    assert alert.audience == "staff" and "no successful backup ever" in alert.message
    backups.backup_tenant(tenant=tenant, actor="test")
    assert lifecycle.check_stale_backups() == []
    alert.refresh_from_db()
    assert alert.resolved_at is not None
