"""The weekly pulse: figures of a known week, the HTML report, and the email to staff."""
from __future__ import annotations

import math
from datetime import timedelta

import pytest
from django.core import mail
from django.core.management import CommandError, call_command
from django.utils import timezone

from compliance.alerts import alert_raise
from runtime import metrics, pulse
from runtime.models import Backup, MetricRollup
from tenants.models import Tenant
from tests.conftest import client_for


def _rollup(tenant_id, start, requests, errors, bucket, seconds=60):
    buckets = [0] * metrics.BUCKETS
    buckets[bucket] = requests
    MetricRollup.dangerously_all_tenants.create(tenant_id=tenant_id, seconds=seconds, start=start, requests=requests,
                                                api_calls=requests - 1, errors=errors, error_minutes=int(errors > 0),
                                                latency_buckets=buckets, latency_max_ms=metrics.BOUNDS_MS[bucket])


@pytest.fixture
def week(make_tenant, monkeypatch):
    """Two tenants with known traffic in the week ending tomorrow 00:00 UTC, and runs for A."""
    monkeypatch.setattr(metrics.recorder, "next_flush_at", math.inf)  # the requests below are not that traffic
    busy, key = make_tenant(slug="busy-org")
    calm, _ = make_tenant(plan="pro", slug="calm-org")
    week_end = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    _rollup(busy.id, week_end - timedelta(days=3), 900, 9, 6, seconds=3600)  # an hourly row: 20 ms
    _rollup(busy.id, week_end - timedelta(hours=2), 100, 1, 10)  # a minute row: 130 ms
    _rollup(calm.id, week_end - timedelta(days=2), 10, 0, 2)
    _rollup(calm.id, week_end - timedelta(days=9), 5000, 5000, 2)  # the week before: not counted
    client = client_for(key, busy)
    workflow = client.post("/api/workflows", {"name": "nightly"}, format="json").json()["id"]
    for _ in range(3):
        client.post(f"/api/workflows/{workflow}/run", {}, format="json")
    alert_raise(kind="metrics.error_rate", tenant_id=busy.id, message="spike")
    metrics.recorder.drain()
    return week_end, busy, calm


def test_the_report_has_each_tenants_week_and_the_fleet(week):
    week_end, busy, calm = week
    report = pulse.build(week_end)
    assert (report["since"], report["until"]) == (week_end - timedelta(days=7), week_end)
    rows = {row["tenant"].slug: row for row in report["tenants"]}
    assert [row["tenant"].slug for row in report["tenants"]] == ["busy-org", "calm-org"]  # busiest first
    assert (rows["busy-org"]["requests"], rows["busy-org"]["errors"], rows["busy-org"]["api_calls"]) == (1000, 10, 998)
    assert rows["busy-org"]["error_rate"] == 0.01 and rows["busy-org"]["p95_ms"] == 130
    assert rows["busy-org"]["jobs"] == {"succeeded": 3, "failed": 0, "success_rate": 1.0}
    assert (rows["calm-org"]["requests"], rows["calm-org"]["errors"]) == (10, 0)
    assert rows["calm-org"]["jobs"]["succeeded"] == 0
    assert (report["fleet"]["requests"], report["fleet"]["errors"]) == (1010, 10)
    assert report["new_tenants"] == 2 and report["alerts"] == [("metrics.error_rate", 1)]
    assert dict(report["status_counts"]) == {"active": 2}


def test_the_report_has_provisioning_dr_coverage_restores_and_uptime(week):
    """Busy existed all week with 2 minutes with a 5xx, provisioned in 1 s; calm in 3 s, no
    errors. Busy has a fresh backup restored twice this week (one verified); calm none."""
    week_end, busy, calm = week
    Tenant.objects.filter(pk=busy.pk).update(created_at=week_end - timedelta(days=7), provision_ms=1000)
    Tenant.objects.filter(pk=calm.pk).update(provision_ms=3000)
    at = (timezone.now() - timedelta(hours=1)).isoformat()
    Backup.dangerously_all_tenants.create(
        tenant_id=busy.id, region=busy.region, isolation=busy.isolation, status="ok",
        manifest_json={"tables": [], "restore": {"at": at, "verified": False},  # the last report, and every attempt
                       "restores": [{"at": at, "verified": True}, {"at": at, "verified": False}]})
    report = pulse.build(week_end)
    assert (report["provision_p50_ms"], report["provision_p95_ms"]) == (1000, 3000)
    assert report["dr"] == {"tenants": 2, "backed_up": 1, "covered": 1, "share": 0.5}
    assert (report["restores"], report["restore_success"]) == (2, 0.5)
    rows = {row["tenant"].slug: row for row in report["tenants"]}
    assert rows["busy-org"]["uptime"] == round(1 - 2 / (7 * 24 * 60), 5) and rows["calm-org"]["uptime"] == 1.0

    _, text, html = pulse.render(report)
    assert "DR coverage 50.0 % (1 of 2), restores verified 50.0 % of 2" in text
    assert "time to provision p50 1000 ms, p95 3000 ms" in text
    assert "DR coverage" in html and "1000 / 3000 ms" in html


def test_the_html_report_renders_and_is_emailed_to_staff(week, settings):
    settings.LEVQOR_PULSE_EMAILS = ["staff@levqor.test"]
    week_end, _, _ = week
    report = pulse.build(week_end)
    subject, text, html = pulse.render(report)
    assert subject.startswith("Levqor weekly pulse: ")
    assert "busy-org" in html and "1000" in html and "0.99 %" in html and "metrics.error_rate 1" in html  # 10 of 1010
    assert "busy-org (core): 1000 / 10 / 130.0 / 998 / 3+0" in text
    mail.outbox.clear()
    assert pulse.send(report) == ["staff@levqor.test"]
    message = mail.outbox[0]
    assert message.to == ["staff@levqor.test"] and message.subject == subject
    assert message.alternatives[0][1] == "text/html" and "calm-org" in message.alternatives[0][0]


def test_the_command_prints_and_sends(week, settings, capsys):
    settings.LEVQOR_PULSE_EMAILS = []
    week_end, _, _ = week
    day = (week_end).date().isoformat()
    mail.outbox.clear()
    call_command("weekly_pulse", "--week-ending", day)
    assert "busy-org" in capsys.readouterr().out and mail.outbox == []
    with pytest.raises(CommandError, match="no recipients"):
        call_command("weekly_pulse", "--send", "--week-ending", day)
    call_command("weekly_pulse", "--send", "--to", "ops@levqor.test", "--week-ending", day, "--html")
    assert "<table id=\"tenants\"" in capsys.readouterr().out
    assert [m.to for m in mail.outbox] == [["ops@levqor.test"]]
    with pytest.raises(CommandError, match="YYYY-MM-DD"):
        call_command("weekly_pulse", "--week-ending", "last monday")


def test_the_beat_task_sends_last_weeks_pulse(db, settings):
    from runtime.metrics_tasks import weekly_pulse

    settings.LEVQOR_PULSE_EMAILS = ["staff@levqor.test"]
    mail.outbox.clear()
    result = weekly_pulse.apply().get()
    assert result["sent_to"] == ["staff@levqor.test"] and len(mail.outbox) == 1
