"""Per-tenant request metrics: counted in process memory, written in batches, read as rollups.

Recording is on every request's path, so it does no I/O: `RequestMetricsMiddleware`
(levqor/middleware.py) calls `record()`, which takes a lock and adds to a tally kept per
(tenant, minute) plus one per status class for the fleet. At most every
LEVQOR_METRICS_FLUSH_SECONDS, after a response has been handed to the server
(`request_finished`), that process writes what it gathered:

- per tenant and minute, one multi-row upsert into `runtime_metric_rollups` that adds to
  what the other processes wrote: counts and a latency histogram of fixed size, so storage
  grows with tenants x active minutes, never with the number of requests;
- the tenants' `last_seen_at`, at most once per LAST_SEEN_EVERY per tenant (waking any
  that were hibernated: runtime/hibernation.py);
- the fleet histogram by status class: one Redis pipeline (the Prometheus counters).

A failed write puts the figures back for the next flush. What a process has not flushed
yet (at most one interval) is lost if it dies, and an idle process keeps it until its next
request: these are operational metrics, not the billing ledger (that is policy/quotas.py).

Minute rows older than LEVQOR_METRICS_MINUTE_RETENTION_HOURS are folded into hourly rows
by `rollup_minutes()` (a Celery task), keeping how many minutes had a 5xx answer, which is
what uptime is computed from.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone as dt_timezone
from itertools import accumulate

import redis
from celery.signals import task_postrun
from django.conf import settings
from django.core.signals import request_finished
from django.db import DatabaseError, connection, transaction
from django.dispatch import receiver
from django.utils import timezone

from levqor.redis import client
from runtime import hibernation

logger = logging.getLogger(__name__)

# Upper bounds (ms) of the latency buckets, spaced ~1.6x apart; one more bucket holds the rest.
BOUNDS_MS = (1, 2, 3, 5, 8, 13, 20, 30, 50, 80, 130, 200, 300, 500, 800, 1300, 2000, 3000, 5000, 10000)
BUCKETS = len(BOUNDS_MS) + 1
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
MINUTE, HOUR = 60, 3600
LAST_SEEN_EVERY = 600.0  # seconds between two last_seen_at writes for one tenant
MAX_PENDING_TALLIES = 100_000  # (tenant, minute) tallies kept while the database is unreachable
FLEET_KEY = "levqor:metrics:fleet"
MAX_WINDOW_MINUTES = 1440


def bucket_of(ms: float) -> int:
    """Index of the bucket holding a latency: the first whose upper bound is >= it."""
    return bisect_left(BOUNDS_MS, ms)


def percentile_ms(buckets, max_ms: float, q: float = 0.95) -> float | None:
    """The q-quantile by nearest rank: the upper bound of the bucket holding it, or the
    largest latency seen when that is lower (or when the rank is past the last bound)."""
    total = sum(buckets)
    if not total:
        return None
    rank = max(1, math.ceil(q * total))
    index = bisect_left(list(accumulate(buckets)), rank)
    bound = BOUNDS_MS[index] if index < len(BOUNDS_MS) else math.inf
    return round(float(min(bound, max_ms)), 1)


def status_class(status: int) -> str:
    return STATUS_CLASSES[min(max(status // 100, 1), 5) - 1]


@dataclass(slots=True)
class Tally:
    """What one tenant did in one minute, as the rollup row stores it."""

    requests: int = 0
    api_calls: int = 0
    client_errors: int = 0
    errors: int = 0
    buckets: list = field(default_factory=lambda: [0] * BUCKETS)
    sum_ms: float = 0.0
    max_ms: float = 0.0
    jobs_succeeded: int = 0
    jobs_failed: int = 0

    def add(self, status: int, ms: float, api: bool, index: int) -> None:
        self.requests += 1
        self.api_calls += api
        self.client_errors += 400 <= status < 500
        self.errors += status >= 500
        self.buckets[index] += 1
        self.sum_ms += ms
        if ms > self.max_ms:
            self.max_ms = ms

    def merge(self, other: "Tally") -> None:
        self.requests += other.requests
        self.api_calls += other.api_calls
        self.client_errors += other.client_errors
        self.errors += other.errors
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets)]
        self.sum_ms += other.sum_ms
        self.max_ms = max(self.max_ms, other.max_ms)
        self.jobs_succeeded += other.jobs_succeeded
        self.jobs_failed += other.jobs_failed


class Recorder:
    """The process's unflushed figures. Thread-safe; one flusher at a time."""

    def __init__(self):
        self.lock = threading.Lock()
        self.flush_lock = threading.Lock()
        self.tenants: dict[tuple[int, int], Tally] = {}
        self.fleet: dict[str, Tally] = {}
        self.next_flush_at = 0.0
        self.last_seen_sent: dict[int, float] = {}  # tenant -> monotonic time of its last write

    def record(self, tenant_id: int | None, status: int, ms: float, api: bool) -> None:
        index = bucket_of(ms)
        klass = status_class(status)
        minute = int(time.time()) // MINUTE * MINUTE
        with self.lock:
            fleet = self.fleet.get(klass)
            if fleet is None:
                fleet = self.fleet[klass] = Tally()
            fleet.add(status, ms, api, index)
            if tenant_id is not None:
                tally = self.tenants.get((tenant_id, minute))
                if tally is None:
                    tally = self.tenants[(tenant_id, minute)] = Tally()
                tally.add(status, ms, api, index)

    def record_job(self, tenant_id: int, succeeded: bool) -> None:
        """Count a finished workflow run (job) for the anomaly detector's job success."""
        minute = int(time.time()) // MINUTE * MINUTE
        with self.lock:
            tally = self.tenants.get((tenant_id, minute))
            if tally is None:
                tally = self.tenants[(tenant_id, minute)] = Tally()
            if succeeded:
                tally.jobs_succeeded += 1
            else:
                tally.jobs_failed += 1

    def drain(self) -> tuple[dict, dict]:
        with self.lock:
            tenants, self.tenants = self.tenants, {}
            fleet, self.fleet = self.fleet, {}
        return tenants, fleet

    def restore(self, tenants: dict | None = None, fleet: dict | None = None) -> None:
        """Put back figures a flush could not write (merged with what came in since)."""
        with self.lock:
            for table, figures in ((self.tenants, tenants or {}), (self.fleet, fleet or {})):
                for key, tally in figures.items():
                    if key in table:
                        table[key].merge(tally)
                    else:
                        table[key] = tally
            if len(self.tenants) > MAX_PENDING_TALLIES:  # the oldest minutes go first
                for key in sorted(self.tenants, key=lambda k: k[1])[:len(self.tenants) - MAX_PENDING_TALLIES]:
                    del self.tenants[key]
                logger.warning("metrics: database unreachable for long; oldest per-tenant minutes dropped")

    def claim_flush(self) -> bool:
        """True for the one caller that should flush now (then not again for an interval)."""
        now = time.monotonic()
        if now < self.next_flush_at:  # the common case, read without the lock
            return False
        with self.lock:
            if now < self.next_flush_at:
                return False
            self.next_flush_at = now + settings.LEVQOR_METRICS_FLUSH_SECONDS
            return True


recorder = Recorder()


def record_request(request, status: int, ms: float) -> None:
    """Count a finished request. Tenant API routes are attributed by the tenant middleware
    (refusals included); portal pages by the organization they were served for."""
    tenant_id = request.__dict__.get("metrics_tenant_id")
    api = tenant_id is not None
    if not api:
        tenant_id = getattr(request.__dict__.get("tenant"), "id", None)
    recorder.record(tenant_id, status, ms, api)


@receiver(request_finished, dispatch_uid="runtime.metrics.flush_when_due")
def flush_when_due(**kwargs) -> None:
    """After a response is handed to the server: write this process's figures if due."""
    if recorder.claim_flush():
        flush()


@task_postrun.connect(dispatch_uid="runtime.metrics.flush_after_task")
def flush_after_task(**kwargs) -> None:
    """After a Celery task: workers serve no requests, so the jobs they ran are written here."""
    if recorder.claim_flush():
        flush()


def record_job_finished(sender, instance, created: bool, update_fields=None, **kwargs) -> None:
    """post_save of a WorkflowRun (connected in RuntimeConfig.ready): count it in its
    tenant's rollup when it reached succeeded or failed in this save."""
    from tenants.context import current_tenant_or_none

    if instance.status not in ("succeeded", "failed") or not (created or update_fields is None
                                                               or "status" in update_fields):
        return
    ctx = current_tenant_or_none()
    if ctx is not None:
        recorder.record_job(ctx.id, instance.status == "succeeded")


# --- writing ---------------------------------------------------------------------------------

_COLUMNS = ("tenant_id, seconds, start, requests, api_calls, client_errors, errors, error_minutes, latency_buckets, "
            "latency_sum_ms, latency_max_ms, jobs_succeeded, jobs_failed, queue_depth")
# Adds a row to the stored one; `{error_minutes}` differs between a minute (0 or 1) and an hour.
_UPSERT_TAIL = """
ON CONFLICT (tenant_id, seconds, start) DO UPDATE SET
  requests = r.requests + EXCLUDED.requests,
  api_calls = r.api_calls + EXCLUDED.api_calls,
  client_errors = r.client_errors + EXCLUDED.client_errors,
  errors = r.errors + EXCLUDED.errors,
  error_minutes = {error_minutes},
  latency_buckets = (SELECT array_agg(a + b ORDER BY i) FROM unnest(r.latency_buckets, EXCLUDED.latency_buckets)
                     WITH ORDINALITY AS u(a, b, i)),
  latency_sum_ms = r.latency_sum_ms + EXCLUDED.latency_sum_ms,
  latency_max_ms = GREATEST(r.latency_max_ms, EXCLUDED.latency_max_ms),
  jobs_succeeded = r.jobs_succeeded + EXCLUDED.jobs_succeeded,
  jobs_failed = r.jobs_failed + EXCLUDED.jobs_failed,
  queue_depth = {queue_depth}
"""


def flush() -> int:
    """Write this process's figures. Returns the number of (tenant, minute) rows written."""
    with recorder.flush_lock:
        tenants, fleet = recorder.drain()
        written = 0
        if tenants:
            try:
                written = _write_rollups(tenants)
            except DatabaseError:
                logger.warning("metrics: could not write rollups; kept for the next flush", exc_info=True)
                recorder.restore(tenants=tenants)
        if fleet:
            try:
                _write_fleet(fleet)
            except redis.RedisError:
                logger.warning("metrics: Redis unavailable; fleet counters kept for the next flush")
                recorder.restore(fleet=fleet)
        return written


def _write_rollups(tenants: dict[tuple[int, int], Tally]) -> int:
    rows = sorted(tenants.items())  # one order for every process: concurrent upserts cannot deadlock
    params = []
    for (tenant_id, minute), t in rows:
        params += [tenant_id, MINUTE, datetime.fromtimestamp(minute, tz=dt_timezone.utc), t.requests, t.api_calls,
                   t.client_errors, t.errors, int(t.errors > 0), t.buckets, t.sum_ms, t.max_ms, t.jobs_succeeded,
                   t.jobs_failed, 0]
    values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s::bigint[], %s, %s, %s, %s, %s)"] * len(rows))
    sql = (f"INSERT INTO public.runtime_metric_rollups AS r ({_COLUMNS}) VALUES {values}"
           + _UPSERT_TAIL.format(error_minutes="GREATEST(r.error_minutes, EXCLUDED.error_minutes)",
                                 queue_depth="GREATEST(r.queue_depth, EXCLUDED.queue_depth)"))
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)
        _touch_last_seen(cursor, {tenant_id for tenant_id, _ in tenants})
    return len(rows)


def _touch_last_seen(cursor, tenant_ids: set[int]) -> None:
    """`last_seen_at` for hibernation: one write per tenant per LAST_SEEN_EVERY at most."""
    now = time.monotonic()
    due = sorted(t for t in tenant_ids if now - recorder.last_seen_sent.get(t, -math.inf) >= LAST_SEEN_EVERY)
    if not due:
        return
    seen = timezone.now()
    cursor.execute("UPDATE public.tenants SET last_seen_at = %s WHERE id = ANY(%s) "
                   "AND (last_seen_at IS NULL OR last_seen_at < %s)",
                   [seen, due, seen - timedelta(seconds=LAST_SEEN_EVERY)])
    hibernation.wake_seen(cursor, due)
    transaction.on_commit(lambda: recorder.last_seen_sent.update(dict.fromkeys(due, now)))


def _write_fleet(fleet: dict[str, Tally]) -> None:
    pipe = client().pipeline(transaction=False)
    for klass, t in fleet.items():
        for index, count in enumerate(t.buckets):
            if count:
                pipe.hincrby(FLEET_KEY, f"{klass}:b{index}", count)
        pipe.hincrby(FLEET_KEY, f"{klass}:count", t.requests)
        pipe.hincrbyfloat(FLEET_KEY, f"{klass}:sum_ms", t.sum_ms)
    pipe.execute()


def fleet_histogram() -> dict[str, dict]:
    """Every process's flushed figures since Redis last started: {class: {buckets, count, sum_ms}}."""
    raw = {k.decode(): v.decode() for k, v in client().hgetall(FLEET_KEY).items()}
    result = {}
    for klass in STATUS_CLASSES:
        if f"{klass}:count" not in raw:
            continue
        result[klass] = {"buckets": [int(raw.get(f"{klass}:b{i}", 0)) for i in range(BUCKETS)],
                         "count": int(raw[f"{klass}:count"]), "sum_ms": float(raw.get(f"{klass}:sum_ms", 0))}
    return result


# --- rolling minutes into hours --------------------------------------------------------------

_ROLLUP = f"""
WITH moved AS (
  DELETE FROM public.runtime_metric_rollups WHERE seconds = {MINUTE} AND start < %s RETURNING *
), hist AS (
  SELECT m.tenant_id, date_trunc('hour', m.start AT TIME ZONE 'UTC') AS hour, u.i, SUM(u.n) AS n
  FROM moved m, unnest(m.latency_buckets) WITH ORDINALITY AS u(n, i) GROUP BY 1, 2, 3
), hours AS (
  SELECT tenant_id, hour, array_agg(n ORDER BY i)::bigint[] AS latency_buckets FROM hist GROUP BY 1, 2
)
INSERT INTO public.runtime_metric_rollups AS r ({_COLUMNS})
SELECT m.tenant_id, {HOUR}, h.hour AT TIME ZONE 'UTC', SUM(m.requests), SUM(m.api_calls), SUM(m.client_errors),
       SUM(m.errors), SUM(m.error_minutes), h.latency_buckets, SUM(m.latency_sum_ms), MAX(m.latency_max_ms),
       SUM(m.jobs_succeeded), SUM(m.jobs_failed), MAX(m.queue_depth)
FROM moved m JOIN hours h ON h.tenant_id = m.tenant_id AND h.hour = date_trunc('hour', m.start AT TIME ZONE 'UTC')
GROUP BY m.tenant_id, h.hour, h.latency_buckets
ORDER BY 1, 3
"""


def rollup_minutes(*, now: datetime | None = None) -> dict:
    """Fold minute rows of whole hours older than the retention into hourly rows (adding to
    any already there: a late flush is counted, not lost), and drop hourly rows past theirs."""
    now = now or timezone.now()
    minute_cutoff = (now - timedelta(hours=settings.LEVQOR_METRICS_MINUTE_RETENTION_HOURS)).replace(
        minute=0, second=0, microsecond=0)
    hour_cutoff = now - timedelta(days=settings.LEVQOR_METRICS_HOUR_RETENTION_DAYS)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_ROLLUP + _UPSERT_TAIL.format(error_minutes="r.error_minutes + EXCLUDED.error_minutes",
                                                     queue_depth="GREATEST(r.queue_depth, EXCLUDED.queue_depth)"),
                       [minute_cutoff])
        hours = cursor.rowcount
        cursor.execute(f"DELETE FROM public.runtime_metric_rollups WHERE seconds = {HOUR} AND start < %s",
                       [hour_cutoff])
        expired = cursor.rowcount
    return {"hours_written": hours, "hours_expired": expired}


# --- reading -----------------------------------------------------------------------------------


def summarize(rows) -> dict:
    """Totals, error rate and p95 of rollup rows (minutes, hours, or both)."""
    total = Tally()
    error_minutes = 0
    for row in rows:
        total.merge(Tally(requests=row.requests, api_calls=row.api_calls, client_errors=row.client_errors,
                          errors=row.errors, buckets=list(row.latency_buckets), sum_ms=row.latency_sum_ms,
                          max_ms=row.latency_max_ms))
        error_minutes += row.error_minutes
    return {"requests": total.requests, "api_calls": total.api_calls, "client_errors": total.client_errors,
            "errors": total.errors, "error_rate": round(total.errors / total.requests, 4) if total.requests else None,
            "p95_ms": percentile_ms(total.buckets, total.max_ms), "error_minutes": error_minutes}


def window_bounds(minutes: int, now: datetime | None = None) -> tuple[datetime, datetime]:
    """The last `minutes` minutes, the current one included: [since, until)."""
    now = now or timezone.now()
    until = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return until - timedelta(minutes=minutes), until


def tenant_window(minutes: int, now: datetime | None = None) -> dict:
    """The current tenant's figures over its last `minutes` minutes, with a per-minute series
    (minutes without traffic included, as zeros). Needs a tenant context."""
    from runtime.models import MetricRollup

    since, until = window_bounds(minutes, now)
    rows = list(MetricRollup.objects.filter(seconds=MINUTE, start__gte=since, start__lt=until).order_by("start"))
    by_minute = {row.start: row for row in rows}
    series = []
    for i in range(minutes):
        minute = since + timedelta(minutes=i)
        row = by_minute.get(minute)
        series.append({"minute": minute.isoformat(), "requests": row.requests if row else 0,
                       "errors": row.errors if row else 0,
                       "p95_ms": percentile_ms(row.latency_buckets, row.latency_max_ms) if row else None})
    return {"since": since, "until": until, **summarize(rows), "series": series}


def period_rollups(since: datetime, until: datetime):
    """Every tenant's rollup rows (hourly and minute) starting in [since, until). Platform code."""
    from runtime.models import MetricRollup

    return MetricRollup.dangerously_all_tenants.filter(start__gte=since, start__lt=until)


def job_counts(since: datetime, until: datetime | None = None) -> dict:
    """The current tenant's finished workflow runs (jobs) started in the period, read from its
    own tables (schema or database): {succeeded, failed, success_rate}."""
    from django.db.models import Count

    from workflows.models import WorkflowRun

    runs = WorkflowRun.objects.filter(created_at__gte=since, status__in=[WorkflowRun.Status.SUCCEEDED,
                                                                          WorkflowRun.Status.FAILED])
    if until is not None:
        runs = runs.filter(created_at__lt=until)
    counts = dict(runs.order_by().values_list("status").annotate(n=Count("pk")))
    succeeded, failed = counts.get(WorkflowRun.Status.SUCCEEDED, 0), counts.get(WorkflowRun.Status.FAILED, 0)
    finished = succeeded + failed
    return {"succeeded": succeeded, "failed": failed,
            "success_rate": round(succeeded / finished, 4) if finished else None}
