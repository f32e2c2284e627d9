"""What a tenant contributes: a few KPIs for one calendar month, each clipped to fixed bounds.

The bounds are public and fixed (not derived from the data), so one tenant's influence on
any published figure is known in advance: it adds or removes exactly one clipped value per
bucket and metric. A KPI the tenant has no value for (no finished runs, no latency data)
is left out rather than counted as zero.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone as dt_timezone

from django.db import DatabaseError, transaction
from django.db.models import Count


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    unit: str
    lower: float
    upper: float
    candidates: tuple[float, ...]  # the values a published quantile may take

    def clip(self, value: float) -> float:
        return min(max(float(value), self.lower), self.upper)


def _log_grid(upper: float, steps: int = 48) -> tuple[float, ...]:
    """0 and roughly log-spaced whole numbers up to `upper`: counts span orders of magnitude."""
    top = math.log10(upper)
    return tuple(sorted({0.0} | {float(round(10 ** (top * i / steps))) for i in range(steps + 1)}))


METRICS = (
    Metric("workflow_runs", "Workflow runs", "runs per month", 0, 100_000, _log_grid(100_000)),
    Metric("job_success_rate", "Job success rate", "share of finished runs that succeeded", 0, 1,
           tuple(i / 50 for i in range(51))),
    Metric("p95_latency_ms", "API latency p95", "milliseconds", 0, 10_000, _log_grid(10_000)),
    Metric("api_calls", "API calls", "calls per month", 0, 10_000_000, _log_grid(10_000_000)),
    Metric("active_members", "Active members", "members", 0, 10_000, _log_grid(10_000)),
)
METRIC_BY_NAME = {metric.name: metric for metric in METRICS}

# Size bands by active members: (upper bound inclusive, name). Words, not numbers, so a band
# name never reads as a count.
SIZE_BANDS = ((10, "small"), (100, "medium"), (1000, "large"), (math.inf, "enterprise"))


def size_band(active_members: int) -> str:
    return next(name for upper, name in SIZE_BANDS if active_members <= upper)


def period_bounds(period: str) -> tuple[datetime, datetime]:
    """[first instant of the month, first instant of the next) in UTC, for YYYYMM."""
    if not isinstance(period, str) or not re.fullmatch(r"\d{4}(0[1-9]|1[0-2])", period):
        raise ValueError("period must be YYYYMM")
    year, month = int(period[:4]), int(period[4:])
    since = datetime(year, month, 1, tzinfo=dt_timezone.utc)
    until = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=dt_timezone.utc)
    return since, until


def tenant_kpis(tenant_id: int, period: str) -> dict[str, float | None]:
    """The tenant's raw KPIs for the month. Needs the tenant's context (runs live in its
    schema or database)."""
    since, until = period_bounds(period)
    runs = _run_counts(since, until)
    finished = runs["succeeded"] + runs["failed"]
    return {
        "workflow_runs": runs["total"],
        "job_success_rate": runs["succeeded"] / finished if finished else None,
        "p95_latency_ms": p95_latency_ms(tenant_id, since, until),
        "api_calls": _api_calls(tenant_id, period),
        "active_members": active_members(tenant_id),
    }


def clipped(kpis: dict[str, float | None]) -> dict[str, float | None]:
    return {name: None if value is None else METRIC_BY_NAME[name].clip(value) for name, value in kpis.items()}


def _run_counts(since: datetime, until: datetime) -> dict[str, int]:
    from workflows.models import WorkflowRun

    counts = dict(WorkflowRun.objects.filter(created_at__gte=since, created_at__lt=until).order_by()
                  .values_list("status").annotate(n=Count("pk")))
    return {"total": sum(counts.values()), "succeeded": counts.get(WorkflowRun.Status.SUCCEEDED, 0),
            "failed": counts.get(WorkflowRun.Status.FAILED, 0)}


def _api_calls(tenant_id: int, period: str) -> int:
    from policy import quotas

    return quotas.used_in(tenant_id, "api_calls", period)


def active_members(tenant_id: int) -> int:
    from tenants.models import TenantUser

    return TenantUser.dangerously_all_tenants.filter(tenant_id=tenant_id, user__is_active=True).count()


def p95_latency_ms(tenant_id: int, since: datetime, until: datetime) -> float | None:
    """The month's p95 from the runtime app's per-tenant rollups. The runtime metrics are
    built separately and may be absent or shaped differently: then the metric is skipped
    (None) rather than failing the aggregation."""
    try:
        from runtime.metrics import summarize
        from runtime.models import MetricRollup
    except ImportError:
        return None
    try:
        with transaction.atomic():  # a savepoint: a missing table must not poison the caller's transaction
            rows = list(MetricRollup.dangerously_all_tenants.filter(tenant_id=tenant_id, start__gte=since,
                                                                    start__lt=until))
        return summarize(rows).get("p95_ms") if rows else None
    except (DatabaseError, AttributeError, TypeError, KeyError):
        return None
