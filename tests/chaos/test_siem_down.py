"""Chaos drill: the tenant's SIEM receiver is down (nothing listens: connection refused)
for a while, then comes back, with a real Celery worker delivering the stream.

What the user sees: the stream turns `failing` with the error and its failure count in
/api/org/streams; nothing else changes for them. When the receiver is back, every event
arrives once, in order (the batch a receiver took just before dying may arrive twice, with
the same ids, which receivers deduplicate). Receivers answering 503 or too slowly are
tests/compliance/test_streams.py::test_an_outage_then_catch_up_loses_and_doubles_nothing.
"""
from __future__ import annotations

import json
import time

import pytest

from compliance.models import AuditEvent
from tests.chaos.servers import CeleryWorker, RedisServer, django_env, levqor_on_redis
from tests.compliance.receivers import Receiver
from tests.conftest import client_for
from tests.ports import free_port

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def broker(settings):
    server = RedisServer().start()
    with levqor_on_redis(settings, server):
        yield server
    server.close()


def _events(tenant, after_seq: int) -> list[str]:
    return [f"{tenant.id}-{seq}" for seq in AuditEvent.dangerously_all_tenants.filter(
        tenant_id=tenant.id, seq__gt=after_seq).order_by("seq").values_list("seq", flat=True)]


def _wait(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError(what)


def test_siem_down_then_back_gets_every_event_once_in_order(settings, make_tenant, broker, tmp_path):
    settings.LEVQOR_OUTBOUND_ALLOW_HOSTS = ["127.0.0.1"]
    tenant, key = make_tenant(plan="enterprise")
    owner = client_for(key, tenant)
    port = free_port()
    receiver = Receiver(port)
    created = owner.post("/api/org/streams", {"name": "siem", "kind": "webhook", "url": f"{receiver.url}/in",
                                              "secret": "chaos-secret-1"}, format="json")
    assert created.status_code == 201, created.content
    stream_id, start = created.json()["id"], created.json()["cursor_seq"]
    worker = CeleryWorker(django_env(settings, LEVQOR_OUTBOUND_ALLOW_HOSTS="127.0.0.1"),
                          log=tmp_path / "worker.log").start()
    try:
        for i in range(3):
            owner.post("/api/org/keys", {"role": "viewer", "name": f"before-{i}"}, format="json")
        _wait(lambda: len(receiver.events("webhook")) >= 4, 30, "the stream did not deliver before the outage")
        receiver.close()  # the SIEM goes away: connection refused from now on
        before_outage = [e["id"] for e in receiver.events("webhook")]
        for i in range(12):
            owner.post("/api/org/keys", {"role": "viewer", "name": f"during-{i}"}, format="json")
        _wait(lambda: owner.get(f"/api/org/streams/{stream_id}").json()["failures"] >= 2, 60,
              "the worker did not retry the failing stream")
        seen = owner.get(f"/api/org/streams/{stream_id}").json()
        assert seen["state"] == "failing" and seen["last_error"]  # refused, or the breaker open after it
        receiver = Receiver(port)  # back, at the same address
        expected = _events(tenant, start)
        _wait(lambda: [e["id"] for e in receiver.events("webhook")][-1:] == expected[-1:], 90,
              "the stream did not catch up after the outage")
    finally:
        worker.close()
        receiver.close()
    delivered = before_outage + [e["id"] for e in receiver.events("webhook")]
    assert delivered == expected  # every event, once, in order, across the outage
    stream = owner.get(f"/api/org/streams/{stream_id}").json()
    assert stream["state"] == "active" and stream["failures"] == 0
    assert stream["cursor_seq"] == int(expected[-1].split("-")[1])
    assert json.loads(receiver.requests[-1]["body"])["events"][-1]["id"] == expected[-1]
