"""Per-tenant anomaly detection: synthetic traffic with one anomaly injected into one tenant
while the others stay normal. The anomaly is found for that tenant only, within the stated
delay (CONFIRM_MINUTES + 1 minutes after its first minute, plus the grace), once (one
record, one alert), explained in plain language, shown in the portal, and resolved when
the figures come back; a weekly pattern seen in earlier weeks is not an anomaly."""
from __future__ import annotations

import base64
import json
import random
from datetime import timedelta

import pytest
from django.utils import timezone

from compliance.models import Alert
from runtime import anomaly, autoheal, metrics
from runtime.models import Anomaly, AutohealRun, MetricRollup
from tenants.models import Tenant
from tests.conftest import client_for

DETECTION_DELAY = timedelta(minutes=anomaly.CONFIRM_MINUTES + 1, seconds=anomaly.GRACE_SECONDS)
QUEUE = "anomaly-test"


def _buckets(requests: int, ms: float) -> list[int]:
    buckets = [0] * metrics.BUCKETS
    buckets[metrics.bucket_of(ms)] = requests
    return buckets


def _minute(tenant_id, start, *, requests=200, errors=1, ms=40.0, seconds=60):
    """One minute (or hour) of a tenant's traffic as the metrics flush writes it."""
    MetricRollup.dangerously_all_tenants.update_or_create(
        tenant_id=tenant_id, seconds=seconds, start=start,
        defaults=dict(requests=requests, api_calls=requests, errors=errors, error_minutes=int(errors > 0),
                      latency_buckets=_buckets(requests, ms), latency_sum_ms=ms * requests, latency_max_ms=ms))


class Traffic:
    """Normal, noisy traffic for some tenants, minute by minute, with injections."""

    def __init__(self, tenants, start):
        self.tenants, self.start = tenants, start
        self.rng = random.Random(42)
        self.latency = {t.id: 40.0 for t in tenants}
        self.error_rate = {t.id: 0.005 for t in tenants}

    def write(self, minute):
        for t in self.tenants:
            requests = self.rng.randint(180, 220)
            errors = sum(self.rng.random() < self.error_rate[t.id] for _ in range(requests))
            ms = self.latency[t.id] * self.rng.choice((0.8, 1.0, 1.0, 1.2))
            _minute(t.id, minute, requests=requests, errors=errors, ms=ms)

    def history(self, minutes=70):
        for i in range(minutes):
            self.write(self.start + timedelta(minutes=i))
        return self.start + timedelta(minutes=minutes)


def _tick(minute, **kwargs):
    """The detector's run right after `minute` closed (its beat is every minute)."""
    return anomaly.run(now=minute + timedelta(minutes=1, seconds=anomaly.GRACE_SECONDS + 5), **kwargs)


def _run_until_found(traffic, first, *, minutes=10, before_each=None):
    """Write a minute, run the detector; returns the tick time of the first detection (or None)."""
    found = None
    for i in range(minutes):
        minute = first + timedelta(minutes=i)
        if before_each:
            before_each(i, minute)
        traffic.write(minute)
        outcome = _tick(minute)
        if outcome.get("opened") and found is None:
            found = minute + timedelta(minutes=1, seconds=anomaly.GRACE_SECONDS + 5)
    return found


@pytest.fixture(autouse=True)
def _own_broker(settings):
    """Queue depths are read from this test session's Redis, not a shared broker."""
    settings.CELERY_BROKER_URL = settings.REDIS_URL
    settings.LEVQOR_METRICS_QUEUES = [QUEUE]


@pytest.fixture
def fleet(make_tenant):
    tenants = [make_tenant()[0] for _ in range(3)]
    start = (timezone.now() - timedelta(hours=3)).replace(second=0, microsecond=0)
    return tenants, Traffic(tenants, start)


def _only(tenant, metric):
    rows = list(Anomaly.dangerously_all_tenants.filter(tenant_id__in=[tenant.id]))
    assert [(r.metric, r.direction) for r in rows] == [(metric, "high")], rows
    return rows[0]


def _fleet_anomalies(tenants):
    return Anomaly.dangerously_all_tenants.filter(tenant_id__in=[t.id for t in tenants])


def test_latency_step_in_one_tenant_is_found_for_it_only_within_the_delay_once(fleet):
    (sick, well, other), traffic = fleet
    onset = traffic.history()
    assert _run_until_found(traffic, traffic.start + timedelta(minutes=60), minutes=10) is None  # normal: nothing

    traffic.latency[sick.id] = 840.0
    found = _run_until_found(traffic, onset + timedelta(minutes=10), minutes=8)
    first_bad = onset + timedelta(minutes=10)
    assert found is not None and found - first_bad <= DETECTION_DELAY
    record = _only(sick, "p95_ms")
    assert _fleet_anomalies([well, other]).count() == 0
    assert record.started_at == first_bad and record.resolved_at is None
    # Auto-heal ran the p95 playbooks once for the sick tenant's episode (the later ticks
    # of the same episode add none), and nothing for the others.
    runs = AutohealRun.dangerously_all_tenants.filter(tenant_id__in=[sick.id, well.id, other.id])
    assert sorted((r.tenant_id, r.anomaly_id, r.playbook) for r in runs) == sorted(
        (sick.id, record.pk, name) for name in autoheal.PLAYBOOKS_BY_METRIC["p95_ms"])
    assert record.observed >= 600 and record.expected_low < 40 < record.expected_high < 200
    assert record.baseline == "recent"
    assert record.explanation.startswith(f"p95 latency {record.observed:.0f} ms, usually ")
    assert record.explanation.endswith("ms over the last hour")

    alerts = Alert.objects.filter(kind="metrics.anomaly", tenant_id=sick.id)
    assert alerts.count() == 1  # the next ticks of the same episode raise nothing more
    alert = alerts.get()
    assert alert.metadata_json["anomaly_id"] == record.pk and alert.audience == "tenant" and alert.resolved_at is None

    # Back to normal: resolved after RESOLVE_MINUTES good minutes, with its alert.
    traffic.latency[sick.id] = 40.0
    _run_until_found(traffic, onset + timedelta(minutes=18), minutes=anomaly.RESOLVE_MINUTES + 1)
    record.refresh_from_db()
    assert record.resolved_at is not None and Alert.objects.get(pk=alert.pk).resolved_at is not None


def test_error_burst_in_one_tenant_is_found_for_it_only(fleet):
    (well, sick, other), traffic = fleet
    onset = traffic.history()
    traffic.error_rate[sick.id] = 0.3
    found = _run_until_found(traffic, onset, minutes=6)
    assert found is not None and found - onset <= DETECTION_DELAY
    record = _only(sick, "error_rate")
    assert _fleet_anomalies([well, other]).count() == 0
    assert record.observed > 0.2 and record.expected_high < 0.1
    assert record.explanation.startswith("server error rate ") and "usually 0.0–" in record.explanation


def test_queue_pile_up_in_one_tenant_is_found_from_the_broker_for_it_only(fleet, settings):
    """Tasks carrying the tenant pile up in a real Redis broker list; the detector samples it."""
    from levqor.redis import client as redis_client

    (other, well, sick), traffic = fleet
    onset = traffic.history()

    def pile_up(i, minute):
        body = base64.b64encode(json.dumps([[], {"tenant_id": sick.id}, {}]).encode()).decode()
        message = json.dumps({"body": body, "properties": {"body_encoding": "base64"}})
        redis_client().rpush(QUEUE, *[message] * 40)  # 40 more waiting tasks each minute

    try:
        found = _run_until_found(traffic, onset, minutes=6, before_each=pile_up)
    finally:
        redis_client().delete(QUEUE)
    assert found is not None and found - onset <= DETECTION_DELAY
    record = _only(sick, "queue_depth")
    assert _fleet_anomalies([well, other]).count() == 0
    assert record.observed >= 40 and record.expected_high <= 16
    assert record.explanation.startswith("queued tasks ")
    sampled = MetricRollup.dangerously_all_tenants.filter(tenant_id=sick.id, start=onset).get()
    assert sampled.queue_depth == 40


def test_low_traffic_minutes_give_no_verdict(make_tenant):
    """Under the volume minimums a rate or a percentile means nothing: no anomaly."""
    tenant, _ = make_tenant()
    start = (timezone.now() - timedelta(hours=3)).replace(second=0, microsecond=0)
    for i in range(75):
        # 5 requests a minute; from minute 70 all of them fail and are slow.
        bad = i >= 70
        _minute(tenant.id, start + timedelta(minutes=i), requests=5, errors=5 if bad else 0, ms=900 if bad else 40)
    for i in range(70, 75):
        _tick(start + timedelta(minutes=i))
    assert not Anomaly.dangerously_all_tenants.filter(tenant_id=tenant.id).exists()


def _seasonal_history(tenant, now, *, weeks, spike_hour):
    """`weeks` weeks of hourly rows: 100 requests a minute, x10 in `spike_hour` every day."""
    for week in range(1, weeks + 1):
        for back in range(0, 4):
            hour = (now - timedelta(weeks=week, hours=back)).replace(minute=0, second=0, microsecond=0)
            per_minute = 1000 if hour.hour == spike_hour else 100
            _minute(tenant.id, hour, requests=per_minute * 60, errors=0, ms=40, seconds=3600)


def test_a_spike_seen_at_this_hour_in_earlier_weeks_is_expected_but_new_for_a_tenant_without_history(make_tenant):
    old, _ = make_tenant()
    new, _ = make_tenant()
    spike = (timezone.now() - timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    Tenant.objects.filter(pk=old.pk).update(created_at=spike - timedelta(weeks=5))
    _seasonal_history(old, spike, weeks=3, spike_hour=spike.hour)
    for tenant in (old, new):
        for i in range(-70, 6):
            calls = 1000 if i >= 0 else 100  # the spike starts on the hour
            _minute(tenant.id, spike + timedelta(minutes=i), requests=calls, errors=0, ms=40)
    for i in range(0, 6):
        _tick(spike + timedelta(minutes=i))
    assert not Anomaly.dangerously_all_tenants.filter(tenant_id=old.id).exists()
    record = Anomaly.dangerously_all_tenants.get(tenant_id=new.id)
    assert (record.metric, record.direction, record.baseline) == ("api_calls", "high", "recent")

    # And for the tenant with history, an outage at that hour is an anomaly, explained by the hour.
    for i in range(6, 10):  # no traffic at all: no rollup rows
        _tick(spike + timedelta(minutes=i))
    drop = Anomaly.dangerously_all_tenants.get(tenant_id=old.id)
    assert (drop.metric, drop.direction, drop.baseline, drop.observed) == ("api_calls", "low", "seasonal", 0)
    weekday = anomaly.WEEKDAYS[spike.weekday()]
    assert drop.explanation.startswith("API calls per minute 0, usually ")
    assert drop.explanation.endswith(f"at {weekday} {spike:%H}:00 UTC")
    assert drop.expected_low > 50


def test_anomalies_show_in_the_portal_metrics_page(fleet):
    (sick, well, _), traffic = fleet
    onset = traffic.history()
    traffic.latency[sick.id] = 840.0
    _run_until_found(traffic, onset, minutes=4)
    record = _only(sick, "p95_ms")
    page = _portal(sick)
    assert "Anomalies" in page and record.explanation in page
    assert record.explanation not in _portal(well)


def _portal(tenant):
    from django.contrib.auth import get_user_model
    from django.test import Client

    from tenants.models import TenantUser

    user = get_user_model().objects.create_user(username=f"u-{tenant.slug}", email=f"u@{tenant.slug}.test",
                                                password="pw-123456789")
    TenantUser.dangerously_all_tenants.create(tenant=tenant, user=user, role="viewer")
    client = Client()
    client.force_login(user)
    response = client.get("/org/metrics")
    assert response.status_code == 200, response.content[:500]
    return response.content.decode()


def test_finished_jobs_reach_the_rollups_and_hours_keep_jobs_and_the_queue_peak(make_tenant):
    tenant, key = make_tenant()
    metrics.recorder.drain()
    client = client_for(key, tenant)
    workflow = client.post("/api/workflows", {"name": "w"}, format="json").json()["id"]
    for _ in range(2):
        assert client.post(f"/api/workflows/{workflow}/run", {}, format="json").status_code == 201
    metrics.flush()
    rows = MetricRollup.dangerously_all_tenants.filter(tenant_id=tenant.id, seconds=60)
    assert sum(r.jobs_succeeded for r in rows) == 2 and sum(r.jobs_failed for r in rows) == 0

    old = (timezone.now() - timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    for i, (depth, ok, failed) in enumerate([(5, 1, 0), (30, 2, 1), (0, 0, 0)]):
        MetricRollup.dangerously_all_tenants.create(
            tenant_id=tenant.id, seconds=60, start=old + timedelta(minutes=i), requests=10, latency_buckets=_buckets(10, 5),
            jobs_succeeded=ok, jobs_failed=failed, queue_depth=depth)
    metrics.rollup_minutes()
    hour = MetricRollup.dangerously_all_tenants.get(tenant_id=tenant.id, seconds=3600, start=old)
    assert (hour.requests, hour.jobs_succeeded, hour.jobs_failed, hour.queue_depth) == (30, 3, 1, 30)
