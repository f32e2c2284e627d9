"""Alerts out of the building, and the alerts only the runtime can see.

Delivery. Every stored alert (compliance.alerts.alert_raise) is handed, once its
transaction commits, to the Celery task `deliver_alert`, which sends it to each channel
that applies:

- webhook: LEVQOR_ALERT_WEBHOOK_URL (with LEVQOR_ALERT_WEBHOOK_SECRET), every alert, JSON
  signed like the SIEM webhooks: `X-Levqor-Signature: sha256=<HMAC of "<timestamp>.<body>">`
  with `X-Levqor-Timestamp`; `X-Levqor-Delivery` is a stable id, so a receiver can drop a
  repeat sent after a timeout it had in fact accepted. Through the SSRF guard and the
  `webhook:alerts` circuit breaker (runtime/breakers.py): a non-2xx answer or no answer
  counts as a failure; while the breaker is open nothing is sent and the delivery stays
  `pending` without using up an attempt, so the task's retries and the sweep send it once
  the breaker closes (its probe, runtime/breaker_probes.py, or auto-heal's open_breakers);
- staff email: LEVQOR_ALERT_EMAILS, every alert;
- tenant email: tenant-audience alerts, to the tenant's owners and admins (or, before any
  member signed in, the signup's admin email).

Each (alert, channel) is an AlertDelivery row, locked while sending and marked `sent` after,
so a retry, the sweep or a second worker never sends it twice. Failures retry with backoff
and give up after MAX_ATTEMPTS (`failed`). `sweep()` sends what is still pending (the broker
was down when the alert was raised, or a retry was lost).

Raising. Kinds added here (docs/observability.md lists every kind):
- `metrics.error_rate` (tenant audience): more than LEVQOR_ALERT_ERROR_RATE of a tenant's
  requests answered 5xx over the last ERROR_WINDOW_MINUTES, with at least
  LEVQOR_ALERT_ERROR_MIN_REQUESTS requests; at most once per tenant per clock hour;
- `provisioning.slow` (staff): a provisioning that took over LEVQOR_ALERT_PROVISION_SECONDS.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import connection, transaction
from django.db.models import Sum
from django.dispatch import receiver
from django.template.loader import render_to_string
from django.utils import timezone

from compliance import outbound
from compliance.alerts import alert_raise, alert_raised
from compliance.models import Alert
from levqor.errors import APIError
from runtime import metrics
from runtime.models import AlertDelivery
from tenants.provisioning import Provisioning, provisioning_finished

logger = logging.getLogger(__name__)
MAX_ATTEMPTS = 8
WEBHOOK_BREAKER = "webhook:alerts"
TIMEOUT_SECONDS = 5.0
ERROR_WINDOW_MINUTES = 5
SWEEP_LOOKBACK = timedelta(hours=1)
ERROR_RATE_LOCK = 7304  # pg advisory lock: one error-rate evaluation at a time
Channel = AlertDelivery.Channel


class DeliveryFailed(Exception):
    pass


# --- delivery ----------------------------------------------------------------------------------


@receiver(alert_raised, dispatch_uid="runtime.alerting.deliver_after_commit")
def _deliver_after_commit(sender, alert: Alert, **kwargs) -> None:
    if settings.LEVQOR_ALERT_WEBHOOK_URL or settings.LEVQOR_ALERT_EMAILS or alert.audience == Alert.Audience.TENANT:
        transaction.on_commit(lambda: _enqueue(alert.pk))


def _enqueue(alert_id: int) -> None:
    from runtime.metrics_tasks import deliver_alert

    try:
        deliver_alert.delay(alert_id)
    except Exception:  # the broker is down: the sweep sends it later
        logger.warning("could not queue the delivery of alert %s", alert_id, exc_info=True)


def channels_for(alert: Alert) -> list[str]:
    channels = []
    if settings.LEVQOR_ALERT_WEBHOOK_URL:
        if settings.LEVQOR_ALERT_WEBHOOK_SECRET:
            channels.append(Channel.WEBHOOK)
        else:
            logger.error("LEVQOR_ALERT_WEBHOOK_URL is set without LEVQOR_ALERT_WEBHOOK_SECRET: not sending unsigned")
    if settings.LEVQOR_ALERT_EMAILS:
        channels.append(Channel.STAFF_EMAIL)
    if alert.audience == Alert.Audience.TENANT and alert.tenant_id and tenant_recipients(alert.tenant_id):
        channels.append(Channel.TENANT_EMAIL)
    return channels


def tenant_recipients(tenant_id: int) -> list[str]:
    from tenants.models import Tenant, TenantUser

    emails = set(TenantUser.dangerously_all_tenants.filter(tenant_id=tenant_id, role__in=("owner", "admin"))
                 .exclude(user__email="").values_list("user__email", flat=True))
    if not emails:
        emails = {e for e in Tenant.objects.filter(pk=tenant_id).values_list("admin_email", flat=True) if e}
    return sorted(emails)


def deliver_all(alert_id: int) -> dict[str, str]:
    """Deliver an alert to every channel that applies: {channel: outcome}."""
    alert = Alert.objects.filter(pk=alert_id).first()
    if alert is None:
        return {}
    return {channel: deliver(alert_id, channel) for channel in channels_for(alert)}


def deliver(alert_id: int, channel: str) -> str:
    """Send one alert to one channel unless that was done. Returns the row's status after:
    `sent`, `pending` (failed; retry later) or `failed` (gave up)."""
    AlertDelivery.objects.bulk_create([AlertDelivery(alert_id=alert_id, channel=channel)], ignore_conflicts=True)
    with transaction.atomic():
        row = (AlertDelivery.objects.select_for_update(of=("self",)).select_related("alert")
               .get(alert_id=alert_id, channel=channel))
        if row.status != AlertDelivery.Status.PENDING:
            return row.status
        try:
            _SENDERS[channel](row.alert)
        except outbound.CircuitOpen as exc:
            # Not sent, and not an attempt: it waits for the breaker to close (retries, sweep).
            row.last_error = f"{type(exc).__name__}: {exc.message}"[:500]
            row.save(update_fields=["last_error"])
            return row.status
        except (DeliveryFailed, APIError, OSError) as exc:  # OSError: requests' and smtplib's errors
            row.attempts += 1
            row.last_error = f"{type(exc).__name__}: {exc}"[:500]
            if row.attempts >= MAX_ATTEMPTS:
                row.status = AlertDelivery.Status.FAILED
                logger.error("gave up delivering alert %s to %s: %s", alert_id, channel, row.last_error)
        else:
            row.attempts += 1
            row.status, row.sent_at, row.last_error = AlertDelivery.Status.SENT, timezone.now(), ""
        row.save(update_fields=["status", "attempts", "last_error", "sent_at"])
    return row.status


def webhook_payload(alert: Alert) -> dict:
    from tenants.models import Tenant

    slug = Tenant.objects.filter(pk=alert.tenant_id).values_list("slug", flat=True).first() if alert.tenant_id else None
    return {"id": f"alert-{alert.pk}", "kind": alert.kind, "severity": alert.severity, "audience": alert.audience,
            "tenant_id": alert.tenant_id, "tenant_slug": slug, "message": alert.message,
            "metadata": alert.metadata_json, "created_at": alert.created_at.isoformat()}


def signed_headers(body: bytes, delivery_id: str) -> dict[str, str]:
    """The headers of a webhook request (module docstring); the probe signs the same way."""
    return {**outbound.signed_json_headers(settings.LEVQOR_ALERT_WEBHOOK_SECRET, body),
            "X-Levqor-Delivery": delivery_id}


def _send_webhook(alert: Alert) -> None:
    """Through the breaker, so a receiver that is down is not hammered by every alert's
    retries; raises CircuitOpen (nothing sent) while it is open."""
    body = json.dumps(webhook_payload(alert), separators=(",", ":"), default=str).encode()
    with outbound.guard(WEBHOOK_BREAKER) as call:
        response = outbound.post(settings.LEVQOR_ALERT_WEBHOOK_URL, body=body, timeout=TIMEOUT_SECONDS,
                                 headers=signed_headers(body, f"alert-{alert.pk}"))
        if not 200 <= response.status_code < 300:
            call.failed(f"HTTP {response.status_code}")
    if not 200 <= response.status_code < 300:
        raise DeliveryFailed(f"HTTP {response.status_code}")


def _send_email(alert: Alert, recipients: list[str], *, staff: bool) -> None:
    from tenants.models import Tenant

    tenant = Tenant.objects.filter(pk=alert.tenant_id).first() if alert.tenant_id else None
    subject = f"[Levqor {alert.severity}] {alert.kind}" + (f" · {tenant.name}" if tenant else "")
    body = render_to_string("runtime/alert_email.txt", {
        "alert": alert, "tenant": tenant, "staff": staff,
        "metadata": json.dumps(alert.metadata_json, indent=2, sort_keys=True, default=str)})
    EmailMessage(subject, body, settings.DEFAULT_FROM_EMAIL, to=recipients).send()


_SENDERS = {
    Channel.WEBHOOK: _send_webhook,
    Channel.STAFF_EMAIL: lambda alert: _send_email(alert, settings.LEVQOR_ALERT_EMAILS, staff=True),
    Channel.TENANT_EMAIL: lambda alert: _send_email(alert, tenant_recipients(alert.tenant_id), staff=False),
}


def sweep(*, now: datetime | None = None) -> int:
    """Queue the alerts of the last hour that still have a channel to go. Returns how many."""
    now = now or timezone.now()
    alerts = list(Alert.objects.filter(created_at__gte=now - SWEEP_LOOKBACK, created_at__lt=now - timedelta(minutes=1)))
    settled = set(AlertDelivery.objects.filter(alert__in=alerts).exclude(status=AlertDelivery.Status.PENDING)
                  .values_list("alert_id", "channel"))
    queued = 0
    for alert in alerts:
        if any((alert.pk, channel) not in settled for channel in channels_for(alert)):
            _enqueue(alert.pk)
            queued += 1
    return queued


# --- raising -----------------------------------------------------------------------------------


def check_error_rates(*, now: datetime | None = None) -> list[int]:
    """Raise `metrics.error_rate` for each tenant over the threshold. Returns their ids."""
    now = now or timezone.now()
    since, until = metrics.window_bounds(ERROR_WINDOW_MINUTES, now)
    threshold, minimum = settings.LEVQOR_ALERT_ERROR_RATE, settings.LEVQOR_ALERT_ERROR_MIN_REQUESTS
    totals = (metrics.period_rollups(since, until).filter(seconds=metrics.MINUTE).values("tenant_id")
              .annotate(requests=Sum("requests"), errors=Sum("errors")).filter(requests__gte=max(minimum, 1))
              .order_by("tenant_id"))
    hour = now.strftime("%Y-%m-%dT%H")
    raised = []
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ERROR_RATE_LOCK])
        for row in totals:
            rate = row["errors"] / row["requests"]
            key = f"{row['tenant_id']}:{hour}"
            if rate <= threshold or Alert.objects.filter(kind="metrics.error_rate", dedupe_key=key).exists():
                continue
            alert_raise(kind="metrics.error_rate", tenant_id=row["tenant_id"], severity="warning",
                        message=f"{rate:.1%} of requests failed with a server error in the last {ERROR_WINDOW_MINUTES} "
                                f"minutes ({row['errors']} of {row['requests']}).",
                        metadata={"errors": row["errors"], "requests": row["requests"], "rate": round(rate, 4),
                                  "threshold": threshold, "since": since.isoformat(), "until": until.isoformat()},
                        dedupe_key=key)
            raised.append(row["tenant_id"])
    return raised


@receiver(provisioning_finished, sender=Provisioning, dispatch_uid="runtime.alerting.slow_provisioning")
def _alert_if_slow(sender, provisioning: Provisioning, **kwargs) -> None:
    tenant = provisioning.tenant
    limit = settings.LEVQOR_ALERT_PROVISION_SECONDS
    if tenant is None or tenant.provision_ms is None or tenant.provision_ms <= limit * 1000:
        return
    alert_raise(kind="provisioning.slow", tenant_id=tenant.pk, severity="warning", audience=Alert.Audience.STAFF,
                message=f"Provisioning {tenant.slug} took {tenant.provision_ms / 1000:.1f} s (over {limit:g} s).",
                metadata={"provision_ms": tenant.provision_ms, "steps_ms": provisioning.timings,
                          "isolation": tenant.isolation, "region": tenant.region},
                dedupe_key=str(tenant.pk))
