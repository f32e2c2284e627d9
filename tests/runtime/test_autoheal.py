"""Auto-heal: an anomaly injected into one tenant runs its playbooks once (not again on the
next minute), each audited as runtime.autoheal; the others' tenants are left alone; a
playbook failing twice pages a person and stops; switched-off playbooks do not run."""
from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from compliance.models import Alert, AuditEvent
from levqor.celery import app as celery_app
from runtime import anomaly, autoheal, breakers, capacity
from runtime.models import Anomaly, AutohealRun, AutohealSwitch, MetricRollup
from tenants.context import tenant_context
from tenants.models import Tenant
from tests.runtime.test_anomaly import Traffic, _own_broker, _tick  # noqa: F401 - _own_broker: autouse


@pytest.fixture
def eager():
    """Celery runs tasks in-process, as a worker would."""
    previous = celery_app.conf.get("task_always_eager", False)
    celery_app.conf.update(task_always_eager=True)
    yield
    celery_app.conf.update(task_always_eager=previous)


@pytest.fixture
def two(make_tenant):
    sick, _ = make_tenant()
    well, _ = make_tenant()
    start = (timezone.now() - timedelta(hours=3)).replace(second=0, microsecond=0)
    traffic = Traffic([sick, well], start)
    return sick, well, traffic, traffic.history()


def _runs(tenant, playbook=None):
    runs = AutohealRun.dangerously_all_tenants.filter(tenant_id=tenant.id)
    return list(runs.filter(playbook=playbook) if playbook else runs)


def _autoheal_events(tenant):
    return list(AuditEvent.dangerously_all_tenants.filter(tenant_id=tenant.id, event="runtime.autoheal").order_by("id"))


def _queue_figures(tenant, minute, depth):
    """What the detector's sampler writes for a minute: the tenant's waiting tasks."""
    MetricRollup.dangerously_all_tenants.filter(tenant_id=tenant.id, seconds=60, start=minute).update(queue_depth=depth)


def _pile_up(traffic, tenant, first, minutes, depth=200):
    """Minutes of normal traffic with `depth` waiting tasks for `tenant`, each ticked."""
    outcomes = []
    for i in range(minutes):
        minute = first + timedelta(minutes=i)
        traffic.write(minute)
        _queue_figures(tenant, minute, depth)
        outcomes.append(_tick(minute))
    return outcomes


def _stuck_slots(tenant, n, *, minutes_ago=45):
    """Slot leases of tasks that started long ago on a worker that died."""
    from django.conf import settings

    from levqor.redis import client

    started = time.time() - minutes_ago * 60
    client().zadd(capacity.redis_key(tenant.id, "slots"), {f"dead-{i}": started + settings.LEVQOR_POOL_SLOT_SECONDS
                                                       for i in range(n)})
    client().set(capacity.redis_key(tenant.id, "pool"), n)  # the pool had grown to them


def test_held_tasks_behind_a_stuck_pool_page_up_and_the_pool_restart_runs_them_once(two, eager):
    """The pool (plan cap 2) is held by two dead workers' slots: new tasks pile up in the
    tenant's holding list; the detector sees the pile-up, auto-heal drops the stuck slots
    and the held tasks run. Once: the next minutes do not restart it again."""
    from workflows import services
    from workflows.models import WorkflowRun
    from workflows.tasks import run_workflow

    sick, well, traffic, onset = two
    assert capacity.limits_of(sick.id)["worker_pool_max"] == 2
    _stuck_slots(sick, 2)
    with tenant_context(sick):
        workflow = services.workflow_create(name="nightly", actor="test")
    for _ in range(30):
        run_workflow.delay_for(sick.id, str(workflow.id))  # at the cap: each goes to the holding list
    assert capacity.pool_status(sick.id)["held"] == 30
    with tenant_context(sick):
        assert WorkflowRun.objects.count() == 0

    found = None
    for i in range(4):
        minute = onset + timedelta(minutes=i)
        traffic.write(minute)
        outcome = _tick(minute)
        found = found or (outcome["opened"] and minute)
    record = Anomaly.dangerously_all_tenants.get(tenant_id=sick.id)
    assert (record.metric, record.observed) == ("queue_depth", 30)
    assert found - onset <= timedelta(minutes=anomaly.CONFIRM_MINUTES)

    [restart] = _runs(sick, "restart_worker_pool")
    assert restart.status == "ok" and restart.detail_json["stuck_slots_dropped"] == 2
    assert restart.detail_json["tasks_released"] >= 1
    assert capacity.pool_status(sick.id)["held"] == 0
    with tenant_context(sick):
        assert WorkflowRun.objects.filter(status="succeeded").count() == 30  # they ran
    [event] = _autoheal_events(sick)
    assert event.actor == "system:autoheal"
    assert event.metadata_json["playbook"] == "restart_worker_pool"
    assert event.metadata_json["anomaly_id"] == record.pk
    # The other playbooks of a pile-up found nothing to do, and said why.
    assert {r.playbook: r.status for r in _runs(sick)} == {
        "wake_hibernated": "skipped", "restart_worker_pool": "ok", "requeue_stuck_runs": "skipped"}
    assert not _runs(well) and not Anomaly.dangerously_all_tenants.filter(tenant_id=well.id).exists()


def test_stuck_runs_are_failed_and_run_again_once(two, eager, django_capture_on_commit_callbacks):
    from workflows import services
    from workflows.models import WorkflowRun

    sick, well, traffic, onset = two
    with tenant_context(sick):
        workflow = services.workflow_create(name="sync", actor="test")
        stuck = [WorkflowRun.objects.create(workflow=workflow, status="running", input={"n": i}) for i in range(3)]
        fresh = WorkflowRun.objects.create(workflow=workflow, status="running")
        # Started an hour before the (simulated) minutes the detector closes below.
        WorkflowRun.objects.filter(pk__in=[r.pk for r in stuck]).update(created_at=onset - timedelta(hours=1))
    with django_capture_on_commit_callbacks(execute=True):  # the reruns are queued on commit
        _pile_up(traffic, sick, onset, 3)
        _pile_up(traffic, sick, onset + timedelta(minutes=3), 2)  # later minutes: nothing more

    [requeue] = _runs(sick, "requeue_stuck_runs")
    assert requeue.status == "ok" and sorted(requeue.detail_json["runs"]) == sorted(str(r.pk) for r in stuck)
    with tenant_context(sick):
        for run in stuck:
            run.refresh_from_db()
            assert run.status == "failed" and "auto-heal" in run.result["error"]
        assert WorkflowRun.objects.get(pk=fresh.pk).status == "running"  # not stuck: untouched
        reruns = WorkflowRun.objects.filter(triggered_by__startswith="system:autoheal (rerun of ")
        assert sorted(r.input["n"] for r in reruns) == [0, 1, 2]
        assert all(r.status == "succeeded" for r in reruns)
    assert [e.metadata_json["playbook"] for e in _autoheal_events(sick)] == ["requeue_stuck_runs"]


def test_a_failing_siem_gets_its_breaker_opened_once_and_closed_when_its_probe_succeeds(two, settings):
    from compliance import streams
    from tests.compliance.receivers import Receiver

    sick, well, traffic, onset = two
    settings.LEVQOR_OUTBOUND_ALLOW_HOSTS = ["127.0.0.1"]
    receiver = Receiver()
    receiver.fail_next = 10_000  # the tenant's SIEM answers 503
    name = None
    try:
        stream = streams.stream_create(tenant_id=sick.id, name="splunk", kind="webhook", url=receiver.url + "/hec",
                                       secret="siem-secret-123", actor="test")
        name = f"siem:{stream.pk}"
        traffic.error_rate[sick.id] = 0.3
        for i in range(5):
            minute = onset + timedelta(minutes=i)
            traffic.write(minute)
            _tick(minute)
        assert Anomaly.dangerously_all_tenants.get(tenant_id=sick.id).metric == "error_rate"
        [opened] = _runs(sick, "open_breakers")
        assert opened.status == "ok" and opened.detail_json["opened"] == [name]
        assert breakers.state(name) == "open"

        receiver.fail_next = 0  # the SIEM is back: the next run's probe closes the breaker
        _tick(onset + timedelta(minutes=5))
        assert breakers.state(name) == "closed"
        assert len(_runs(sick, "open_breakers")) == 1
        assert [e.metadata_json.get("action") for e in _autoheal_events(sick)] == ["opened_breakers", "closed_breaker"]
        assert not _runs(well) and not _autoheal_events(well)  # the well tenant is left alone
    finally:
        receiver.close()
        if name:
            breakers.forget(name)


def test_a_failing_alert_webhook_is_a_downstream_whose_breaker_auto_heal_opens_and_closes(two, settings):
    from runtime.alerting import WEBHOOK_BREAKER
    from tests.compliance.receivers import Receiver

    sick, well, traffic, onset = two
    settings.LEVQOR_OUTBOUND_ALLOW_HOSTS = ["127.0.0.1"]
    receiver = Receiver()
    receiver.fail_next = 10_000  # the staff alert receiver answers 503
    settings.LEVQOR_ALERT_WEBHOOK_URL = receiver.url + "/alerts"
    settings.LEVQOR_ALERT_WEBHOOK_SECRET = "alert-signing-secret-123"
    try:
        traffic.error_rate[sick.id] = 0.3
        for i in range(5):
            minute = onset + timedelta(minutes=i)
            traffic.write(minute)
            _tick(minute)
        [opened] = _runs(sick, "open_breakers")
        assert opened.status == "ok" and opened.detail_json["opened"] == [WEBHOOK_BREAKER]
        assert breakers.state(WEBHOOK_BREAKER) == "open"

        receiver.fail_next = 0
        _tick(onset + timedelta(minutes=5))
        assert breakers.state(WEBHOOK_BREAKER) == "closed"
        assert any(r["headers"].get("X-Levqor-Probe") == "1" for r in receiver.requests)  # the probe reached it
        assert not _runs(well)
    finally:
        receiver.close()
        breakers.forget(WEBHOOK_BREAKER)


def test_a_hibernated_tenant_with_an_anomaly_is_woken_once(two):
    sick, well, traffic, onset = two
    Tenant.objects.filter(pk=sick.pk).update(hibernated_at=timezone.now() - timedelta(days=1))
    _pile_up(traffic, sick, onset, 4)
    assert Tenant.objects.get(pk=sick.pk).hibernated_at is None
    assert [(r.playbook, r.status) for r in _runs(sick, "wake_hibernated")] == [("wake_hibernated", "ok")]
    assert _autoheal_events(sick)[0].metadata_json["action"] == "woke"


def test_a_playbook_failing_twice_pages_a_person_and_stops(two, settings):
    """Redis is unreachable, so restarting the pool fails: tried again once, then escalated."""
    from levqor import redis as levqor_redis

    sick, well, traffic, onset = two
    _pile_up(traffic, sick, onset, 2)
    record = Anomaly.dangerously_all_tenants.get(tenant_id=sick.id)
    AutohealRun.dangerously_all_tenants.filter(tenant_id=sick.id).delete()  # the restart found nothing: again

    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    levqor_redis.client.cache_clear()
    try:
        for i in range(3):
            autoheal.run(now=timezone.now() + timedelta(minutes=i))
    finally:
        levqor_redis.client.cache_clear()
    attempts = [(r.attempt, r.status) for r in sorted(_runs(sick, "restart_worker_pool"), key=lambda r: r.attempt)]
    assert attempts == [(1, "failed"), (2, "escalated")]  # and no third attempt
    page = Alert.objects.get(kind="autoheal.escalated", tenant_id=sick.id)
    assert page.severity == "page" and page.audience == "staff"
    assert page.metadata_json == {**page.metadata_json, "playbook": "restart_worker_pool", "anomaly_id": record.pk}
    assert "ConnectionError" in page.message and "failed twice" in page.message


@pytest.mark.parametrize("how", ["fleet_switch", "tenant_switch_all", "settings", "fleet_switch_all",
                                 "settings_all_off"])
def test_switched_off_playbooks_do_not_run(two, settings, how):
    sick, well, traffic, onset = two
    Tenant.objects.filter(pk=sick.pk).update(hibernated_at=timezone.now() - timedelta(days=1))
    if how == "fleet_switch":
        autoheal.switch(playbook="wake_hibernated", enabled=False, actor="staff:ops")
    elif how == "tenant_switch_all":
        autoheal.switch(playbook="*", enabled=False, tenant_id=sick.id, actor="staff:ops")
    elif how == "fleet_switch_all":
        autoheal.switch(playbook="*", enabled=False, actor="staff:ops")
    elif how == "settings_all_off":
        settings.LEVQOR_AUTOHEAL_ENABLED = False
    else:
        settings.LEVQOR_AUTOHEAL_DISABLED = ["wake_hibernated"]
    _pile_up(traffic, sick, onset, 3)
    assert Anomaly.dangerously_all_tenants.filter(tenant_id=sick.id, resolved_at__isnull=True).exists()
    assert not _runs(sick, "wake_hibernated") and Tenant.objects.get(pk=sick.pk).hibernated_at is not None
    if how in ("tenant_switch_all", "fleet_switch_all", "settings_all_off"):
        assert not _runs(sick) and not _autoheal_events(sick)  # no playbook at all, and no record
    # Switched on again while the anomaly is open: it runs at the next minute.
    AutohealSwitch.objects.all().delete()
    settings.LEVQOR_AUTOHEAL_DISABLED = []
    settings.LEVQOR_AUTOHEAL_ENABLED = True
    _pile_up(traffic, sick, onset + timedelta(minutes=3), 1)
    assert [r.status for r in _runs(sick, "wake_hibernated")] == ["ok"]


def test_a_tenant_switch_cannot_turn_on_what_the_fleet_turned_off(two):
    sick, _, _, _ = two
    autoheal.switch(playbook="open_breakers", enabled=False, actor="staff:ops")
    autoheal.switch(playbook="open_breakers", enabled=True, tenant_id=sick.id, actor="staff:ops")
    assert not autoheal.enabled(sick.id, "open_breakers") and autoheal.enabled(sick.id, "wake_hibernated")


def test_unknown_playbook_switch_is_refused(db):
    from levqor.errors import APIError

    with pytest.raises(APIError) as info:
        autoheal.switch(playbook="reboot_everything", enabled=False, actor="staff:ops")
    assert info.value.code == "invalid_input" and "wake_hibernated" in info.value.details["allowed"]
    assert not AutohealSwitch.objects.exists()


def test_staff_admin_shows_anomalies_and_edits_switches(two):
    sick, _, traffic, onset = two
    _pile_up(traffic, sick, onset, 3)
    record = Anomaly.dangerously_all_tenants.get(tenant_id=sick.id)
    staff = get_user_model().objects.create_superuser("heal-staff", "h@levqor.test", "x-long-pass-1")
    browser = Client()
    browser.force_login(staff)
    page = browser.get("/admin/runtime/anomaly/").content.decode()
    assert record.explanation in page
    detail = browser.get(f"/admin/runtime/anomaly/{record.pk}/change/").content.decode()
    assert "wake_hibernated" in detail and "skipped" in detail
    response = browser.post("/admin/runtime/autohealswitch/add/", {
        "tenant_id": sick.id, "playbook": "requeue_stuck_runs", "enabled": "", "reason": "investigating"})
    assert response.status_code == 302, response.content.decode()[:2000]
    switch = AutohealSwitch.objects.get()
    assert (switch.tenant_id, switch.playbook, switch.enabled, switch.changed_by) == (
        sick.id, "requeue_stuck_runs", False, "staff:heal-staff")
    assert not autoheal.enabled(sick.id, "requeue_stuck_runs")
    assert "tenant " + str(sick.id) in browser.get("/admin/runtime/autohealswitch/").content.decode()
