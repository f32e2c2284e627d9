"""Usage to Stripe (nightly) and reconciliation of Stripe's totals with our ledger.

The ledger is the policy app's per-tenant, per-month counters (`usage_counters`). Each
night, for the UTC day just ended (the *window*), every billed tenant gets one Stripe
meter event per metric:

- `api_calls`, `workflow_runs` (sum meters): the period's ledger total minus what was
  already reported for the period, so the reports add up to the ledger exactly;
- `storage_gb` (a "last" meter): the tenant's schema or database size, rounded up to
  whole GB.

Each report is a `MeterReport` row written *before* the call, with the identifier
`levqor:<tenant>:<metric>:<window>`; a re-run resends unsent rows with the same
identifier and value and skips sent ones, so a window is never billed twice or lost.

Reconciliation asks Stripe for each tenant's meter event summaries over the current
period and compares them with the rows we sent; any difference raises a `billing.drift`
alert for staff, naming tenant, metric, Stripe's figure and ours.
"""
from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta, timezone as dt_timezone

import stripe
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from billing import catalog, stripe_api
from compliance import outbound
from billing.models import MeterReport

logger = logging.getLogger(__name__)

GB = 1_000_000_000


def default_window() -> date:
    return (timezone.now() - timedelta(days=1)).astimezone(dt_timezone.utc).date()


def window_period(window: date) -> str:
    return window.strftime("%Y%m")


def billed_tenants(tenant_ids=None):
    from tenants.models import Tenant, TenantBilling

    rows = TenantBilling.dangerously_all_tenants.select_related("tenant").exclude(stripe_customer_id="").filter(
        tenant__status__in=[Tenant.Status.ACTIVE, Tenant.Status.SUSPENDED])
    if tenant_ids:
        rows = rows.filter(tenant_id__in=tenant_ids)
    return list(rows.order_by("tenant_id"))


def storage_bytes(tenants) -> dict[int, int]:
    """Bytes each tenant stores: its schema's relations, or its whole database."""
    from tenants.models import TenantDatabase

    sizes: dict[int, int] = {}
    schemas = {t.schema_name: t.id for t in tenants if t.isolation == "schema"}
    if schemas:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT n.nspname, COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'm') "
                "GROUP BY n.nspname", [list(schemas)])
            for name, size in cursor.fetchall():
                sizes[schemas[name]] = int(size)
    databases = {row.name: row.tenant_id for row in TenantDatabase.dangerously_all_tenants.filter(
        tenant_id__in=[t.id for t in tenants if t.isolation == "database"])}
    if databases:
        with connection.cursor() as cursor:
            cursor.execute("SELECT datname, pg_database_size(datname) FROM pg_database WHERE datname = ANY(%s)",
                           [list(databases)])
            for name, size in cursor.fetchall():
                sizes[databases[name]] = int(size)
    return sizes


def _event_time(window: date) -> int:
    """The meter event's timestamp: the window's last second, or now for a window still open."""
    end = datetime.combine(window + timedelta(days=1), datetime.min.time(), tzinfo=dt_timezone.utc)
    return int(min(end.timestamp() - 1, time.time() - 1))


def _plan_reports(billings, window: date) -> tuple[list[MeterReport], dict]:
    """Write (or find) this window's report rows; returns those still to send."""
    from policy.models import UsageCounter

    period = window_period(window)
    tenant_ids = [b.tenant_id for b in billings]
    ledger = {(row.tenant_id, row.metric): row.count for row in UsageCounter.dangerously_all_tenants.filter(
        tenant_id__in=tenant_ids, period=period)}
    existing = {(r.tenant_id, r.metric): r for r in MeterReport.dangerously_all_tenants.filter(
        tenant_id__in=tenant_ids, window=window)}
    reported: dict[tuple, tuple] = {}  # (tenant, metric) -> (latest window, cumulative) before this window
    later: set[tuple] = set()
    for r in MeterReport.dangerously_all_tenants.filter(tenant_id__in=tenant_ids, period=period).exclude(window=window):
        key = (r.tenant_id, r.metric)
        if r.window > window:
            later.add(key)
        elif key not in reported or r.window > reported[key][0]:
            reported[key] = (r.window, r.cumulative)
    sizes = storage_bytes([b.tenant for b in billings])
    stamp = _event_time(window)
    to_send, new_rows = [], []
    summary = {"skipped_sent": 0, "resent": 0, "zero": 0, "out_of_order": 0}
    for b in billings:
        for m in catalog.METERED:
            key = (b.tenant_id, m.metric)
            row = existing.get(key)
            if row is not None:
                if row.status == MeterReport.Status.SENT:
                    summary["skipped_sent"] += 1
                else:
                    summary["resent"] += 1
                    to_send.append(row)
                continue
            if key in later:  # a later window already reported the period's total so far
                summary["out_of_order"] += 1
                continue
            if m.ledger_metric:
                before = reported.get(key, (None, 0))[1]
                total = ledger.get((b.tenant_id, m.ledger_metric), 0)
                value, cumulative = max(total - before, 0), max(total, before)
                if total < before:
                    logger.warning("ledger of tenant %s %s went back from %s to %s", b.tenant_id, m.metric, before, total)
            else:
                value = cumulative = math.ceil(sizes.get(b.tenant_id, 0) / GB)
            row = MeterReport(tenant_id=b.tenant_id, metric=m.metric, period=period, window=window, value=value,
                              cumulative=cumulative, identifier=f"levqor:{b.tenant_id}:{m.metric}:{window.isoformat()}",
                              timestamp=stamp)
            if value == 0 and m.ledger_metric:
                row.status, row.sent_at = MeterReport.Status.SENT, timezone.now()  # nothing to bill
                summary["zero"] += 1
            else:
                to_send.append(row)
            new_rows.append(row)
    with transaction.atomic():
        MeterReport.dangerously_all_tenants.bulk_create(new_rows, batch_size=1000)
    return to_send, summary


def _send(report: MeterReport, customer_id: str) -> str | None:
    """Send one meter event; None when Stripe has it (now or from an earlier run)."""
    event_name = next(m.event_name for m in catalog.METERED if m.metric == report.metric)
    try:
        with stripe_api.guarded():
            stripe_api.client().v1.billing.meter_events.create(params={
                "event_name": event_name, "identifier": report.identifier, "timestamp": report.timestamp,
                "payload": {"stripe_customer_id": customer_id, "value": str(report.value)},
            })
    except outbound.CircuitOpen as exc:  # not sent; the next run resends it
        return f"{report.identifier}: {exc.message}"
    except stripe.InvalidRequestError as exc:
        # Stripe's answer to an identifier it already has (a resend of a window it
        # received before we could mark it sent): the event counts once; so do we.
        if "already exists with identifier" in str(exc.user_message or exc):
            return None
        return f"{report.identifier}: {exc.user_message or exc}"
    except stripe.StripeError as exc:
        return f"{report.identifier}: {exc.__class__.__name__}: {exc.user_message or ''}"
    return None


def sync_usage(*, window: date | None = None, tenant_ids=None, progress=None) -> dict:
    """Report one window's usage of every billed tenant to Stripe. Safe to re-run."""
    from policy import quotas

    if not stripe_api.enabled():
        return {"enabled": False}
    window = window or default_window()
    quotas.flush(window_period(window))  # counts still in Redis reach the ledger first
    started = time.monotonic()
    billings = billed_tenants(tenant_ids)
    customers = {b.tenant_id: b.stripe_customer_id for b in billings}
    to_send, summary = _plan_reports(billings, window)
    if progress:
        progress(0, len(to_send))
    failures, sent = [], []
    with ThreadPoolExecutor(max_workers=max(1, settings.LEVQOR_BILLING_SYNC_WORKERS)) as pool:
        for i, (row, error) in enumerate(zip(to_send, pool.map(lambda r: _send(r, customers[r.tenant_id]), to_send)),
                                         start=1):
            (failures if error else sent).append(error or row)
            if progress:
                progress(i, len(to_send))
    now = timezone.now()
    for start in range(0, len(sent), 1000):
        chunk = sent[start:start + 1000]
        MeterReport.dangerously_all_tenants.filter(identifier__in=[r.identifier for r in chunk]).update(
            status=MeterReport.Status.SENT, sent_at=now)
    _remember_reported(billings, window)
    result = {"enabled": True, "window": window.isoformat(), "tenants": len(billings), "sent": len(sent),
              "failed": len(failures), "errors": failures[:10], "seconds": round(time.monotonic() - started, 2), **summary}
    logger.info("usage sync %s: %s", window, {k: v for k, v in result.items() if k != "errors"})
    return result


def _remember_reported(billings, window: date) -> None:
    """Keep the last reported figures on tenant_billing for the portal."""
    from tenants.models import TenantBilling

    latest = {}
    for r in MeterReport.dangerously_all_tenants.filter(tenant_id__in=[b.tenant_id for b in billings], window=window,
                                                        status=MeterReport.Status.SENT):
        latest.setdefault(r.tenant_id, {})[r.metric] = {"period": r.period, "window": r.window.isoformat(),
                                                        "reported": r.cumulative}
    changed = []
    for b in billings:
        if b.tenant_id in latest:
            b.metered_usage_json = {**(b.metered_usage_json or {}), **latest[b.tenant_id]}
            changed.append(b)
    TenantBilling.dangerously_all_tenants.bulk_update(changed, ["metered_usage_json"], batch_size=1000)


# --- reconciliation ------------------------------------------------------------------


def _period_bounds(period: str) -> tuple[int, int]:
    from policy.quotas import period_end

    start = datetime(int(period[:4]), int(period[4:]), 1, tzinfo=dt_timezone.utc)
    end = min(period_end(period), timezone.now().replace(second=0, microsecond=0) + timedelta(minutes=1))
    return int(start.timestamp()), int(end.timestamp())


def reconcile(*, period: str | None = None, tenant_ids=None, progress=None) -> dict:
    """Compare Stripe's meter totals for the period with what we sent; alert on drift."""
    from compliance.alerts import alert_raise
    from compliance.models import Alert
    from policy.quotas import period_of

    if not stripe_api.enabled():
        return {"enabled": False}
    period = period or period_of()
    start, end = _period_bounds(period)
    billings = billed_tenants(tenant_ids)
    ours: dict[tuple, int] = defaultdict(int)
    last: dict[tuple, tuple] = {}
    for r in MeterReport.dangerously_all_tenants.filter(tenant_id__in=[b.tenant_id for b in billings], period=period,
                                                        status=MeterReport.Status.SENT):
        key = (r.tenant_id, r.metric)
        ours[key] += r.value
        if key not in last or r.window > last[key][0]:
            last[key] = (r.window, r.value)
    meters = catalog.meter_ids()

    def theirs(b):
        c = stripe_api.client()
        found = {}
        for m in catalog.METERED:
            summaries = stripe_api.call(c.v1.billing.meters.event_summaries.list, meters[m.event_name], params={
                "customer": b.stripe_customer_id, "start_time": start, "end_time": end, "limit": 100})
            found[m.metric] = sum(float(s["aggregated_value"]) for s in summaries.auto_paging_iter())
        return b, found

    drifts = []
    with ThreadPoolExecutor(max_workers=max(1, settings.LEVQOR_BILLING_SYNC_WORKERS)) as pool:
        for i, (b, found) in enumerate(pool.map(theirs, billings), start=1):
            for m in catalog.METERED:
                key = (b.tenant_id, m.metric)
                expected = ours.get(key, 0) if m.formula == "sum" else last.get(key, (None, 0))[1]
                if float(found[m.metric]) != float(expected):
                    drifts.append({"tenant_id": b.tenant_id, "metric": m.metric, "stripe": found[m.metric],
                                   "ledger": expected, "period": period})
            if progress:
                progress(i, len(billings))
    for d in drifts:
        alert_raise(kind="billing.drift", tenant_id=d["tenant_id"], severity="critical", audience=Alert.Audience.STAFF,
                    message=(f"billing drift for {d['metric']} in {period}: Stripe has {d['stripe']:g}, "
                             f"the ledger reported {d['ledger']}"),
                    metadata=d, dedupe_key=f"{d['tenant_id']}:{d['metric']}:{period}")
    return {"enabled": True, "period": period, "tenants": len(billings), "drifts": drifts}
