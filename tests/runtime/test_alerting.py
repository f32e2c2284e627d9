"""Alerts: each new kind fires once when its condition holds and not otherwise; delivery to a
signed webhook and by email, once per channel, after commit, with retries."""
from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.utils import timezone

from compliance.alerts import alert_raise
from compliance.models import Alert
from levqor.celery import app as celery_app
from runtime import alerting, breakers, metrics
from runtime.metrics_tasks import deliver_alert
from runtime.models import AlertDelivery, MetricRollup
from tenants.models import TenantUser
from tests.compliance.receivers import Receiver

SECRET = "alert-signing-secret-123"


@pytest.fixture
def eager():
    """Celery runs tasks in-process (retries included), as a worker would."""
    previous = celery_app.conf.get("task_always_eager", False)
    celery_app.conf.update(task_always_eager=True)
    yield
    celery_app.conf.update(task_always_eager=previous)


@pytest.fixture
def receiver(settings):
    settings.LEVQOR_OUTBOUND_ALLOW_HOSTS = ["127.0.0.1"]
    r = Receiver()
    settings.LEVQOR_ALERT_WEBHOOK_URL = r.url + "/alerts"
    settings.LEVQOR_ALERT_WEBHOOK_SECRET = SECRET
    yield r
    r.close()


@pytest.fixture(autouse=True)
def _fresh_breakers():
    """Each test starts with the alert webhook's breaker closed and its count at zero."""
    breakers.forget()
    yield
    breakers.forget()


def _raise(django_capture_on_commit_callbacks, **fields):
    """Raise an alert in a transaction that commits (its delivery is queued on commit)."""
    fields = {"kind": "test.kind", "message": "something happened", **fields}
    with django_capture_on_commit_callbacks(execute=True):
        return alert_raise(**fields)


def _minutes(tenant_id, now, requests, errors, minutes=5):
    """`requests` and `errors` spread over the last `minutes` minutes."""
    start = now.replace(second=0, microsecond=0)
    for i in range(minutes):
        share, err = requests // minutes, errors // minutes
        MetricRollup.dangerously_all_tenants.create(
            tenant_id=tenant_id, seconds=60, start=start - timedelta(minutes=i), requests=share, errors=err,
            error_minutes=int(err > 0), latency_buckets=[share] + [0] * (metrics.BUCKETS - 1))


# --- metrics.error_rate ---------------------------------------------------------------------------


def test_error_rate_alert_fires_once_per_tenant_and_hour_only_over_threshold_and_minimum(make_tenant, settings):
    settings.LEVQOR_ALERT_ERROR_RATE = 0.05
    settings.LEVQOR_ALERT_ERROR_MIN_REQUESTS = 100
    failing, _ = make_tenant()
    healthy, _ = make_tenant()
    quiet, _ = make_tenant()
    now = timezone.now()
    _minutes(failing.id, now, requests=200, errors=20)  # 10 %
    _minutes(healthy.id, now, requests=200, errors=5)  # 2.5 %
    _minutes(quiet.id, now, requests=50, errors=50)  # 100 %, but under the minimum
    assert alerting.check_error_rates(now=now) == [failing.id]
    assert alerting.check_error_rates(now=now) == []  # same hour: not again
    alert = Alert.objects.get(kind="metrics.error_rate")
    assert alert.tenant_id == failing.id and alert.audience == "tenant"
    assert alert.metadata_json["errors"] == 20 and alert.metadata_json["requests"] == 200
    Alert.objects.filter(pk=alert.pk).update(resolved_at=now)
    assert alerting.check_error_rates(now=now) == []  # resolved within the hour: still once

    later = now + timedelta(hours=1)
    _minutes(failing.id, later, requests=200, errors=20)
    assert alerting.check_error_rates(now=later) == [failing.id]
    assert Alert.objects.filter(kind="metrics.error_rate", tenant_id=failing.id).count() == 2


def test_error_rate_exactly_at_the_threshold_does_not_fire(make_tenant, settings):
    settings.LEVQOR_ALERT_ERROR_RATE = 0.05
    settings.LEVQOR_ALERT_ERROR_MIN_REQUESTS = 100
    tenant, _ = make_tenant()
    now = timezone.now()
    _minutes(tenant.id, now, requests=200, errors=10)
    assert alerting.check_error_rates(now=now) == []


# --- provisioning.slow -----------------------------------------------------------------------------


def test_slow_provisioning_alerts_staff_once_and_fast_does_not(make_tenant, settings):
    fast, _ = make_tenant()
    assert not Alert.objects.filter(kind="provisioning.slow").exists()
    settings.LEVQOR_ALERT_PROVISION_SECONDS = 0.0  # every provisioning is now "slow"
    slow, _ = make_tenant()
    alert = Alert.objects.get(kind="provisioning.slow")
    assert alert.tenant_id == slow.id and alert.audience == "staff"
    assert alert.metadata_json["provision_ms"] == slow.provision_ms
    assert set(alert.metadata_json["steps_ms"]) >= {"tenant_row", "storage", "audit"}


def test_the_threshold_is_strictly_over_the_limit(make_tenant, settings):
    from tenants.provisioning import Provisioning, ProvisionRequest

    tenant, _ = make_tenant()
    settings.LEVQOR_ALERT_PROVISION_SECONDS = 120
    p = Provisioning(request=ProvisionRequest(name="x", slug=tenant.slug, plan="core", region="local"), tenant=tenant)
    for ms, fires in ((120_000, False), (120_001, True)):
        tenant.provision_ms = ms
        alerting._alert_if_slow(sender=Provisioning, provisioning=p)
        assert Alert.objects.filter(kind="provisioning.slow", tenant_id=tenant.id).exists() == fires


# --- delivery --------------------------------------------------------------------------------------


def test_webhook_is_signed_sent_after_commit_and_once(make_tenant, receiver, eager, django_capture_on_commit_callbacks):
    tenant, _ = make_tenant()
    alert = _raise(django_capture_on_commit_callbacks, kind="metrics.error_rate", tenant_id=tenant.id,
                   metadata={"rate": 0.1})
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    headers = {k.lower(): v for k, v in request["headers"].items()}
    expected = hmac.new(SECRET.encode(), headers["x-levqor-timestamp"].encode() + b"." + request["body"],
                        hashlib.sha256).hexdigest()
    assert headers["x-levqor-signature"] == f"sha256={expected}"
    assert headers["x-levqor-delivery"] == f"alert-{alert.pk}"
    body = json.loads(request["body"])
    assert (body["id"], body["kind"], body["tenant_slug"], body["metadata"]) == (
        f"alert-{alert.pk}", "metrics.error_rate", tenant.slug, {"rate": 0.1})

    # Retried tasks, the sweep and a second worker find it sent.
    deliver_alert.delay(alert.pk)
    alerting.sweep(now=timezone.now() + timedelta(minutes=5))
    assert alerting.deliver(alert.pk, AlertDelivery.Channel.WEBHOOK) == "sent"
    assert len(receiver.requests) == 1
    assert AlertDelivery.objects.get(alert=alert, channel="webhook").attempts == 1


def test_an_alert_raised_in_a_rolled_back_transaction_is_not_sent(db, receiver, eager, django_capture_on_commit_callbacks):
    from django.db import transaction

    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(RuntimeError), transaction.atomic():
            alert_raise(kind="test.kind", message="never happened")
            raise RuntimeError("rolled back")
    assert receiver.requests == [] and not AlertDelivery.objects.exists()


def test_a_failing_receiver_is_retried_until_it_takes_the_alert(db, receiver, eager, django_capture_on_commit_callbacks):
    receiver.fail_next = 2
    alert = _raise(django_capture_on_commit_callbacks, audience="staff")
    delivery = AlertDelivery.objects.get(alert=alert, channel="webhook")
    assert (delivery.status, delivery.attempts, len(receiver.requests)) == ("sent", 3, 1)


def test_delivery_gives_up_after_max_attempts(db, receiver, monkeypatch):
    monkeypatch.setattr(alerting, "MAX_ATTEMPTS", 2)
    receiver.fail_next = 5
    alert = alert_raise(kind="test.kind", message="x", audience="staff")
    assert alerting.deliver(alert.pk, "webhook") == "pending"
    assert alerting.deliver(alert.pk, "webhook") == "failed"
    assert alerting.deliver(alert.pk, "webhook") == "failed"  # no third try
    delivery = AlertDelivery.objects.get(alert=alert)
    assert delivery.attempts == 2 and delivery.last_error == "DeliveryFailed: HTTP 503"
    assert receiver.requests == []


def test_the_webhook_goes_through_the_ssrf_guard(db, settings):
    settings.LEVQOR_OUTBOUND_ALLOW_HOSTS = []
    settings.LEVQOR_ALERT_WEBHOOK_URL = "http://127.0.0.1:9/alerts"
    settings.LEVQOR_ALERT_WEBHOOK_SECRET = SECRET
    alert = alert_raise(kind="test.kind", message="x", audience="staff")
    assert alerting.deliver(alert.pk, "webhook") == "pending"
    assert AlertDelivery.objects.get(alert=alert).last_error.startswith("DestinationRefused")


def test_emails_go_to_staff_and_for_tenant_alerts_to_owners_and_admins(make_tenant, settings, eager,
                                                                       django_capture_on_commit_callbacks):
    settings.LEVQOR_ALERT_EMAILS = ["ops@levqor.test"]
    tenant, _ = make_tenant()
    for email, role in (("owner@t.test", "owner"), ("admin@t.test", "admin"), ("viewer@t.test", "viewer")):
        user = get_user_model().objects.create_user(username=email, email=email, password="a-long-pass-123")
        TenantUser(tenant=tenant, user=user, role=role).save(force_insert=True)
    mail.outbox.clear()
    _raise(django_capture_on_commit_callbacks, kind="metrics.error_rate", tenant_id=tenant.id, message="5xx spike",
           metadata={"rate": 0.5})
    assert sorted(tuple(m.to) for m in mail.outbox) == [("admin@t.test", "owner@t.test"), ("ops@levqor.test",)]
    staff_mail = next(m for m in mail.outbox if m.to == ["ops@levqor.test"])
    tenant_mail = next(m for m in mail.outbox if m.to != ["ops@levqor.test"])
    assert "5xx spike" in tenant_mail.body and '"rate"' not in tenant_mail.body  # details are for staff
    assert '"rate": 0.5' in staff_mail.body and tenant.name in staff_mail.subject

    mail.outbox.clear()
    _raise(django_capture_on_commit_callbacks, kind="security.cross_tenant_attempt", tenant_id=tenant.id,
           audience="staff", message="a key of another tenant")
    assert [m.to for m in mail.outbox] == [["ops@levqor.test"]]  # staff-audience: never to the tenant


def test_without_members_the_signup_admin_email_is_used(make_tenant):
    tenant, _ = make_tenant()
    assert alerting.tenant_recipients(tenant.id) == [tenant.admin_email]


def test_the_sweep_sends_what_the_broker_missed(db, receiver, eager):
    alert = alert_raise(kind="test.kind", message="raised while the broker was down", audience="staff")
    Alert.objects.filter(pk=alert.pk).update(created_at=timezone.now() - timedelta(minutes=10))
    assert alerting.sweep() == 1
    assert len(receiver.requests) == 1
    assert alerting.sweep() == 0


def test_a_failing_receiver_opens_the_breaker_deliveries_wait_and_a_healthy_probe_closes_it(db, receiver, settings):
    """The receiver answers 503: after LEVQOR_BREAKER_FAILURES failures the breaker opens and
    deliveries stop reaching it, without using up their attempts; once it is healthy its
    probe closes the breaker and the waiting alerts go out (the retry or the sweep)."""
    settings.LEVQOR_BREAKER_FAILURES, settings.LEVQOR_BREAKER_COOLDOWN_SECONDS = 3, 300
    receiver.fail_next = 3
    alerts = [alert_raise(kind="test.kind", message=f"alert {i}", audience="staff") for i in range(3)]
    assert [alerting.deliver(a.pk, "webhook") for a in alerts] == ["pending"] * 3
    assert breakers.state(alerting.WEBHOOK_BREAKER) == "open"

    receiver.fail_next = 5  # still down: while open, the receiver is not called at all
    for _ in range(3):
        assert alerting.deliver(alerts[0].pk, "webhook") == "pending"
    assert receiver.fail_next == 5 and receiver.requests == []
    first = AlertDelivery.objects.get(alert=alerts[0])
    assert first.attempts == 1 and first.status == "pending"  # waiting on the breaker is not an attempt
    assert first.last_error.startswith("BreakerOpen") and "circuit breaker is open" in first.last_error
    late = alert_raise(kind="test.kind", message="raised while open", audience="staff")
    Alert.objects.filter(pk__in=[a.pk for a in [*alerts, late]]).update(created_at=timezone.now() - timedelta(minutes=5))
    assert alerting.deliver(late.pk, "webhook") == "pending"
    assert AlertDelivery.objects.get(alert=late).attempts == 0

    receiver.fail_next = 0  # back: the probe (signed, marked as a probe, not an alert) closes it
    assert breakers.probe(alerting.WEBHOOK_BREAKER) is True
    assert breakers.state(alerting.WEBHOOK_BREAKER) == "closed"
    [probe] = receiver.requests
    headers = {k.lower(): v for k, v in probe["headers"].items()}
    assert headers["x-levqor-probe"] == "1" and json.loads(probe["body"]) == {"probe": True}
    expected = hmac.new(SECRET.encode(), headers["x-levqor-timestamp"].encode() + b"." + probe["body"],
                        hashlib.sha256).hexdigest()
    assert headers["x-levqor-signature"] == f"sha256={expected}"

    # Nothing was lost: the sweep queues every waiting alert, and each is sent once.
    celery_app.conf.update(task_always_eager=True)
    try:
        assert alerting.sweep() == 4
    finally:
        celery_app.conf.update(task_always_eager=False)
    sent = sorted(json.loads(r["body"])["id"] for r in receiver.requests[1:])
    assert sent == sorted(f"alert-{a.pk}" for a in [*alerts, late])
    assert set(AlertDelivery.objects.values_list("status", flat=True)) == {"sent"}


def test_a_probe_of_a_receiver_still_down_keeps_the_breaker_open(db, receiver, settings):
    settings.LEVQOR_BREAKER_FAILURES, settings.LEVQOR_BREAKER_COOLDOWN_SECONDS = 2, 300
    receiver.fail_next = 10
    alert = alert_raise(kind="test.kind", message="x", audience="staff")
    alerting.deliver(alert.pk, "webhook")
    alerting.deliver(alert.pk, "webhook")
    assert breakers.state(alerting.WEBHOOK_BREAKER) == "open"
    assert breakers.probe(alerting.WEBHOOK_BREAKER) is False
    assert breakers.state(alerting.WEBHOOK_BREAKER) == "open"
