"""Real-time quotas, metering counters and the per-tenant rate limit.

One Redis round trip per metered request (a Lua script) does three things atomically:

1. the tenant's token bucket (noisy neighbour): `rate_per_second` tokens a second, bursts
   up to twice that; empty -> 429 `rate_limited`;
2. the period quota: the plan's limit for the metric against this period's total;
   at 100 % -> 429 `quota_exceeded` with Retry-After until the period ends;
3. the counters: the period total (what quotas read) and a *pending* counter (what has
   not reached PostgreSQL yet).

`flush()` moves pending counts into `usage_counters` exactly once: the pending hash is
renamed to an in-flight key, added to PostgreSQL together with a `usage_flushes` row
named after that key, and only then deleted; an in-flight key left by a crash is
re-applied or dropped by the next flush according to that row. So a worker killed
between increment and flush loses nothing, and a flush killed midway never counts twice.
The period total survives a Redis restart with Redis' append-only file (required in
production); without it, a missing total is rebuilt from PostgreSQL plus pending counts.
If Redis is down, requests are served and counted in process memory, and pushed to
Redis when it is back.

Crossing 80 % of a limit writes `quota.warning` to the audit trail and raises one alert
per metric and period; reaching 100 % raises a `quota.exceeded` alert once.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone as dt_timezone

import redis
from django.db import connection, transaction
from django.utils import timezone

from levqor.faults import fault_point
from levqor.redis import call, client, receive, send, thread_connection
from tenants.hotcache import GENERATION_KEY

logger = logging.getLogger(__name__)

METRICS = ("api_calls", "jobs")
WARN_AT = 0.8
BURST_FACTOR = 2

# KEYS: bucket, total, pending, generation    ARGV: now_ms, rate, burst, limit, n, metric
# Returns {code, extra, generation}; the tenancy generation rides along for tenants/hotcache.py.
# Seven commands, each needed on every request: the generation and the total in one MGET;
# the total's TTL is set where it is created (_seed_total, _push_local_buffer) and an
# INCRBY keeps it, so the script does not set it again; the bucket's PEXPIRE stays (an idle
# tenant's bucket is dropped a minute after its last request).
_HIT = """
local v = redis.call('MGET', KEYS[4], KEYS[2])
local gen = tonumber(v[1]) or 0
local now = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
local n = tonumber(ARGV[5])
if rate > 0 then
  local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
  local tokens = tonumber(b[1]) or burst
  local ts = tonumber(b[2]) or now
  tokens = math.min(burst, tokens + (now - ts) * rate / 1000)
  if tokens < 1 then
    redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
    redis.call('PEXPIRE', KEYS[1], 60000)
    return {-1, math.ceil((1 - tokens) * 1000 / rate), gen}
  end
  redis.call('HSET', KEYS[1], 'tokens', tokens - 1, 'ts', now)
  redis.call('PEXPIRE', KEYS[1], 60000)
end
if not v[2] then
  return {-3, 0, gen}
end
if limit >= 0 then
  local used = tonumber(v[2])
  if used + n > limit then
    return {-2, used, gen}
  end
end
local total = redis.call('INCRBY', KEYS[2], n)
redis.call('HINCRBY', KEYS[3], ARGV[6], n)
return {total, 0, gen}
"""
_HIT_SHA = hashlib.sha1(_HIT.encode()).hexdigest()


@dataclass(frozen=True)
class Outcome:
    allowed: bool
    code: str = ""  # "rate_limited" | "quota_exceeded"
    used: int = 0
    limit: int | None = None
    retry_after: int = 0
    rationale: str = ""
    generation: int | None = None  # tenancy generation seen (tenants/hotcache.py)


def period_of(now: datetime | None = None) -> str:
    now = now or timezone.now()
    return now.astimezone(dt_timezone.utc).strftime("%Y%m")


def period_end(period: str) -> datetime:
    year, month = int(period[:4]), int(period[4:])
    year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return datetime(year, month, 1, tzinfo=dt_timezone.utc)


@dataclass(frozen=True)
class _Month:
    name: str  # the period, as period_of() names it
    start: float  # epoch seconds
    end: float


_month: _Month | None = None


def _month_at(ts: float) -> _Month:
    """The period holding epoch second `ts`, remembered until it is over: every request
    needs it, and datetime arithmetic with strftime cost ~40 µs of a request in place."""
    global _month
    month = _month
    if month is None or not month.start <= ts < month.end:
        at = datetime.fromtimestamp(ts, dt_timezone.utc)
        name = period_of(at)
        start = datetime(at.year, at.month, 1, tzinfo=dt_timezone.utc).timestamp()
        month = _month = _Month(name, start, period_end(name).timestamp())
    return month


def _keys(tenant_id: int, metric: str, period: str) -> tuple[str, str, str, str]:
    return (f"levqor:bucket:{tenant_id}", f"levqor:usage:{tenant_id}:{metric}:{period}",
            f"levqor:pending:{period}:{tenant_id}", GENERATION_KEY)


class _LocalBuffer:
    """Counts taken while Redis is unreachable; pushed to Redis once it answers."""

    def __init__(self):
        self.lock = threading.Lock()
        self.deltas: dict[tuple[int, str, str], int] = {}

    def add(self, tenant_id: int, metric: str, period: str, n: int) -> int:
        with self.lock:
            key = (tenant_id, metric, period)
            self.deltas[key] = self.deltas.get(key, 0) + n
            return self.deltas[key]

    def drain(self) -> dict:
        if not self.deltas:  # the usual case, checked without the lock: a count added meanwhile waits one request
            return {}
        with self.lock:
            deltas, self.deltas = self.deltas, {}
            return deltas

    def restore(self, deltas: dict) -> None:
        with self.lock:
            for key, n in deltas.items():
                self.deltas[key] = self.deltas.get(key, 0) + n


local_buffer = _LocalBuffer()


def _hit(keys: tuple, args: list, while_waiting=None) -> list:
    """Run the script on this thread's connection (levqor/redis.py says why not the pool's),
    loading it first into a server that lacks it (new, restarted or flushed).

    `while_waiting` runs between sending the script and reading its reply: work the
    request needs next in any case and that depends on nothing the script decides (see
    policy/permissions.py), so that its round trip overlaps the script's."""
    conn = thread_connection()
    command = ("EVALSHA", _HIT_SHA, len(keys), *keys, *args)
    send(conn, *command)
    try:
        if while_waiting is not None:
            while_waiting()
    finally:
        try:
            reply = receive(conn)
        except redis.exceptions.NoScriptError:  # nothing ran: load the script, send it again
            client().script_load(_HIT)
            reply = call(conn, *command)
    return reply


def ledger_total(tenant_id: int, metric: str, period: str) -> int:
    from policy.models import UsageCounter

    return UsageCounter.dangerously_all_tenants.filter(tenant_id=tenant_id, metric=metric, period=period).values_list(
        "count", flat=True).first() or 0


def _seed_total(tenant_id: int, metric: str, period: str) -> None:
    """Rebuild a missing period total: flushed ledger + counts still pending in Redis."""
    _, total_key, pending_key, _ = _keys(tenant_id, metric, period)
    r = client()
    pending = int(r.hget(pending_key, metric) or 0)
    inflight = sum(int(r.hget(key, metric) or 0) for key in r.scan_iter(f"levqor:inflight:{period}:{tenant_id}:*"))
    r.set(total_key, ledger_total(tenant_id, metric, period) + pending + inflight, nx=True,
          ex=int((period_end(period) - timezone.now()).total_seconds()) + 40 * 86400)


def consume(*, tenant_id: int, metric: str, limits: dict, n: int = 1, rate_limit: bool = True,
            while_waiting=None) -> Outcome:
    """Count `n` of `metric` for the tenant if its rate limit and quota allow it.

    `while_waiting`: see _hit(); run once, with the first attempt."""
    now = time.time()
    month = _month_at(now)
    period = month.name
    limit = limits.get(metric)
    rate = limits.get("rate_per_second", 0) if rate_limit else 0
    keys = _keys(tenant_id, metric, period)
    args = [int(now * 1000), rate, rate * BURST_FACTOR, -1 if limit is None else limit, n, metric]
    try:
        _push_local_buffer()
        for _ in range(2):
            result = _hit(keys, args, while_waiting)
            while_waiting = None
            if result[0] != -3:
                break
            _seed_total(tenant_id, metric, period)
    except redis.RedisError:
        logger.warning("Redis unavailable: counting %s for tenant %s locally", metric, tenant_id)
        local_buffer.add(tenant_id, metric, period, n)
        return Outcome(allowed=True, limit=limit)
    code, extra, generation = int(result[0]), int(result[1]), int(result[2])
    if code == -1:
        retry = max(1, -(-extra // 1000))
        return Outcome(False, "rate_limited", limit=limit, retry_after=retry, generation=generation,
                       rationale=f"rate limit of {rate} requests/second exceeded")
    if code == -2:
        retry = max(1, int(month.end - now))
        _threshold_crossed(tenant_id, metric, period, extra, limit, "exceeded")
        return Outcome(False, "quota_exceeded", used=extra, limit=limit, retry_after=retry, generation=generation,
                       rationale=f"{metric} {extra}/{limit} used this period")
    used = code
    if limit and used - n < WARN_AT * limit <= used:
        _threshold_crossed(tenant_id, metric, period, used, limit, "warning")
    return Outcome(True, used=used, limit=limit, generation=generation)


def _threshold_crossed(tenant_id: int, metric: str, period: str, used: int, limit: int, level: str) -> None:
    """Record the 80 % warning / 100 % breach once per tenant, metric and period."""
    marker = f"levqor:quota-{level}:{tenant_id}:{metric}:{period}"
    try:
        first = client().set(marker, 1, nx=True, ex=int((period_end(period) - timezone.now()).total_seconds()) + 86400)
    except redis.RedisError:
        return
    if not first:
        return
    from compliance import audit
    from compliance.alerts import alert_raise

    percent = int(used * 100 / limit) if limit else 100
    message = f"{metric} at {percent}% of the plan's {limit} this period"
    try:
        with transaction.atomic():
            if level == "warning":
                audit.record("quota.warning", tenant_id=tenant_id, actor="system:quota",
                             metadata={"metric": metric, "used": used, "limit": limit, "period": period})
            alert_raise(kind=f"quota.{level}", tenant_id=tenant_id, message=message,
                        severity="warning" if level == "warning" else "critical",
                        metadata={"metric": metric, "used": used, "limit": limit, "period": period},
                        dedupe_key=f"{tenant_id}:{metric}:{period}")
    except Exception:
        client().delete(marker)  # let the next request try again
        raise


# KEYS: total, pending    ARGV: metric, n
_PUSH = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('INCRBY', KEYS[1], ARGV[2])
end
redis.call('HINCRBY', KEYS[2], ARGV[1], ARGV[2])
"""


def _push_local_buffer() -> None:
    deltas = local_buffer.drain()
    if not deltas:
        return
    try:
        r = client()
        pipe = r.pipeline()
        for (tenant_id, metric, period), n in deltas.items():
            _, total_key, pending_key, _ = _keys(tenant_id, metric, period)
            # Onto the total only if it is there: one missing (Redis restarted without its
            # append-only file) is rebuilt by _seed_total from the ledger plus pending,
            # which this count is now part of.
            pipe.eval(_PUSH, 2, total_key, pending_key, metric, n)
        pipe.execute()
    except redis.RedisError:
        local_buffer.restore(deltas)
        raise


def used_in(tenant_id: int, metric: str, period: str) -> int:
    """A period's count as of now: Redis's running total, else (Redis down, or the period
    long over and its keys expired) the PostgreSQL ledger."""
    _, total_key, _, _ = _keys(tenant_id, metric, period)
    try:
        raw = client().get(total_key)
    except redis.RedisError:
        raw = None
    return int(raw) if raw is not None else ledger_total(tenant_id, metric, period)


def usage(tenant_id: int, limits: dict, period: str | None = None) -> dict:
    """This period's counts against the plan's limits."""
    period = period or period_of()
    result = {}
    for metric in METRICS:
        used = used_in(tenant_id, metric, period)
        limit = limits.get(metric)
        result[metric] = {"used": used, "limit": limit,
                          "percent": round(used * 100 / limit, 1) if limit else None}
    return {"period": period, "period_end": period_end(period).isoformat(), "metrics": result}


# --- flushing to PostgreSQL -------------------------------------------------------------


def flush(period: str | None = None) -> int:
    """Move pending counts of `period` (default: current and previous) into PostgreSQL.

    Returns the number of counts moved. Safe to run concurrently and after a crash.
    """
    periods = [period] if period else _recent_periods()
    moved = 0
    r = client()
    for p in periods:
        for key in list(r.scan_iter(f"levqor:inflight:{p}:*")):
            moved += _apply_inflight(key)
        for pending_key in list(r.scan_iter(f"levqor:pending:{p}:*")):
            tenant_id = pending_key.decode().rsplit(":", 1)[1]
            inflight = f"levqor:inflight:{p}:{tenant_id}:{uuid.uuid4().hex}"
            try:
                r.rename(pending_key, inflight)
            except redis.ResponseError:  # another flusher took it
                continue
            fault_point("usage.flush.after_rename")
            moved += _apply_inflight(inflight.encode())
    return moved


def _recent_periods() -> list[str]:
    now = timezone.now()
    previous = (now.replace(day=1) - timezone.timedelta(days=1))
    return [period_of(previous), period_of(now)]


def _apply_inflight(key: bytes) -> int:
    from policy.models import UsageFlush

    r = client()
    name = key.decode()
    _, _, period, tenant_id, flush_id = name.split(":")
    counts = {field.decode(): int(value) for field, value in r.hgetall(name).items()}
    moved = 0
    with transaction.atomic():
        if not UsageFlush.objects.filter(flush_id=flush_id).exists():
            UsageFlush.objects.create(flush_id=flush_id, tenant_id=int(tenant_id), period=period, counts=counts)
            with connection.cursor() as cursor:
                for metric, n in counts.items():
                    cursor.execute(
                        "INSERT INTO usage_counters (tenant_id, metric, period, count, updated_at) "
                        "VALUES (%s, %s, %s, %s, now()) ON CONFLICT (tenant_id, metric, period) "
                        "DO UPDATE SET count = usage_counters.count + EXCLUDED.count, updated_at = now()",
                        [int(tenant_id), metric, period, n],
                    )
                    moved += n
    fault_point("usage.flush.after_commit")
    r.delete(name)
    return moved
