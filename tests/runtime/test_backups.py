"""Per-tenant backups as staff and org admins use them: round trips for both strategies,
the restore-A-into-staging-holds-no-B test, verification, retention, and export links."""
from __future__ import annotations

import dataclasses
import hashlib
import time

import pytest
from django.core import signing
from django.core.management import call_command
from django.db import connection
from django.test import Client

from compliance.models import Alert, AuditEvent
from runtime import backups
from runtime.backup_tasks import take_backup
from runtime.models import Backup
from tests.conftest import client_for

STRATEGIES = {"schema": "core", "database": "enterprise"}


@pytest.fixture
def storage(settings, tmp_path):
    settings.LEVQOR_REGIONS = {name: dataclasses.replace(region, storage=str(tmp_path / name))
                               for name, region in settings.LEVQOR_REGIONS.items()}
    return tmp_path


def _seed(key, tenant, names) -> list[str]:
    client = client_for(key, tenant)
    ids = []
    for name in names:
        wf = client.post("/api/workflows", {"name": name}, format="json").json()["id"]
        assert client.post(f"/api/workflows/{wf}/run", {}, format="json").status_code == 201
        ids.append(wf)
    return ids


def _names(key, tenant) -> set[str]:
    return {w["name"] for w in client_for(key, tenant).get("/api/workflows").json()["results"]}


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_backup_restore_round_trip_with_checksums(make_tenant, storage, strategy):
    tenant, key = make_tenant(plan=STRATEGIES[strategy])
    assert tenant.isolation == strategy
    _seed(key, tenant, ["alpha", "beta", "gamma"])
    backup = backups.backup_tenant(tenant=tenant, actor="test")
    assert backup.status == "ok" and backup.expires_at is not None
    tables = {t["table"]: t for t in backup.manifest_json["tables"]}
    assert tables["workflows_workflow"]["rows"] == 3 and tables["workflows_workflowrun"]["rows"] == 3
    assert tables["tenants"]["rows"] == 1 and tables["tenant_audit"]["rows"] >= 1
    stored = storage / tenant.region / backup.storage_name
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == backup.checksum_sha256

    client = client_for(key, tenant)
    doomed = next(w for w in client.get("/api/workflows").json()["results"] if w["name"] == "beta")
    client.delete(f"/api/workflows/{doomed['id']}")
    client.post("/api/workflows", {"name": "after-backup"}, format="json")

    report = backups.restore_into_staging(backup, actor="test")
    assert report["verified"] and all(c["ok"] for c in report["checks"])
    assert _names(key, tenant) == {"alpha", "gamma", "after-backup"}  # staging changed nothing live
    replaced = backups.replace_live(backup, actor="test")
    assert _names(key, tenant) == {"alpha", "beta", "gamma"}
    pre = Backup.dangerously_all_tenants.get(pk=replaced["pre_restore_backup"])
    assert pre.trigger == "pre-restore" and pre.status == "ok"  # what was replaced can be restored
    assert AuditEvent.dangerously_all_tenants.filter(tenant_id=tenant.id, event="backup.restored").exists()
    # The restored tenant keeps working: writes go on.
    assert client.post("/api/workflows", {"name": "delta"}, format="json").status_code == 201


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_restore_of_a_into_staging_holds_no_row_of_b(make_tenant, storage, strategy):
    a, key_a = make_tenant(plan=STRATEGIES[strategy])
    b, key_b = make_tenant(plan=STRATEGIES[strategy])
    _seed(key_a, a, ["a-one", "a-two"])
    b_ids = _seed(key_b, b, ["b-secret"])
    backup = backups.backup_tenant(tenant=a, actor="test")
    report = backups.restore_into_staging(backup, actor="test")
    schema = report["staging_schema"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s", [schema])
        shared = [t for (t,) in cursor.fetchall() if t.startswith("shared__")]
        assert len(shared) >= 5
        for table in shared:
            entry = next(t for t in backup.manifest_json["tables"] if f"shared__{t['table']}" == table)
            cursor.execute(f'SELECT DISTINCT "{entry["tenant_column"]}" FROM "{schema}"."{table}"')
            assert {row[0] for row in cursor.fetchall()} <= {a.id}, table
        dump = []
        for table in shared:
            cursor.execute(f'SELECT * FROM "{schema}"."{table}"')
            dump.append(repr(cursor.fetchall()))
    if strategy == "schema":
        with connection.cursor() as cursor:
            cursor.execute(f'SELECT name, id::text FROM "{schema}".workflows_workflow')
            rows = cursor.fetchall()
    else:
        from tenants import broker

        conn = backups._connect(broker.server_config(a.region), report["staging_database"])
        with conn.cursor() as cursor:
            cursor.execute("SELECT name, id::text FROM workflows_workflow")
            rows = cursor.fetchall()
        conn.close()
    assert sorted(name for name, _ in rows) == ["a-one", "a-two"]
    everything = " ".join(dump) + repr(rows)
    for secret in (b.slug, "b-secret", *b_ids):
        assert secret not in everything
    backups.discard_staging(backup)


def test_a_damaged_backup_is_refused_and_leaves_no_staging(make_tenant, storage):
    tenant, key = make_tenant()
    _seed(key, tenant, ["x"])
    backup = backups.backup_tenant(tenant=tenant, actor="test")
    path = storage / tenant.region / backup.storage_name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(backups.RestoreFailed, match="checksum"):
        backups.restore_into_staging(backup, actor="test")
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [backups.staging_names(backup)[0]])
        assert cursor.fetchone() is None
    # The failed attempt counts in the staff KPI "restore success" (it never got to verifying).
    from runtime import kpis

    figures = kpis.report(1)
    assert (figures["restores"], figures["restore_success"]) == (1, 0.0)


def test_encrypted_backups_round_trip_and_are_not_plain_tar(make_tenant, storage, settings):
    settings.LEVQOR_BACKUP_ENCRYPT = True
    tenant, key = make_tenant()
    _seed(key, tenant, ["secret-workflow"])
    backup = backups.backup_tenant(tenant=tenant, actor="test")
    raw = (storage / tenant.region / backup.storage_name).read_bytes()
    assert backup.encrypted and not raw.startswith(b"\x1f\x8b") and b"secret-workflow" not in raw
    assert backups.restore_into_staging(backup, actor="test")["verified"]
    backups.discard_staging(backup)


def test_a_failed_backup_is_recorded_alerted_and_stores_nothing(make_tenant, settings, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    settings.LEVQOR_REGIONS = {name: dataclasses.replace(region, storage=str(blocker / name))
                               for name, region in settings.LEVQOR_REGIONS.items()}
    tenant, _ = make_tenant()
    with pytest.raises(Exception):
        backups.backup_tenant(tenant=tenant, actor="test")
    failed = Backup.dangerously_all_tenants.get(tenant_id=tenant.id)
    assert failed.status == "failed" and failed.error and failed.storage_name == ""
    assert Alert.objects.filter(kind="backup.failed", tenant_id=tenant.id).count() == 1
    with pytest.raises(Exception):  # failing again while the alert is open: no second alert
        backups.backup_tenant(tenant=tenant, actor="test")
    assert Alert.objects.filter(kind="backup.failed", tenant_id=tenant.id).count() == 1

    # A success closes the alert, so a failure weeks later alerts again.
    working = {name: dataclasses.replace(region, storage=str(tmp_path / "ok" / name))
               for name, region in settings.LEVQOR_REGIONS.items()}
    broken, settings.LEVQOR_REGIONS = settings.LEVQOR_REGIONS, working
    backups.backup_tenant(tenant=tenant, actor="test")
    assert not Alert.objects.filter(kind="backup.failed", tenant_id=tenant.id, resolved_at__isnull=True).exists()
    settings.LEVQOR_REGIONS = broken
    with pytest.raises(Exception):
        backups.backup_tenant(tenant=tenant, actor="test")
    assert Alert.objects.filter(kind="backup.failed", tenant_id=tenant.id).count() == 2


def test_the_nightly_round_backs_up_every_active_tenant_and_survives_a_failure(make_tenant, storage):
    from runtime.backup_tasks import nightly_backups
    from tenants import services
    from tenants.models import Tenant

    core, _ = make_tenant(plan="core")
    enterprise, _ = make_tenant(plan="enterprise")
    suspended, _ = make_tenant(plan="core")
    services.tenant_suspend(tenant=suspended, actor="test")
    others = Tenant.objects.filter(status=Tenant.Status.ACTIVE).exclude(pk__in=[core.pk, enterprise.pk]).count()
    assert nightly_backups.apply().get() == {"ok": 2 + others, "failed": 0}
    nightly = Backup.dangerously_all_tenants.filter(trigger="nightly", status="ok")
    assert {core.id, enterprise.id} <= set(nightly.values_list("tenant_id", flat=True))
    assert not Backup.dangerously_all_tenants.filter(tenant_id=suspended.id).exists()

    # One tenant's storage failing does not stop the others' backups.
    (storage / core.region / "tenants" / str(core.id)).rename(storage / "moved")
    (storage / core.region / "tenants" / str(core.id)).write_text("not a folder")
    result = nightly_backups.apply().get()
    assert result == {"ok": 1 + others, "failed": 1}
    assert Backup.dangerously_all_tenants.filter(tenant_id=enterprise.id, trigger="nightly", status="ok").count() == 2


def test_retention_deletes_exactly_the_expired_backups(make_tenant, storage):
    from datetime import timedelta

    from django.utils import timezone

    tenant, _ = make_tenant()
    old, fresh = (backups.backup_tenant(tenant=tenant, actor="test") for _ in range(2))
    Backup.dangerously_all_tenants.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    assert backups.enforce_retention() == [old.pk]
    assert not (storage / tenant.region / old.storage_name).exists()
    assert (storage / tenant.region / fresh.storage_name).exists()
    assert Backup.dangerously_all_tenants.get(pk=old.pk).status == "expired"
    assert backups.enforce_retention() == []
    # Core keeps backups 7 days, enterprise 90.
    assert fresh.expires_at - fresh.created_at == timedelta(days=7)


class _PastSigner(signing.TimestampSigner):
    def timestamp(self):
        return signing.b62_encode(int(time.time()) - 3600)


def test_export_link_downloads_once_is_audited_and_expires(make_tenant, storage):
    a, key_a = make_tenant()
    b, key_b = make_tenant()
    backup = backups.backup_tenant(tenant=a, actor="test")
    link = client_for(key_a, a).post(f"/api/org/backups/{backup.pk}/export")
    assert link.status_code == 201
    path = link.json()["url"].split("testserver", 1)[1]
    download = Client().get(path)
    assert download.status_code == 200
    assert hashlib.sha256(b"".join(download.streaming_content)).hexdigest() == backup.checksum_sha256
    assert AuditEvent.dangerously_all_tenants.filter(tenant_id=a.id, event="backup.exported").count() == 1
    again = Client().get(path)
    assert again.status_code == 410 and again.json()["error"]["code"] == "link_used"
    # B cannot mint a link for A's backup, nor bend A's token to another backup.
    assert client_for(key_b, b).post(f"/api/org/backups/{backup.pk}/export").status_code == 404
    token = path.rsplit("/", 1)[1]
    forged = token.replace(token[:5], "AAAAA")
    assert Client().get(f"/backups/{forged}").json()["error"]["code"] == "link_invalid"
    stale = _PastSigner(salt=backups.EXPORT_SALT).sign_object({"t": a.id, "b": backup.pk, "n": "old"})
    assert Client().get(f"/backups/{stale}").json()["error"]["code"] == "link_expired"


def test_api_backup_runs_as_a_task_and_roles_are_checked(make_tenant, storage):
    tenant, key = make_tenant()
    owner = client_for(key, tenant)
    accepted = owner.post("/api/org/backups")
    assert accepted.status_code == 202 and accepted.json()["status"] == "running"
    take_backup.apply(args=[accepted.json()["id"]]).get()
    done = owner.get(f"/api/org/backups/{accepted.json()['id']}").json()
    assert done["status"] == "ok" and done["sha256"] and done["tables"]
    viewer_key = owner.post("/api/org/keys", {"role": "viewer", "name": "v"}, format="json").json()["api_key"]
    viewer = client_for(viewer_key, tenant)
    assert viewer.post("/api/org/backups").status_code == 403
    assert viewer.post(f"/api/org/backups/{done['id']}/restore", {"mode": "staging"}, format="json").status_code == 403
    restored = owner.post(f"/api/org/backups/{done['id']}/restore", {"mode": "staging"}, format="json")
    assert restored.status_code == 200 and restored.json()["verified"] is True
    bad = owner.post(f"/api/org/backups/{done['id']}/restore", {"mode": "sideways"}, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_input"
    backups.discard_staging(Backup.dangerously_all_tenants.get(pk=done["id"]))


def test_portal_page_shows_state_and_buttons_work(make_tenant, storage):
    from django.contrib.auth import get_user_model

    from tenants.models import TenantUser

    tenant, _ = make_tenant()
    user = get_user_model().objects.create_user(username="ops@b.test", email="ops@b.test", password="x-long-pass-1")
    TenantUser(tenant=tenant, user=user, role="admin").save(force_insert=True)
    browser = Client()
    browser.force_login(user)
    browser.post("/org/settings/backups/create")
    page = browser.get("/org/settings/backups").content.decode()
    assert "running" in page and 'http-equiv="refresh"' in page  # the page follows the task
    take_backup.apply(args=[Backup.dangerously_all_tenants.get(tenant_id=tenant.id).pk]).get()
    page = browser.get("/org/settings/backups").content.decode()
    assert ">ok<" in page and "Restore into staging" in page
    backup = Backup.dangerously_all_tenants.get(tenant_id=tenant.id)
    restored = browser.post("/org/settings/backups/restore", {"backup": backup.pk}, follow=True).content.decode()
    assert "restored into staging and verified" in restored
    exported = browser.post("/org/settings/backups/export", {"backup": backup.pk})
    assert exported.status_code == 302 and "/backups/" in exported["Location"]
    backups.discard_staging(backup)


def test_commands_back_up_and_restore_with_progress(make_tenant, storage, capsys):
    tenant, key = make_tenant()
    _seed(key, tenant, ["cli"])
    call_command("backup_tenant", tenant.slug)
    out, err = capsys.readouterr()
    assert f"of {tenant.slug}" in out and "tables" in err
    backup = Backup.dangerously_all_tenants.get(tenant_id=tenant.id)
    call_command("restore_tenant", str(backup.pk), "--into-staging")
    out, err = capsys.readouterr()
    assert "tables verified" in out and "tables restored" in err
    backups.discard_staging(backup)


def test_redeploy_reapplies_config_records_the_deploy_and_is_role_checked(make_tenant):
    from django.contrib.auth import get_user_model

    from tenants.models import TenantRuntime, TenantUser

    tenant, key = make_tenant()
    TenantRuntime.dangerously_all_tenants.filter(tenant=tenant).update(limits_json={"api_calls": 1})  # drifted
    owner = client_for(key, tenant)
    done = owner.post("/api/org/redeploy")
    assert done.status_code == 200 and done.json()["limits"]["api_calls"] == 100000
    runtime = TenantRuntime.dangerously_all_tenants.get(tenant=tenant)
    assert runtime.last_deploy_at is not None and runtime.domain.startswith(tenant.slug + ".")
    event = AuditEvent.dangerously_all_tenants.get(tenant_id=tenant.id, event="config.changed")
    assert event.metadata_json["what"] == "redeploy" and "limits" in event.metadata_json["changed"]
    viewer_key = owner.post("/api/org/keys", {"role": "viewer", "name": "v"}, format="json").json()["api_key"]
    assert client_for(viewer_key, tenant).post("/api/org/redeploy").status_code == 403
    user = get_user_model().objects.create_user(username="op@r.test", email="op@r.test", password="x-long-pass-1")
    TenantUser(tenant=tenant, user=user, role="operator").save(force_insert=True)
    browser = Client()
    browser.force_login(user)
    browser.post("/org/actions/redeploy")
    home = browser.get("/org").content.decode()
    assert "user:op@r.test" in home and 'id="deploys"' in home
    call_command("redeploy_tenant", tenant.slug)
    assert AuditEvent.dangerously_all_tenants.filter(tenant_id=tenant.id, event="config.changed").count() == 3


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_tenant_health_checks_say_what_is_wrong(make_tenant, storage, strategy, capsys):
    tenant, key = make_tenant(plan=STRATEGIES[strategy])
    owner = client_for(key, tenant)
    health = owner.get("/api/org/health").json()
    assert health["status"] == "warning" and health["checks"]["backup"]["detail"] == "no backup yet"
    assert health["checks"]["storage"]["state"] == "ok"
    backups.backup_tenant(tenant=tenant, actor="test")
    assert owner.get("/api/org/health").json()["status"] == "ok"
    if strategy == "schema":
        with connection.cursor() as cursor:
            cursor.execute(f'ALTER SCHEMA "{tenant.schema_name}" RENAME TO "{tenant.schema_name}_gone"')
        from runtime.health import tenant_health

        broken = tenant_health(tenant)
        assert broken["status"] == "failing" and "missing" in broken["checks"]["storage"]["detail"]
        call_command("tenant_health")
        assert f"failing  {tenant.slug}" in capsys.readouterr().out
