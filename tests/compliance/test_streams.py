"""SIEM streams against local receivers: formats, signatures, outages, SSRF."""
import hashlib
import hmac
from datetime import timedelta

import pytest
from django.utils import timezone

from compliance import streams
from compliance.models import Alert, AuditEvent, AuditStream
from tests.compliance.receivers import Receiver
from tests.conftest import client_for


@pytest.fixture
def receiver(settings):
    settings.LEVQOR_OUTBOUND_ALLOW_HOSTS = ["127.0.0.1"]
    r = Receiver()
    yield r
    r.close()


def _stream(key, tenant, receiver, kind, secret="s3cret-token-123"):
    response = client_for(key, tenant).post("/api/org/streams", {"name": kind, "kind": kind, "url": receiver.url + "/in",
                                                                  "secret": secret}, format="json")
    assert response.status_code == 201, response.content
    assert "secret" not in response.json() and secret not in response.content.decode()
    return AuditStream.dangerously_all_tenants.get(pk=response.json()["id"])


def _make_events(key, tenant, n):
    for i in range(n):
        client_for(key, tenant).post("/api/org/keys", {"role": "viewer", "name": f"k{i}"}, format="json")


def _drain(stream_id):
    while streams.deliver(stream_id)["more"]:
        pass


def _expected_ids(tenant, after_seq):
    return [f"{tenant.id}-{s}" for s in AuditEvent.dangerously_all_tenants.filter(tenant_id=tenant.id, seq__gt=after_seq)
            .order_by("seq").values_list("seq", flat=True)]


@pytest.mark.parametrize("kind", ["splunk_hec", "datadog", "webhook"])
def test_each_format_with_its_headers_and_signature(make_tenant, receiver, kind):
    tenant, key = make_tenant(plan="enterprise")
    stream = _stream(key, tenant, receiver, kind)
    _make_events(key, tenant, 3)
    _drain(stream.pk)
    request = receiver.requests[0]
    headers = {k.lower(): v for k, v in request["headers"].items()}
    if kind == "splunk_hec":
        assert headers["authorization"] == "Splunk s3cret-token-123"
    elif kind == "datadog":
        assert headers["dd-api-key"] == "s3cret-token-123"
    else:
        timestamp, signature = headers["x-levqor-timestamp"], headers["x-levqor-signature"]
        expected = hmac.new(b"s3cret-token-123", timestamp.encode() + b"." + request["body"], hashlib.sha256).hexdigest()
        assert signature == f"sha256={expected}"
        assert abs(int(timestamp) - timezone.now().timestamp()) < 60
    ids = [e["id"] for e in receiver.events(kind)]
    assert ids == _expected_ids(tenant, stream.cursor_seq)
    assert [e["event"] for e in receiver.events(kind)] == ["config.changed"] + ["key.created"] * 3  # its own creation first


def test_an_outage_then_catch_up_loses_and_doubles_nothing(make_tenant, receiver, monkeypatch):
    monkeypatch.setattr(streams, "TIMEOUT_SECONDS", 0.5)
    monkeypatch.setattr(streams, "BATCH", 4)
    tenant, key = make_tenant(plan="enterprise")
    stream = _stream(key, tenant, receiver, "webhook")
    start = stream.cursor_seq
    receiver.fail_next = 3
    _make_events(key, tenant, 10)
    for _ in range(3):
        result = streams.deliver(stream.pk)
        assert result["error"] == "HTTP 503" and result["sent"] == 0
    stream.refresh_from_db()
    assert (stream.state, stream.failures, stream.cursor_seq) == ("failing", 3, start)
    # The receiver takes a batch but answers too late: we retry it; it honours the ids.
    receiver.delay = 1.0
    assert streams.deliver(stream.pk)["error"].startswith(("ReadTimeout", "ConnectionError"))
    receiver.delay = 0
    _drain(stream.pk)
    ids = [e["id"] for e in receiver.events("webhook")]
    assert sorted(set(ids), key=ids.index) == _expected_ids(tenant, start)  # every event, in order
    assert len(ids) - len(set(ids)) == 4  # only the timed-out batch came twice, same ids
    stream.refresh_from_db()
    assert stream.state == "active" and stream.failures == 0


def test_a_stream_gives_up_with_an_alert_and_replay_resumes_it(make_tenant, receiver, monkeypatch):
    monkeypatch.setattr(streams, "MAX_FAILURES", 3)
    tenant, key = make_tenant(plan="enterprise")
    stream = _stream(key, tenant, receiver, "splunk_hec")
    _make_events(key, tenant, 2)
    receiver.fail_next = 3
    for _ in range(3):
        streams.deliver(stream.pk)
    stream.refresh_from_db()
    assert stream.state == "dead"
    assert Alert.objects.filter(tenant_id=tenant.id, kind="siem.delivery_failed").count() == 1
    assert streams.deliver(stream.pk)["sent"] == 0  # dead streams are not retried
    replay = client_for(key, tenant).post(f"/api/org/streams/{stream.pk}/replay",
                                          {"since": (timezone.now() - timedelta(hours=1)).isoformat()}, format="json")
    assert replay.status_code == 200 and replay.json()["state"] == "active" and replay.json()["cursor_seq"] == 0
    _drain(stream.pk)
    assert [e["id"] for e in receiver.events("splunk_hec")] == _expected_ids(tenant, 0)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9/x",  # plain http and loopback, not allow-listed
    "https://127.0.0.1/x", "https://10.1.2.3/x", "https://192.168.0.10/x", "https://169.254.169.254/latest/meta-data",
    "https://[::1]/x", "https://0.0.0.0/x", "file:///etc/passwd", "gopher://example.com/", "https://user:pw@example.com/",
    "not a url",
])
def test_internal_and_non_https_destinations_are_refused(make_tenant, url):
    tenant, key = make_tenant(plan="enterprise")
    response = client_for(key, tenant).post("/api/org/streams", {"name": "x", "kind": "webhook", "url": url,
                                                                 "secret": "s3cret-token-123"}, format="json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "destination_refused"
    assert not AuditStream.dangerously_all_tenants.filter(tenant_id=tenant.id).exists()


def test_streams_need_the_enterprise_feature_and_an_admin(make_tenant, receiver):
    core, core_key = make_tenant(plan="core")
    denied = client_for(core_key, core).post("/api/org/streams", {"name": "x", "kind": "webhook", "url": receiver.url,
                                                                  "secret": "s3cret-token-123"}, format="json")
    assert denied.status_code == 403
    assert denied.json()["error"]["details"]["rationale"] == "plan core lacks feature audit_stream"
    ent, ent_key = make_tenant(plan="enterprise")
    viewer = client_for(ent_key, ent).post("/api/org/keys", {"role": "viewer"}, format="json").json()["api_key"]
    assert client_for(viewer, ent).post("/api/org/streams", {}, format="json").status_code == 403
