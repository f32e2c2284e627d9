"""Circuit breakers against real failing dependencies over HTTP and PostgreSQL: the local
Stripe told to fail, a SIEM receiver and a Notion stand-in answering 503, a replica port
nothing listens on. Nothing of ours is patched; the thresholds are set small."""
from __future__ import annotations

import dataclasses
import time

import pytest
import stripe
from django.contrib.auth import get_user_model
from django.test import Client

from billing import notion
from compliance import streams
from compliance.models import Alert, AuditEvent, AuditStream
from runtime import breakers, dr, kpis
from runtime.models import Breaker, BreakerEvent
from tenants.models import Tenant
from tests.billing.conftest import billing_on, stripe_server  # noqa: F401 - fixtures
from tests.compliance.receivers import Receiver
from tests.conftest import client_for, unique_slug

COOLDOWN = 0.4


@pytest.fixture(autouse=True)
def small_breakers(settings):
    settings.LEVQOR_BREAKER_FAILURES = 3
    settings.LEVQOR_BREAKER_WINDOW_SECONDS = 60
    settings.LEVQOR_BREAKER_COOLDOWN_SECONDS = COOLDOWN
    breakers.forget()
    yield
    breakers.forget()


@pytest.fixture
def receiver(settings):
    settings.LEVQOR_OUTBOUND_ALLOW_HOSTS = ["127.0.0.1"]
    r = Receiver()
    yield r
    r.close()


def _signup(api, slug):
    return api.post("/api/tenants", {"name": "B", "slug": slug, "plan": "core", "admin_email": "o@b.test"}, format="json")


@pytest.mark.django_db(transaction=True)
def test_stripe_failing_opens_the_breaker_then_signups_fail_fast_and_a_probe_call_closes_it(billing_on, api):
    billing_on.fail_next("/v1/customers", status=500, count=3)
    for _ in range(3):
        response = _signup(api, unique_slug("brk"))
        assert response.status_code == 503 and response.json()["error"]["code"] == "billing_unavailable"
    assert breakers.state("stripe") == "open"

    sent = len(billing_on.requests)
    started = time.monotonic()
    refused = _signup(api, slug := unique_slug("brk"))
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "billing_unavailable"
    assert "circuit breaker is open" in refused.json()["error"]["message"] and int(refused["Retry-After"]) >= 1
    assert len(billing_on.requests) == sent and time.monotonic() - started < 2  # Stripe was not called
    assert not Tenant.objects.filter(slug=slug).exists()

    # The record in PostgreSQL (written after the failing request's transaction) and the alert.
    row = Breaker.objects.get(name="stripe")
    assert (row.state, row.failures) == ("open", 3) and "APIError" in row.reason
    assert list(BreakerEvent.objects.filter(name="stripe").values_list("from_state", "to_state")) == [("closed", "open")]
    assert Alert.objects.filter(kind="breaker.opened", dedupe_key="stripe", resolved_at__isnull=True).count() == 1

    time.sleep(COOLDOWN + 0.1)  # Stripe is healthy again: the next call is the probe, and it closes the breaker
    assert _signup(api, unique_slug("brk")).status_code == 201
    assert breakers.state("stripe") == "closed"
    assert [e.to_state for e in BreakerEvent.objects.filter(name="stripe").order_by("at", "id")] == [
        "open", "half_open", "closed"]
    assert Breaker.objects.get(name="stripe").state == "closed"
    assert not Alert.objects.filter(kind="breaker.opened", resolved_at__isnull=True).exists()


def test_a_failing_probe_call_opens_it_again_and_stripe_4xx_does_not_count(billing_on, make_tenant):
    from billing import stripe_api

    c = stripe_api.client()
    for _ in range(5):  # Stripe answering "no such customer" is an answer, not an outage
        with pytest.raises(stripe.InvalidRequestError) as refused:
            stripe_api.call(c.v1.customers.retrieve, "cus_missing")
        assert stripe_api.is_missing(refused.value)
    assert breakers.snapshot("stripe")["failures"] == 0

    billing_on.fail_next("/v1/customers", status=502, count=4)
    for _ in range(3):
        with pytest.raises(stripe_api.BillingUnavailable):
            stripe_api.call(c.v1.customers.list)
    time.sleep(COOLDOWN + 0.1)
    assert breakers.state("stripe") == "half_open"
    with pytest.raises(stripe_api.BillingUnavailable, match="APIError|Injected"):
        stripe_api.call(c.v1.customers.list)  # the probe, and Stripe still fails
    assert breakers.snapshot("stripe")["state"] == "open" and breakers.snapshot("stripe")["retry_after"] > 0

    time.sleep(COOLDOWN + 0.1)
    assert breakers.probe("stripe") is True  # GET /v1/account answers
    assert breakers.state("stripe") == "closed" and stripe_api.call(c.v1.customers.list) is not None


def test_one_probe_at_a_time_while_half_open(db):
    breakers.register_probe("test-dep", lambda name: True)
    for _ in range(3):
        with pytest.raises(ConnectionError), breakers.guard("test-dep"):
            raise ConnectionError("refused")
    with pytest.raises(breakers.BreakerOpen) as fast:
        with breakers.guard("test-dep"):
            pytest.fail("an open breaker let a call through")
    assert fast.value.status_code == 503 and fast.value.code == "dependency_unavailable"
    time.sleep(COOLDOWN + 0.1)
    with breakers.guard("test-dep") as first:
        assert first.is_probe
        with pytest.raises(breakers.BreakerOpen):  # a second caller while the probe is out
            with breakers.guard("test-dep"):
                pass
    assert breakers.state("test-dep") == "closed"


def test_opened_by_hand_stays_open_past_the_cooldown_until_closed_or_a_probe_succeeds(db):
    calls = []

    @breakers.guard("by-hand")
    def call():
        calls.append(1)

    breakers.register_probe("by-hand", lambda name: True)
    breakers.open("by-hand", reason="staff: maintenance window", actor="staff:ops")
    time.sleep(COOLDOWN + 0.1)
    assert breakers.state("by-hand") == "open"
    with pytest.raises(breakers.BreakerOpen, match="stays open"):
        call()
    assert calls == []
    assert breakers.probe("by-hand") is True and breakers.state("by-hand") == "closed"
    call()
    assert calls == [1]
    breakers.open("by-hand", reason="again")
    breakers.close("by-hand", actor="staff:ops")
    call()
    assert calls == [1, 1]
    breakers.flush_journal()
    events = list(BreakerEvent.objects.filter(name="by-hand").order_by("at", "id").values_list("to_state", "actor"))
    assert events == [("open", "staff:ops"), ("closed", "system:probe"), ("open", "system"), ("closed", "staff:ops")]
    with pytest.raises(LookupError):
        breakers.probe("nothing-registered")


def _stream(key, tenant, receiver):
    response = client_for(key, tenant).post("/api/org/streams", {"name": "siem", "kind": "webhook",
                                                                 "url": receiver.url + "/in", "secret": "s3cret-token-123"},
                                            format="json")
    assert response.status_code == 201, response.content
    return AuditStream.dangerously_all_tenants.get(pk=response.json()["id"])


def test_a_failing_siem_opens_its_own_breaker_and_the_outbox_loses_nothing(make_tenant, receiver):
    tenant, key = make_tenant(plan="enterprise")
    other, other_key = make_tenant(plan="enterprise")
    stream = _stream(key, tenant, receiver)
    healthy = _stream(other_key, other, receiver)
    start = stream.cursor_seq
    for i in range(4):
        client_for(key, tenant).post("/api/org/keys", {"role": "viewer", "name": f"k{i}"}, format="json")
    receiver.fail_next = 1000
    for _ in range(3):
        assert streams.deliver(stream.pk)["error"] == "HTTP 503"
    assert breakers.state(f"siem:{stream.pk}") == "open"

    result = streams.deliver(stream.pk)
    assert result["sent"] == 0 and "circuit breaker is open" in result["error"] and result["retry_after"] > 0
    assert receiver.fail_next == 1000 - 3  # no request reached the receiver
    stream.refresh_from_db()
    assert (stream.state, stream.failures, stream.cursor_seq) == ("failing", 3, start)  # not a delivery attempt
    assert breakers.state(f"siem:{healthy.pk}") == "closed"  # one stream's breaker, not the fleet's

    assert breakers.probe(f"siem:{stream.pk}") is False  # the receiver still answers 503
    receiver.fail_next = 0
    assert breakers.probe(f"siem:{stream.pk}") is True and breakers.state(f"siem:{stream.pk}") == "closed"
    while streams.deliver(stream.pk)["more"]:
        pass
    sent = [e["id"] for e in receiver.events("webhook") if e["tenant_id"] == tenant.id]
    expected = [f"{tenant.id}-{s}" for s in AuditEvent.dangerously_all_tenants.filter(
        tenant_id=tenant.id, seq__gt=start).order_by("seq").values_list("seq", flat=True)]
    assert sent == expected and len(expected) >= 4  # every event, in order, once


def test_notion_answering_503_opens_its_breaker(db, settings, receiver):
    settings.NOTION_TOKEN, settings.NOTION_BILLING_DATABASE_ID = "secret_notion", "db-1"
    settings.NOTION_API_BASE = receiver.url
    from tenants import services

    services.tenant_create(name="N", slug=unique_slug("nb"), plan="core", actor="test")
    receiver.fail_next = 100
    for _ in range(3):
        with pytest.raises(notion.NotionError, match="503"):
            notion.push_summaries()
    with pytest.raises(notion.NotionError, match="Notion unavailable: notion is unavailable"):
        notion.push_summaries()
    assert receiver.fail_next == 97 and breakers.state("notion") == "open"


def test_an_unreachable_replica_opens_its_breaker_and_dr_coverage_says_so(db, settings):
    region = settings.LEVQOR_REGIONS["local"]
    settings.LEVQOR_REGIONS = {"local": dataclasses.replace(region, replica_url="postgres://postgres@127.0.0.1:1/x")}
    for _ in range(3):
        assert dr.check_region_health()["local"] == "ok"  # the primary's own check is not guarded
    assert breakers.state("replica:local") == "open"
    health = kpis.replica_health("local")
    assert not health.healthy and "circuit breaker is open" in health.detail
    assert breakers.probe("replica:local") is False

    db_settings = settings.DATABASES["default"]
    live = f"postgres://{db_settings['USER']}@{db_settings['HOST']}:{db_settings['PORT']}/{db_settings['NAME']}"
    settings.LEVQOR_REGIONS = {"local": dataclasses.replace(region, replica_url=live)}
    assert breakers.probe("replica:local") is True and breakers.state("replica:local") == "closed"
    assert "not a standby" in kpis.replica_health("local").detail  # answers now; still not a standby


def test_staff_admin_lists_breakers_and_closes_one(db):
    for name in ("stripe", "siem:41"):
        breakers.open(name, reason="test outage", actor="staff:ops")
    breakers.flush_journal()
    staff = get_user_model().objects.create_superuser("brk-staff", "s@levqor.test", "x-long-pass-1")
    browser = Client()
    browser.force_login(staff)
    page = browser.get("/admin/runtime/breaker/").content.decode()
    assert "siem:41" in page and "stripe" in page and "test outage" in page
    response = browser.post("/admin/runtime/breaker/", {
        "action": "close_breakers", "_selected_action": [Breaker.objects.get(name="stripe").pk]})
    assert response.status_code == 302
    assert breakers.state("stripe") == "closed" and breakers.state("siem:41") == "open"
    breakers.flush_journal()
    assert Breaker.objects.get(name="stripe").actor == f"staff:{staff.username}"
    assert browser.get("/admin/runtime/breakerevent/").status_code == 200
    assert browser.get("/admin/runtime/breaker/add/").status_code == 403


def test_with_redis_down_calls_go_through(db, settings):
    from levqor import redis as levqor_redis

    saved = settings.REDIS_URL
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    levqor_redis.client.cache_clear()
    try:
        with breakers.guard("stripe"):
            ran = True
        assert ran and breakers.state("stripe") == "closed"
    finally:
        settings.REDIS_URL = saved
        levqor_redis.client.cache_clear()
