"""Staff KPIs (/staff/kpis): the fleet week by week, each tenant's uptime, DR coverage.

Definitions (also in docs/observability.md):
- Weeks start on Monday 00:00 UTC; the last one shown is the current, partial week.
- New tenants: tenant rows created in the week. A failed signup leaves no row; a deleted
  tenant keeps its row (a tombstone), so it still counts in the week it was created.
- Time to provision: `Tenant.provision_ms` of the tenants created in the week, p50 and p95
  by nearest rank.
- Error rate: requests answered 5xx / requests (API and portal, runtime/metrics.py).
- Uptime of a tenant over the period: 1 - (minutes with at least one 5xx answer) /
  (minutes the tenant existed in the period). A minute without traffic counts as up: nothing
  failed in it. We do not probe tenants, so this is availability as their callers saw it.
- DR coverage: the share of active tenants with an OK backup younger than
  LEVQOR_KPI_BACKUP_FRESH_HOURS and, when their region has a replica (LEVQOR_REGIONS), a
  healthy one: it answers within LEVQOR_HEALTH_CHECK_TIMEOUT and is still a standby (not
  promoted). Regions without a replica need only the backup.
- Restore success: backups whose restore report (manifest "restore", written by
  runtime/backups.py) has a boolean `verified`; true over all, counted at the report's time.
  Reports of another shape are skipped, not guessed at.
- Revenue, ARPU, cost and gross margin: see "money" below.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone as dt_timezone

from django.conf import settings
from django.db.models import Sum
from django.db.models.functions import TruncWeek
from django.utils import timezone

from levqor.timeparse import parse_when
from runtime import metrics
from runtime.models import Backup, RegionState
from tenants.models import Tenant

MAX_WEEKS = 52


def nearest_rank(values: list, q: float):
    """The q-quantile of `values` by nearest rank (one of the values), None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def week_starts(weeks: int, now: datetime) -> list[datetime]:
    this_week = (now - timedelta(days=now.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
    return [this_week - timedelta(weeks=weeks - 1 - i) for i in range(weeks)]


def weekly(weeks: int, now: datetime) -> list[dict]:
    """One row per week, oldest first."""
    starts = week_starts(weeks, now)
    since = starts[0]
    rows = {start: {"week": start, "new_tenants": 0, "provision_ms": [], "requests": 0, "errors": 0,
                    "restores_ok": 0, "restores": 0} for start in starts}
    for created_at, provision_ms in Tenant.objects.filter(created_at__gte=since).values_list("created_at", "provision_ms"):
        row = rows[_week_of(created_at, starts)]
        row["new_tenants"] += 1
        if provision_ms is not None:
            row["provision_ms"].append(provision_ms)
    traffic = (metrics.period_rollups(since, now + timedelta(minutes=1)).annotate(week=TruncWeek("start"))
               .values("week").annotate(requests=Sum("requests"), errors=Sum("errors")).order_by("week"))
    for t in traffic:
        rows[_week_of(t["week"], starts)].update(requests=t["requests"], errors=t["errors"])
    for at, ok in restore_outcomes(since):
        row = rows[_week_of(at, starts)]
        row["restores"] += 1
        row["restores_ok"] += ok
    for row, week_money in zip(rows.values(), weekly_money(starts, now)):
        durations = row.pop("provision_ms")
        row.update(provision_p50_ms=nearest_rank(durations, 0.5), provision_p95_ms=nearest_rank(durations, 0.95),
                   error_rate=_ratio(row["errors"], row["requests"]),
                   restore_success=_ratio(row["restores_ok"], row["restores"]),
                   revenue=week_money["revenue"], cost=week_money["cost"], arpu=week_money["arpu"],
                   gross_margin=week_money["gross_margin"])
    return list(rows.values())


def _week_of(when: datetime, starts: list[datetime]) -> datetime:
    return max(start for start in starts if start <= when)


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


ratio = _ratio  # for the weekly pulse


def restore_outcomes(since: datetime) -> list[tuple[datetime, bool]]:
    """(when, verified) of every restore report from `since` on (see the module docstring)."""
    outcomes = []
    backups = Backup.dangerously_all_tenants.filter(manifest_json__has_key="restore").only("created_at", "manifest_json")
    for backup in backups:
        # Every attempt ("restores"); backups restored before attempts were kept: the last report.
        attempts = backup.manifest_json.get("restores") or [backup.manifest_json.get("restore")]
        for report in attempts:
            if not isinstance(report, dict) or not isinstance(report.get("verified"), bool):
                continue
            at = parse_when(report.get("at")) or backup.created_at
            if at >= since:
                outcomes.append((at, report["verified"]))
    return outcomes


def tenant_table(since: datetime, now: datetime) -> list[dict]:
    """Each tenant's requests, error rate and uptime over [since, now], busiest first."""
    traffic = {t["tenant_id"]: t for t in metrics.period_rollups(since, now + timedelta(minutes=1))
               .values("tenant_id").annotate(requests=Sum("requests"), errors=Sum("errors"),
                                            error_minutes=Sum("error_minutes")).order_by()}
    rows = []
    for tenant in Tenant.objects.exclude(status__in=[Tenant.Status.PROVISIONING, Tenant.Status.DELETED]):
        t = traffic.get(tenant.id, {"requests": 0, "errors": 0, "error_minutes": 0})
        minutes = (now - max(since, tenant.created_at)).total_seconds() / 60
        uptime = max(0.0, 1 - t["error_minutes"] / minutes) if minutes > 0 else None
        rows.append({"tenant_id": tenant.id, "slug": tenant.slug, "plan": tenant.plan, "status": tenant.status,
                     "region": tenant.region, "requests": t["requests"], "errors": t["errors"],
                     "error_rate": _ratio(t["errors"], t["requests"]), "error_minutes": t["error_minutes"],
                     "uptime": round(uptime, 5) if uptime is not None else None})
    return sorted(rows, key=lambda r: (-r["requests"], r["slug"]))


@dataclass(frozen=True)
class ReplicaHealth:
    healthy: bool
    detail: str


def replica_health(region_name: str) -> ReplicaHealth | None:
    """None when the region has no replica; else whether it answers as a standby."""
    from runtime import dr

    checked = dr.check_replica(region_name)  # through the replica's circuit breaker
    if checked is None:
        return None
    if checked["answers"] and not checked["standby"]:
        state = RegionState.objects.filter(region=region_name).first()
        failed_over = f" (region failed over {state.failed_over_at:%Y-%m-%d %H:%M} UTC)" if state and state.failed_over_at else ""
        return ReplicaHealth(False, checked["detail"] + failed_over)
    return ReplicaHealth(checked["answers"], checked["detail"])


def dr_coverage(now: datetime) -> dict:
    fresh_since = now - timedelta(hours=settings.LEVQOR_KPI_BACKUP_FRESH_HOURS)
    backed_up = set(Backup.dangerously_all_tenants.filter(status=Backup.Status.OK, created_at__gte=fresh_since)
                    .values_list("tenant_id", flat=True))
    regions = {name: replica_health(name) for name in settings.LEVQOR_REGIONS}
    tenants = list(Tenant.objects.filter(status=Tenant.Status.ACTIVE).values_list("id", "region"))
    covered = [tenant_id for tenant_id, region in tenants if tenant_id in backed_up
               and (regions.get(region) is None or regions[region].healthy)]
    return {"tenants": len(tenants), "backed_up": sum(1 for t, _ in tenants if t in backed_up),
            "covered": len(covered), "share": _ratio(len(covered), len(tenants)),
            "covered_ids": set(covered), "regions": regions}


def report(weeks: int, *, now: datetime | None = None) -> dict:
    now = now or timezone.now()
    weeks_rows = weekly(weeks, now)
    since = weeks_rows[0]["week"]
    durations = list(Tenant.objects.filter(created_at__gte=since, provision_ms__isnull=False)
                     .values_list("provision_ms", flat=True))
    restores = restore_outcomes(since)
    period_money = money(since, now + timedelta(minutes=1))
    tenants = tenant_table(since, now)
    for row in tenants:
        row.update({k: v for k, v in period_money["by_tenant"].get(row["tenant_id"], {}).items() if k != "cost_parts"})
    return {"now": now, "since": since, "weeks": weeks_rows, "tenants": tenants,
            "provision_p50_ms": nearest_rank(durations, 0.5), "provision_p95_ms": nearest_rank(durations, 0.95),
            "restore_success": _ratio(sum(ok for _, ok in restores), len(restores)), "restores": len(restores),
            "dr": dr_coverage(now), "money": period_money}


WEEK_COLUMNS = ["week", "new_tenants", "provision_p50_ms", "provision_p95_ms", "requests", "errors", "error_rate",
                "restores", "restores_ok", "restore_success", "revenue", "cost", "arpu", "gross_margin"]
TENANT_COLUMNS = ["tenant_id", "slug", "plan", "status", "region", "requests", "errors", "error_rate", "error_minutes",
                  "uptime", "dr_covered", "revenue", "cost", "margin", "gross_margin"]


def csv_rows(data: dict, table: str) -> tuple[list[str], list[list]]:
    """(header, rows) of the weekly or the per-tenant table."""
    if table == "weeks":
        return WEEK_COLUMNS, [[r["week"].date().isoformat() if c == "week" else r[c] for c in WEEK_COLUMNS]
                              for r in data["weeks"]]
    covered = data["dr"]["covered_ids"]
    return TENANT_COLUMNS, [[r["tenant_id"] in covered if c == "dr_covered" else r.get(c) for c in TENANT_COLUMNS]
                            for r in data["tenants"]]


# --- money: ARPU and gross margin ------------------------------------------------------------
#
# Revenue: Stripe invoices as dj-stripe mirrors them (billing/webhooks.py syncs each
# `invoice.*` event into djstripe.Invoice): `amount_paid` of the invoices with status
# `paid`, in the billing currency (STRIPE_CURRENCY; others are left out, not converted),
# counted when paid (`status_transitions.paid_at`, else the invoice's creation), and
# attributed to the tenant whose TenantBilling holds the invoice's customer.
# ARPU: revenue / tenants that existed in the period (created before its end, not deleted
# or still provisioning), free ones included.
# Cost (LEVQOR_COST_*, in the billing currency): each tenant's share, pro rata over the
# days it existed in the period (a month = 30.4375 days):
#   database  LEVQOR_COST_SCHEMA_TENANT_MONTH (schema-per-tenant) or
#             LEVQOR_COST_DATABASE_TENANT_MONTH (its own database),
#   storage   LEVQOR_COST_STORAGE_GB_MONTH x (its stored OK backups now + its last metered
#             storage_gb), i.e. today's size stands for the whole period,
#   compute   LEVQOR_COST_MILLION_REQUESTS x requests served / 1e6.
# Gross margin: (revenue - cost) / revenue; None without revenue.

MONTH_DAYS = 30.4375


def customer_tenants() -> dict[str, int]:
    """Stripe customer id -> tenant id."""
    from tenants.models import TenantBilling

    return dict(TenantBilling.dangerously_all_tenants.exclude(stripe_customer_id="")
                .values_list("stripe_customer_id", "tenant_id"))


def paid_invoices(since: datetime) -> list[tuple[int, datetime, int]]:
    """(tenant id, paid at, amount paid in cents) of every paid invoice from `since` on."""
    from djstripe.models import Invoice

    customers = customer_tenants()
    currency = settings.STRIPE_CURRENCY.lower()
    out = []
    rows = Invoice.objects.filter(customer_id__in=list(customers), stripe_data__status="paid").values_list(
        "customer_id", "created", "stripe_data")
    for customer_id, created, data in rows:
        if str(data.get("currency") or "").lower() != currency:
            continue
        paid_at = (data.get("status_transitions") or {}).get("paid_at")
        at = datetime.fromtimestamp(paid_at, tz=dt_timezone.utc) if isinstance(paid_at, int) else created
        if at is not None and at >= since:
            out.append((customers[customer_id], at, int(data.get("amount_paid") or 0)))
    return out


def storage_gb() -> dict[int, float]:
    """Each tenant's stored GB now: its OK backups plus its last metered storage_gb."""
    from billing.models import MeterReport

    sizes: dict[int, float] = {}
    for tenant_id, size in (Backup.dangerously_all_tenants.filter(status=Backup.Status.OK).values("tenant_id")
                            .annotate(total=Sum("size_bytes")).values_list("tenant_id", "total")):
        sizes[tenant_id] = (size or 0) / 1e9
    for tenant_id, value in (MeterReport.dangerously_all_tenants.filter(metric="storage_gb")
                             .order_by("tenant_id", "-window").distinct("tenant_id").values_list("tenant_id", "value")):
        sizes[tenant_id] = sizes.get(tenant_id, 0.0) + value
    return sizes


def tenant_cost(*, isolation: str, days: float, gb: float, requests: int) -> dict:
    """One tenant's cost over `days` days (see above), by part."""
    monthly_db = (settings.LEVQOR_COST_DATABASE_TENANT_MONTH if isolation == Tenant.Isolation.DATABASE
                  else settings.LEVQOR_COST_SCHEMA_TENANT_MONTH)
    parts = {"database": monthly_db * days / MONTH_DAYS,
             "storage": settings.LEVQOR_COST_STORAGE_GB_MONTH * gb * days / MONTH_DAYS,
             "compute": settings.LEVQOR_COST_MILLION_REQUESTS * requests / 1e6}
    return {**{k: round(v, 4) for k, v in parts.items()}, "total": round(sum(parts.values()), 4)}


def _live_tenants():
    return Tenant.objects.exclude(status__in=[Tenant.Status.PROVISIONING, Tenant.Status.DELETED])


def _days(since: datetime, until: datetime, created_at: datetime) -> float:
    return max(0.0, (until - max(since, created_at)).total_seconds() / 86400)


def money(since: datetime, until: datetime, *, requests: dict[int, int] | None = None,
          invoices: list | None = None, gb: dict[int, float] | None = None) -> dict:
    """Revenue, cost, ARPU and gross margin of [since, until): the fleet and each tenant."""
    if requests is None:
        requests = dict(metrics.period_rollups(since, until).values("tenant_id").annotate(n=Sum("requests"))
                        .order_by().values_list("tenant_id", "n"))
    invoices = paid_invoices(since) if invoices is None else invoices
    gb = storage_gb() if gb is None else gb
    revenue: dict[int, int] = {}
    for tenant_id, at, cents in invoices:
        if since <= at < until:
            revenue[tenant_id] = revenue.get(tenant_id, 0) + cents
    tenants = {}
    for tenant in _live_tenants().filter(created_at__lt=until):
        cost = tenant_cost(isolation=tenant.isolation, days=_days(since, until, tenant.created_at),
                           gb=gb.get(tenant.id, 0.0), requests=requests.get(tenant.id, 0) or 0)
        paid = revenue.get(tenant.id, 0) / 100
        tenants[tenant.id] = {"revenue": round(paid, 2), "cost": cost["total"], "cost_parts": cost,
                              "margin": round(paid - cost["total"], 2), "gross_margin": _margin(paid, cost["total"])}
    total_revenue = round(sum(revenue.get(t, 0) for t in tenants) / 100, 2)
    total_cost = round(sum(t["cost"] for t in tenants.values()), 2)
    return {"currency": settings.STRIPE_CURRENCY.upper(), "revenue": total_revenue, "cost": total_cost,
            "tenants_counted": len(tenants), "arpu": round(total_revenue / len(tenants), 2) if tenants else None,
            "gross_margin": _margin(total_revenue, total_cost), "by_tenant": tenants}


def _margin(revenue: float, cost: float) -> float | None:
    return round((revenue - cost) / revenue, 4) if revenue > 0 else None


def weekly_money(starts: list[datetime], now: datetime) -> list[dict]:
    """money() of each week (the last one up to now), oldest first."""
    invoices, gb = paid_invoices(starts[0]), storage_gb()
    traffic: dict[datetime, dict[int, int]] = {}
    for row in (metrics.period_rollups(starts[0], now + timedelta(minutes=1)).annotate(week=TruncWeek("start"))
                .values("week", "tenant_id").annotate(n=Sum("requests")).order_by()):
        traffic.setdefault(_week_of(row["week"], starts), {})[row["tenant_id"]] = row["n"]
    ends = starts[1:] + [now]
    return [money(start, end, requests=traffic.get(start, {}), invoices=invoices, gb=gb)
            for start, end in zip(starts, ends)]
