"""The Integrity Pack catches each injected fault; the Evidence PDF carries the period's
policy denies and the audit chain head (the spec's governance test)."""
import dataclasses
import io
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from pypdf import PdfReader

from compliance.alerts import alert_raise
from compliance.integrity import integrity_run
from compliance.models import AuditEvent
from policy import engine
from tenants import broker
from tenants.models import TenantKey
from tests.conftest import client_for


def _statuses(run):
    return {r["check"]: r["status"] for r in run.results}


@pytest.mark.parametrize("plan", ["core", "enterprise"])
def test_a_healthy_tenant_passes_every_check_once_it_has_a_backup(make_tenant, plan, region_storage):
    from runtime import backups

    tenant, key = make_tenant(plan=plan)
    first = client_for(key, tenant).post("/api/org/integrity")
    assert first.status_code == 201 and first.json()["status"] == "warn"
    assert {r["check"]: (r["status"], r["detail"]) for r in first.json()["results"]}["backups"] == ("warn", "no backup yet")

    backups.backup_tenant(tenant=tenant, actor="test")
    response = client_for(key, tenant).post("/api/org/integrity")
    assert response.status_code == 201
    assert response.json()["status"] == "pass"
    statuses = {r["check"]: r["status"] for r in response.json()["results"]}
    assert statuses == {"audit_chain": "pass", "isolation": "pass", "migrations": "pass", "policy_file": "pass",
                        "key_rotation": "pass", "open_alerts": "pass", "backups": "pass", "sso_mfa": "pass"}
    assert AuditEvent.dangerously_all_tenants.filter(tenant_id=tenant.id, event="integrity.checked").exists()


def test_a_stale_or_damaged_backup_is_caught(make_tenant, region_storage):
    from runtime import backups
    from runtime.models import Backup

    tenant, _ = make_tenant()
    backup = backups.backup_tenant(tenant=tenant, actor="test")
    Backup.dangerously_all_tenants.filter(pk=backup.pk).update(created_at=timezone.now() - timedelta(days=3))
    run = integrity_run(tenant=tenant, actor="test")
    assert _statuses(run)["backups"] == "warn" and "h old" in {r["check"]: r["detail"] for r in run.results}["backups"]

    stored = region_storage / tenant.region / backup.storage_name
    stored.write_bytes(stored.read_bytes()[:-10] + b"0123456789")  # bit rot in the stored archive
    run = integrity_run(tenant=tenant, actor="test")
    assert run.status == "fail" and _statuses(run)["backups"] == "fail"
    assert "checksum" in {r["check"]: r["detail"] for r in run.results}["backups"]


def _tamper(sql, params=()):
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE tenant_audit DISABLE TRIGGER tenant_audit_append_only")
        cursor.execute(sql, params)
        cursor.execute("ALTER TABLE tenant_audit ENABLE TRIGGER tenant_audit_append_only")


def test_each_injected_fault_is_caught(make_tenant, tmp_path, monkeypatch):
    a, key_a = make_tenant()
    b, _ = make_tenant()
    # 1. a tampered audit row
    _tamper("UPDATE tenant_audit SET actor = 'nobody' WHERE tenant_id = %s AND seq = 1", [a.id])
    # 2. an object in A's schema reaching into B's
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE TABLE "{a.schema_name}".leak (w uuid REFERENCES "{b.schema_name}".workflows_workflow(id))')
    # 3. a stale key, 4. an open alert
    TenantKey.dangerously_all_tenants.filter(tenant=a).update(created_at=timezone.now() - timedelta(days=200))
    alert_raise(kind="quota.warning", tenant_id=a.id, message="api_calls at 80%")
    # 5. a missing migration
    with connection.cursor() as cursor:
        cursor.execute(f'DELETE FROM "{a.schema_name}".django_migrations')
    # 6. a broken policy file
    broken = tmp_path / "policies.json"
    broken.write_text("{ nope")
    monkeypatch.setattr(engine, "POLICY_PATH", broken)
    run = integrity_run(tenant=a, actor="test")
    statuses = _statuses(run)
    assert run.status == "fail"
    assert statuses["audit_chain"] == "fail" and statuses["isolation"] == "fail"
    assert statuses["migrations"] == "fail" and statuses["policy_file"] == "fail"
    assert statuses["key_rotation"] == "warn" and statuses["open_alerts"] == "warn"
    detail = {r["check"]: r["detail"] for r in run.results}
    assert "seq 1" in detail["audit_chain"] and b.schema_name in detail["isolation"]
    monkeypatch.undo()
    assert _statuses(integrity_run(tenant=b, actor="test"))["isolation"] == "pass"


def test_a_tenant_database_open_to_public_fails_isolation(make_tenant):
    tenant, _ = make_tenant(plan="enterprise")
    name = broker.tenant_database_name(tenant.id)
    with broker.maintenance_cursor(broker.server_config(tenant.region)) as cursor:
        cursor.execute(f'GRANT CONNECT ON DATABASE "{name}" TO PUBLIC')
    assert _statuses(integrity_run(tenant=tenant, actor="test"))["isolation"] == "fail"


@pytest.fixture
def region_storage(settings, tmp_path):
    settings.LEVQOR_REGIONS = {name: dataclasses.replace(region, storage=str(tmp_path / name))
                               for name, region in settings.LEVQOR_REGIONS.items()}
    return tmp_path


def test_the_evidence_pdf_holds_the_period_denies_and_the_chain_head(make_tenant, region_storage):
    from compliance.tasks import generate_evidence

    tenant, key = make_tenant()
    owner = client_for(key, tenant)
    viewer_key = owner.post("/api/org/keys", {"role": "viewer", "name": "v"}, format="json").json()["api_key"]
    viewer = client_for(viewer_key, tenant)
    assert viewer.post("/api/workflows", {"name": "nope"}, format="json").status_code == 403
    assert viewer.get("/api/org/audit").status_code == 403
    key = owner.post(f"/api/tenants/{tenant.id}/rotate-keys").json()["api_key"]
    owner = client_for(key, tenant)
    since = (timezone.now() - timedelta(hours=1)).isoformat()
    accepted = owner.post("/api/org/evidence", {"since": since}, format="json")
    assert accepted.status_code == 202 and accepted.json()["status"] == "pending"
    generate_evidence.apply(args=[accepted.json()["id"]]).get()
    ready = owner.get(f"/api/org/evidence/{accepted.json()['id']}").json()
    assert ready["status"] == "ready"
    download = client_for().get(ready["download_url"].split("testserver", 1)[1])
    assert download.status_code == 200 and download["Content-Type"] == "application/pdf"
    pdf = b"".join(download.streaming_content)
    (region_storage / "evidence-sample.pdf").write_bytes(pdf)
    reader = PdfReader(io.BytesIO(pdf))
    text = " ".join(" ".join(page.extract_text() for page in reader.pages).split())  # lines wrap in table cells
    assert "Policy denies (2)" in text
    assert "role viewer lacks workflows:write" in text and "role viewer lacks audit:read" in text
    assert "Key rotations and key changes" in text and "keys.rotated" in text
    head = AuditEvent.dangerously_all_tenants.filter(tenant_id=tenant.id, seq=ready["head_seq"]).get()
    assert all(head.hash in page.extract_text().replace("\n", "") for page in reader.pages)
    # The link is tied to its tenant and expires.
    assert client_for().get("/evidence/forged-token").status_code == 404
    from freezegun import freeze_time

    with freeze_time(timezone.now() + timedelta(minutes=11)):
        assert client_for().get(ready["download_url"].split("testserver", 1)[1]).status_code == 404
    # A stored file that went missing is a clear 410, not a crash.
    from compliance.models import EvidenceReport

    report = EvidenceReport.dangerously_all_tenants.get(pk=ready["id"])
    (region_storage / tenant.region / report.path).unlink()
    fresh = owner.get(f"/api/org/evidence/{ready['id']}").json()["download_url"].split("testserver", 1)[1]
    assert client_for().get(fresh).status_code == 410
    assert client_for(viewer_key, tenant).post("/api/org/evidence", {"since": since}, format="json").status_code == 401  # rotated away


def test_sso_and_mfa_are_checked_against_the_plan(make_tenant):
    from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
    from django.contrib.auth import get_user_model

    from tenants import secrets
    from tenants.models import TenantSSO, TenantUser

    pro, _ = make_tenant(plan="pro")
    user = get_user_model().objects.create_user(username="pw@x.test", email="pw@x.test", password="a-long-pass-123")
    TenantUser(tenant=pro, user=user, role="admin").save(force_insert=True)
    run = integrity_run(tenant=pro, actor="test")
    assert _statuses(run)["sso_mfa"] == "warn"
    assert "0 of 1 password members use a second factor" in {r["check"]: r["detail"] for r in run.results}["sso_mfa"]
    TOTP.activate(user, generate_totp_secret())
    assert _statuses(integrity_run(tenant=pro, actor="test"))["sso_mfa"] == "pass"
    core, _ = make_tenant(plan="core")
    TenantSSO(tenant=core, issuer="https://idp.example.com", client_id="c", enabled=True,
              client_secret_encrypted=secrets.encrypt("s")).save()  # e.g. left over from a downgrade
    assert _statuses(integrity_run(tenant=core, actor="test"))["sso_mfa"] == "fail"
