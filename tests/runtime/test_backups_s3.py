"""Per-tenant backups and evidence PDFs in a region whose storage is S3, against a real
S3-compatible HTTP server (moto's server mode on a local port): what lands in the
bucket, restores read back from it, and presigned export links a user downloads."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import requests
from django.utils import timezone
from moto.server import ThreadedMotoServer

from compliance.models import AuditEvent
from levqor.regions import parse_regions
from runtime import backups
from tests.conftest import client_for
from tests.ports import free_port, wait_for_port


@pytest.fixture(scope="module")
def s3_server():
    """A local S3-compatible server (moto), shared by this module's tests."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    assert wait_for_port(port)
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_server, settings, monkeypatch):
    """A fresh bucket, and every region's storage pointed at it (one prefix per region)."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    name = f"levqor-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    s3.create_bucket(Bucket=name)
    settings.LEVQOR_REGIONS = {
        region_name: dataclasses.replace(region, storage=f"s3://{name}/regions/{region_name}",
                                         storage_endpoint_url=s3_server)
        for region_name, region in settings.LEVQOR_REGIONS.items()}
    return s3, name


def _objects(s3, bucket: str, prefix: str) -> dict[str, bytes]:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


def test_an_s3_region_is_configured_with_its_endpoint():
    spec = {"eu": {"storage": "s3://bucket/eu", "storage_endpoint_url": "http://minio:9000"}, "us": {}}
    regions = parse_regions(json.dumps(spec), default_database_url={"NAME": "x"})
    assert regions["eu"].storage == "s3://bucket/eu" and regions["eu"].storage_endpoint_url == "http://minio:9000"
    assert regions["us"].storage_endpoint_url is None and not regions["us"].storage.startswith("s3://")


def test_a_backup_lands_in_the_bucket_and_restores_into_staging_from_it(make_tenant, bucket):
    s3, name = bucket
    tenant, key = make_tenant()
    client = client_for(key, tenant)
    for workflow in ("alpha", "beta"):
        assert client.post("/api/workflows", {"name": workflow}, format="json").status_code == 201
    backup = backups.backup_tenant(tenant=tenant, actor="test")
    assert backup.status == "ok"
    stored = _objects(s3, name, f"regions/{tenant.region}/tenants/{tenant.id}/")
    assert list(stored) == [f"regions/{tenant.region}/{backup.storage_name}"]
    archive = stored[f"regions/{tenant.region}/{backup.storage_name}"]
    assert hashlib.sha256(archive).hexdigest() == backup.checksum_sha256 and len(archive) == backup.size_bytes

    report = backups.restore_into_staging(backup, actor="test")
    assert report["verified"] and all(c["ok"] for c in report["checks"])
    workflows = next(c for c in report["checks"] if c["table"] == "workflows_workflow")
    assert workflows["rows"] == 2
    backups.discard_staging(backup)

    # A damaged object in the bucket is caught before anything is loaded.
    s3.put_object(Bucket=name, Key=f"regions/{tenant.region}/{backup.storage_name}", Body=archive[:-10] + b"0" * 10)
    with pytest.raises(backups.RestoreFailed, match="checksum"):
        backups.restore_into_staging(backup, actor="test")


def test_export_is_a_presigned_url_from_the_bucket_audited_when_minted(make_tenant, bucket):
    a, key_a = make_tenant()
    b, key_b = make_tenant()
    backup = backups.backup_tenant(tenant=a, actor="test")
    link = client_for(key_a, a).post(f"/api/org/backups/{backup.pk}/export")
    assert link.status_code == 201
    url = link.json()["url"]
    query = parse_qs(urlsplit(url).query)
    assert url.startswith(bucket[0].meta.endpoint_url) and query["X-Amz-Expires"] == ["600"]
    assert "X-Amz-Signature" in query
    # The presigned branch audits when the link is minted: the download goes straight to
    # the object store, which Levqor never sees.
    assert AuditEvent.dangerously_all_tenants.filter(tenant_id=a.id, event="backup.exported").count() == 1
    download = requests.get(url, timeout=10)
    assert download.status_code == 200 and "Content-Encoding" not in download.headers  # saved as stored
    assert hashlib.sha256(download.content).hexdigest() == backup.checksum_sha256
    # B cannot mint a link for A's backup.
    assert client_for(key_b, b).post(f"/api/org/backups/{backup.pk}/export").status_code == 404
    assert AuditEvent.dangerously_all_tenants.filter(tenant_id=b.id, event="backup.exported").count() == 0


def test_an_evidence_pdf_lands_in_the_bucket_and_downloads_from_it(make_tenant, bucket):
    from compliance.tasks import generate_evidence

    s3, name = bucket
    tenant, key = make_tenant()
    owner = client_for(key, tenant)
    since = (timezone.now() - timedelta(hours=1)).isoformat()
    accepted = owner.post("/api/org/evidence", {"since": since}, format="json")
    assert accepted.status_code == 202
    generate_evidence.apply(args=[accepted.json()["id"]]).get()
    ready = owner.get(f"/api/org/evidence/{accepted.json()['id']}").json()
    assert ready["status"] == "ready"
    stored = _objects(s3, name, f"regions/{tenant.region}/evidence/{tenant.id}/")
    assert len(stored) == 1
    pdf = next(iter(stored.values()))
    assert pdf.startswith(b"%PDF")
    download = client_for().get(ready["download_url"].split("testserver", 1)[1])
    assert download.status_code == 200 and download["Content-Type"] == "application/pdf"
    assert b"".join(download.streaming_content) == pdf
