"""Celery tasks of metrics, alerts, the weekly pulse and hibernation (beat entries in
levqor/settings.py). Imported by RuntimeConfig.ready(): Celery only discovers `tasks.py`."""
from __future__ import annotations

from celery import shared_task

from tenants.tasks_base import tenant_task


@shared_task(name="runtime.metrics_tasks.minutely")
def minutely() -> dict:
    """Write this worker's own figures (web processes flush theirs after requests), then
    raise error-rate alerts from what every process has written."""
    from runtime import alerting, metrics

    return {"rows": metrics.flush(), "error_rate_alerts": alerting.check_error_rates()}


@shared_task(name="runtime.metrics_tasks.rollup")
def rollup() -> dict:
    from runtime import metrics

    return metrics.rollup_minutes()


@shared_task(name="runtime.metrics_tasks.deliver_alert", bind=True, max_retries=None, acks_late=True)
def deliver_alert(self, alert_id: int) -> dict:
    """Send an alert to its channels; retry with backoff while one is still pending (each
    delivery row gives up by itself after runtime.alerting.MAX_ATTEMPTS)."""
    from runtime import alerting

    outcomes = alerting.deliver_all(alert_id)
    if "pending" in outcomes.values():
        raise self.retry(countdown=min(15 * 2 ** self.request.retries, 900))
    return outcomes


@shared_task(name="runtime.metrics_tasks.sweep_alerts")
def sweep_alerts() -> int:
    from runtime import alerting

    return alerting.sweep()


@shared_task(name="runtime.metrics_tasks.hibernate_idle")
def hibernate_idle() -> list[str]:
    from runtime import hibernation

    return hibernation.hibernate_idle()


@shared_task(name="runtime.metrics_tasks.weekly_pulse")
def weekly_pulse() -> dict:
    """Monday morning: last week's pulse to LEVQOR_PULSE_EMAILS."""
    from runtime import pulse

    report = pulse.build()
    return {"period_start": report["since"].isoformat(), "sent_to": pulse.send(report)}


@shared_task(name="runtime.metrics_tasks.detect_anomalies")
def detect_anomalies() -> dict:
    """Every minute: close the last whole minute, judge each tenant against its own
    baseline, open and resolve anomalies, then run auto-heal on the open ones."""
    from runtime import anomaly

    return anomaly.run()


@tenant_task(name="runtime.metrics_tasks.rerun_stuck_run")
def rerun_stuck_run(workflow_id: str, run_input: dict, stuck_run_id: str) -> str | None:
    """Run again, as a new run, the workflow of a run auto-heal failed as stuck."""
    from workflows import services
    from workflows.models import Workflow

    workflow = Workflow.objects.filter(pk=workflow_id).first()
    if workflow is None:  # deleted since
        return None
    run = services.workflow_run(workflow=workflow, actor=f"system:autoheal (rerun of {stuck_run_id})",
                                input=run_input)
    return str(run.id)
