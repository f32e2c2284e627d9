"""The audit trail: hash-chained, append-only in the database, purged only through one path."""
import csv
import io
import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.db.utils import DatabaseError
from django.utils import timezone

from compliance import audit
from compliance.models import AuditCheckpoint, AuditEvent
from compliance.tasks import apply_audit_retention
from tests.conftest import client_for


def _events(tenant):
    return AuditEvent.dangerously_all_tenants.filter(tenant_id=tenant.id).order_by("seq")


def test_the_database_refuses_update_and_delete(make_tenant):
    tenant, _ = make_tenant()
    row = _events(tenant).first()
    for sql in ("UPDATE tenant_audit SET actor = 'someone-else' WHERE id = %s", "DELETE FROM tenant_audit WHERE id = %s"):
        with pytest.raises(DatabaseError, match="append-only"):
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(sql, [row.id])
    assert _events(tenant).first().actor == row.actor


def _tamper(sql, params):
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE tenant_audit DISABLE TRIGGER tenant_audit_append_only")
        cursor.execute(sql, params)
        cursor.execute("ALTER TABLE tenant_audit ENABLE TRIGGER tenant_audit_append_only")


def test_tampering_is_caught_at_the_first_broken_link(make_tenant):
    tenant, key = make_tenant()
    other, _ = make_tenant()
    for i in range(4):
        client_for(key, tenant).post("/api/org/keys", {"role": "viewer", "name": f"k{i}"}, format="json")
    assert audit.verify_chain(tenant.id) == (True, None)
    victim = _events(tenant)[3]
    _tamper("UPDATE tenant_audit SET metadata_json = '{\"role\": \"owner\"}' WHERE id = %s", [victim.id])
    assert audit.verify_chain(tenant.id) == (False, victim.seq)
    assert audit.verify_chain(other.id) == (True, None)
    with pytest.raises(CommandError, match="1 of 1 audit chains are broken"):
        call_command("audit_verify", "--tenant", tenant.slug, stdout=io.StringIO())
    out = io.StringIO()
    call_command("audit_verify", "--tenant", other.slug, stdout=out)
    assert "1 audit chains intact" in out.getvalue()


def test_a_deleted_row_is_caught(make_tenant):
    tenant, key = make_tenant()
    client_for(key, tenant).post("/api/org/keys", {"role": "viewer"}, format="json")
    client_for(key, tenant).post("/api/org/keys", {"role": "viewer"}, format="json")
    middle = _events(tenant)[1]
    _tamper("DELETE FROM tenant_audit WHERE id = %s", [middle.id])
    assert audit.verify_chain(tenant.id) == (False, middle.seq + 1)


def test_retention_purges_exactly_the_old_rows_and_the_chain_still_verifies(make_tenant):
    tenant, key = make_tenant()  # core: 30 days of audit
    for i in range(3):
        client_for(key, tenant).post("/api/org/keys", {"role": "viewer", "name": f"old{i}"}, format="json")
    old_seqs = list(_events(tenant).values_list("seq", flat=True))
    later = timezone.now() + timedelta(days=31)
    from freezegun import freeze_time

    with freeze_time(later):
        client_for(key, tenant).post("/api/org/keys", {"role": "viewer", "name": "new"}, format="json")
        purged = apply_audit_retention()
    assert purged[tenant.slug] == len(old_seqs)
    remaining = list(_events(tenant).values_list("seq", flat=True))
    assert remaining == [max(old_seqs) + 1]
    checkpoint = AuditCheckpoint.objects.get(tenant_id=tenant.id)
    assert checkpoint.seq == max(old_seqs) and checkpoint.purged_rows == len(old_seqs)
    assert audit.verify_chain(tenant.id) == (True, None)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_export_streams_the_trail_and_is_audited(make_tenant, fmt):
    tenant, key = make_tenant()
    other, other_key = make_tenant()
    api = client_for(key, tenant)
    api.post("/api/org/keys", {"role": "viewer", "name": "x"}, format="json")
    response = api.get(f"/api/org/audit/export?format={fmt}")
    assert response.status_code == 200
    text = b"".join(response.streaming_content).decode()
    rows = list(csv.DictReader(io.StringIO(text))) if fmt == "csv" else [json.loads(line) for line in text.splitlines()]
    assert [r["event"] for r in rows][-2:] == ["tenant.created", "key.created"]  # newest first
    assert other.slug not in text
    exported = _events(tenant).last()
    assert exported.event == "data.exported" and exported.metadata_json["format"] == fmt
    assert api.get("/api/org/audit/export?format=xml").status_code == 400
    viewer = api.post("/api/org/keys", {"role": "viewer"}, format="json").json()["api_key"]
    assert client_for(viewer, tenant).get("/api/org/audit/export").status_code == 403


def test_events_record_the_callers_ip_and_user_agent(make_tenant):
    tenant, key = make_tenant()
    client_for(key, tenant, HTTP_USER_AGENT="curl/8.5", REMOTE_ADDR="203.0.113.9").post(
        "/api/org/keys", {"role": "viewer"}, format="json")
    event = _events(tenant).last()
    assert (event.event, event.ip, event.user_agent) == ("key.created", "203.0.113.9", "curl/8.5")
