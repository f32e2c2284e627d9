"""The weekly pulse: last week, per tenant and for the fleet, as an HTML email to staff.

`manage.py weekly_pulse [--send]` and the Monday beat task build the same report. The
week is the 7 days before `week_end` (default: today 00:00 UTC, so on a Monday it is
Monday to Sunday). Figures come from the metrics rollups (runtime/metrics.py), the tenant
and alert tables, and each listed tenant's own workflow runs (jobs).
"""
from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime, timedelta

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import DatabaseError
from django.template.loader import render_to_string
from django.utils import timezone

from compliance.models import Alert
from runtime import kpis, metrics
from runtime.kpis import nearest_rank
from tenants import broker
from tenants.context import tenant_context
from tenants.models import Tenant

logger = logging.getLogger(__name__)
MAX_TENANT_ROWS = 100  # busiest first; the email says how many more there are


def build(week_end: datetime | None = None) -> dict:
    until = week_end or timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    since = until - timedelta(days=7)
    rows = list(metrics.period_rollups(since, until))
    by_tenant: dict[int, list] = {}
    for row in rows:
        by_tenant.setdefault(row.tenant_id, []).append(row)
    tenants = Tenant.objects.exclude(status__in=[Tenant.Status.PROVISIONING, Tenant.Status.DELETED])
    table = sorted(({"tenant": t, **metrics.summarize(by_tenant.get(t.id, []))} for t in tenants),
                   key=lambda r: (-r["requests"], r["tenant"].slug))
    week_money = kpis.money(since, until)
    for row in table[:MAX_TENANT_ROWS]:
        row["jobs"] = _jobs(row["tenant"], since, until)
        row["uptime"] = _uptime(row["tenant"], row["error_minutes"], since, until)
        row["money"] = week_money["by_tenant"].get(row["tenant"].id)
    new = Tenant.objects.filter(created_at__gte=since, created_at__lt=until)
    durations = [t.provision_ms for t in new if t.provision_ms is not None]
    restores = [ok for at, ok in kpis.restore_outcomes(since) if at < until]
    dr = kpis.dr_coverage(timezone.now())
    return {
        "money": week_money, "restores": len(restores), "restore_success": kpis.ratio(sum(restores), len(restores)),
        "dr": {k: dr[k] for k in ("tenants", "backed_up", "covered", "share")},
        "since": since, "until": until, "fleet": metrics.summarize(rows),
        "tenants": table[:MAX_TENANT_ROWS], "more_tenants": max(0, len(table) - MAX_TENANT_ROWS),
        "status_counts": sorted(Counter(Tenant.objects.values_list("status", flat=True)).items()),
        "new_tenants": len(new), "provision_p50_ms": nearest_rank(durations, 0.5),
        "provision_p95_ms": nearest_rank(durations, 0.95),
        "hibernated": Tenant.objects.filter(hibernated_at__isnull=False).count(),
        "alerts": sorted(Counter(Alert.objects.filter(created_at__gte=since, created_at__lt=until)
                                 .values_list("kind", flat=True)).items()),
    }


def _uptime(tenant: Tenant, error_minutes: int, since: datetime, until: datetime) -> float | None:
    """As on /staff/kpis: 1 - minutes with a 5xx / minutes the tenant existed in the week."""
    minutes = (until - max(since, tenant.created_at)).total_seconds() / 60
    return round(max(0.0, 1 - error_minutes / minutes), 5) if minutes > 0 else None


def _jobs(tenant: Tenant, since: datetime, until: datetime) -> dict | None:
    """The tenant's workflow runs of the week, or None when its data cannot be reached."""
    if tenant.status != Tenant.Status.ACTIVE:
        return None
    try:
        with tenant_context(tenant):
            return metrics.job_counts(since, until)
    except DatabaseError:
        logger.warning("weekly pulse: the runs of %s could not be read", tenant.slug, exc_info=True)
        return None
    finally:
        broker.close_thread_connections(only_obsolete=False)  # one tenant database at a time


def render(report: dict) -> tuple[str, str, str]:
    """(subject, text, html)."""
    subject = f"Levqor weekly pulse: {report['since']:%Y-%m-%d} to {report['until'] - timedelta(days=1):%Y-%m-%d}"
    return (subject, render_to_string("runtime/weekly_pulse.txt", report),
            render_to_string("runtime/weekly_pulse.html", report))


def send(report: dict, recipients: list[str] | None = None) -> list[str]:
    """Email the report; returns the recipients (none configured: nothing is sent)."""
    recipients = list(recipients or settings.LEVQOR_PULSE_EMAILS)
    if not recipients:
        return []
    subject, text, html = render(report)
    message = EmailMultiAlternatives(subject, text, settings.DEFAULT_FROM_EMAIL, to=recipients)
    message.attach_alternative(html, "text/html")
    message.send()
    return recipients
