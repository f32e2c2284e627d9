"""Autoscale caps per plan (spec section 17): a tenant's worker pool and its share of the
task queue. A tenant at its cap queues instead of growing.

Two limits of the plan (policy/policies.json):
- `worker_pool_max`: how many of the tenant's tasks may run at once. The pool starts at
  one slot and grows by one when a task starts and finds every slot busy, up to the cap
  (autoscaling). At the cap the task is not run: it goes back to the tenant's holding
  list (below) and is sent again when a slot frees. The release beat task shrinks an
  idle pool back to what is running. Slots are leases (LEVQOR_POOL_SLOT_SECONDS, at
  least a task's time limit) so a worker that dies holding one frees it by itself.
- `queue_share`: a percent of LEVQOR_QUEUE_CAPACITY: how many of the tenant's tasks may
  wait in the shared broker queue at once. Past it, and whenever the tenant already has
  tasks held, a new task goes to the tenant's own holding list in Redis instead, oldest
  first out.

Held tasks are sent when there is room in both: the tenant's waiting tasks under its
share, and waiting plus running under its pool cap (so a released task finds a slot).
That happens when one of its tasks finishes, and every 10 s from the beat task, which
also re-counts the waiting tasks from the broker (runtime/queues.py) when the scan is
exact, so a count that drifted (a purged queue) mends itself.

Where it applies: tenant tasks (tenants/tasks_base.py) dispatched with `delay_for` /
`apply_for` and run by any worker; the hook is registered by RuntimeConfig.ready. The
pool is a concurrency allowance on the workers; with LEVQOR_DEDICATED_QUEUES on, tenants
with the `dedicated_workers` feature have their tasks sent to their own queue, `tenant-<id>`,
served by their own workers (docs/deploy.md), with the same accounting inside it.
"""
from __future__ import annotations

import json
import logging
import math
import time
import uuid

import redis
from django.conf import settings

from levqor.redis import client as redis_client

logger = logging.getLogger(__name__)
HELD_TENANTS = "levqor:cap:held-tenants"
DEFAULT_POOL_MAX = 1
DEFAULT_QUEUE_SHARE = 5
KEPT_OPTIONS = ("queue", "priority")  # apply_async options a held task keeps (JSON-able ones)


def redis_key(tenant_id: int, what: str) -> str:
    """The Redis key of one of a tenant's counters: `slots`, `pool`, `queued` or `held` (auto-heal reads them)."""
    return f"levqor:cap:{tenant_id}:{what}"


def limits_of(tenant_id: int) -> dict:
    """{"worker_pool_max", "queue_cap", "queue"} of the tenant's plan; `queue` is its
    dedicated Celery queue, or None for the shared one."""
    from policy.plans import plan_limits
    from tenants import hotcache

    tenant, _ = hotcache.tenant_for("id", tenant_id)  # per process, dropped on any tenancy change
    plan = tenant.plan if tenant is not None else ""
    limits = plan_limits(plan)
    share = limits.get("queue_share", DEFAULT_QUEUE_SHARE)
    return {"worker_pool_max": max(1, int(limits.get("worker_pool_max", DEFAULT_POOL_MAX))),
            "queue_cap": max(1, math.floor(settings.LEVQOR_QUEUE_CAPACITY * share / 100)),
            "queue": dedicated_queue(tenant_id, plan)}


def dedicated_queue(tenant_id: int, plan: str) -> str | None:
    """`tenant-<id>` for a plan with `dedicated_workers` when LEVQOR_DEDICATED_QUEUES is on."""
    from policy.plans import plan_has

    if settings.LEVQOR_DEDICATED_QUEUES and plan_has(plan, "dedicated_workers"):
        return f"tenant-{tenant_id}"
    return None


# --- dispatch: the shared queue, or the tenant's holding list -------------------------------

# KEYS: queued counter, held list, held-tenants set. ARGV: queue cap, message, tenant id.
_ADMIT = """
if redis.call('LLEN', KEYS[2]) == 0 and tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then
  redis.call('INCR', KEYS[1])
  return 1
end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[3])
return 0
"""


def _message(task, args, kwargs: dict, options: dict) -> str:
    return json.dumps({"task": task.name, "args": list(args), "kwargs": kwargs,
                       "options": {k: v for k, v in options.items() if k in KEPT_OPTIONS}})


def dispatch(task, tenant_id: int, args=(), kwargs: dict | None = None, **options):
    """Send the tenant's task now, or hold it (module docstring). Returns the AsyncResult,
    or None when the task was held."""
    kwargs = {**(kwargs or {}), "tenant_id": tenant_id}
    caps = limits_of(tenant_id)
    if caps["queue"]:
        options = {**options, "queue": caps["queue"]}  # its own workers, whatever the caller named
    try:
        sent_now = redis_client().register_script(_ADMIT)(
            keys=[redis_key(tenant_id, "queued"), redis_key(tenant_id, "held"), HELD_TENANTS],
            args=[caps["queue_cap"], _message(task, args, kwargs, options), tenant_id])
    except redis.RedisError:
        logger.warning("capacity: Redis unavailable, sending tenant %s's task without its cap", tenant_id)
        sent_now = 1
    if not sent_now:
        logger.info("tenant %s at its queue share (%s): %s held", tenant_id, caps["queue_cap"], task.name)
        return None
    try:
        return _apply(task, args, kwargs, options)
    except Exception:
        _decrement(redis_key(tenant_id, "queued"))
        raise


def _apply(task, args, kwargs: dict, options: dict):
    """apply_async to the broker named by settings.CELERY_BROKER_URL now (the one
    runtime/queues.py counts), which is the Celery app's own unless it was changed since."""
    from contextlib import nullcontext

    url = settings.CELERY_BROKER_URL
    if "connection" in options or url == task.app.conf.broker_url:
        return task.apply_async(args=args, kwargs=kwargs, **options)
    with task.app.connection_for_write(url) if url else nullcontext() as connection:
        return task.apply_async(args=args, kwargs=kwargs, connection=connection, **options)


def _decrement(key: str) -> None:
    with _quiet():
        if redis_client().decr(key) < 0:
            redis_client().set(key, 0)


class _quiet:
    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and issubclass(exc_type, redis.RedisError):
            logger.warning("capacity: Redis unavailable: %s", exc)
            return True
        return False


# --- running: the worker pool ----------------------------------------------------------------

# KEYS: slots zset, pool size, queued counter. ARGV: now, lease end, token, cap.
_ACQUIRE = """
local q = tonumber(redis.call('GET', KEYS[3]) or '0')
if q > 0 then redis.call('DECR', KEYS[3]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local running = redis.call('ZCARD', KEYS[1])
local cap = tonumber(ARGV[4])
local size = math.min(tonumber(redis.call('GET', KEYS[2]) or '1'), cap)
if running < size then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
  return {1, size}
end
if size < cap then
  size = size + 1
  redis.call('SET', KEYS[2], size)
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
  return {2, size}
end
return {0, size}
"""

# KEYS: held list, held-tenants set. ARGV: message, tenant id.
_HOLD_FIRST = """
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
return 1
"""


def start(task, tenant_id: int, args, kwargs: dict) -> str | None:
    """A tenant task is about to run: take a slot of the tenant's pool (growing it within
    the cap) and return its token; or, at the cap, put the task back at the head of the
    tenant's holding list and return None (the caller must not run it)."""
    caps = limits_of(tenant_id)
    token = uuid.uuid4().hex
    now = time.time()
    try:
        taken, size = redis_client().register_script(_ACQUIRE)(
            keys=[redis_key(tenant_id, "slots"), redis_key(tenant_id, "pool"), redis_key(tenant_id, "queued")],
            args=[now, now + settings.LEVQOR_POOL_SLOT_SECONDS, token, caps["worker_pool_max"]])
    except redis.RedisError:
        logger.warning("capacity: Redis unavailable, running tenant %s's task without its cap", tenant_id)
        return token
    if taken == 2:
        logger.info("tenant %s's worker pool grew to %s (cap %s)", tenant_id, size, caps["worker_pool_max"])
    if taken:
        return token
    logger.info("tenant %s's worker pool is at its cap (%s): %s waits", tenant_id, size, task.name)
    queue = (getattr(task.request, "delivery_info", None) or {}).get("routing_key")  # back to the queue it came from
    with _quiet():
        redis_client().register_script(_HOLD_FIRST)(
            keys=[redis_key(tenant_id, "held"), HELD_TENANTS],
            args=[_message(task, args, {**kwargs, "tenant_id": tenant_id}, {"queue": queue} if queue else {}),
                  tenant_id])
    return None


def finish(tenant_id: int, token: str) -> None:
    """The task ended (however): free its slot and send what the tenant has waiting."""
    with _quiet():
        redis_client().zrem(redis_key(tenant_id, "slots"), token)
    try:
        release(tenant_id)
    except Exception:  # the beat task sends it within 10 s
        logger.warning("capacity: could not release tenant %s's held tasks", tenant_id, exc_info=True)


# --- release ---------------------------------------------------------------------------------

# KEYS: held list, queued counter, slots zset, held-tenants set. ARGV: queue cap, pool cap, now, tenant id.
_TAKE = """
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[3])
local queued = tonumber(redis.call('GET', KEYS[2]) or '0')
if queued >= tonumber(ARGV[1]) or queued + redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[2]) then return false end
local message = redis.call('LPOP', KEYS[1])
if not message then
  redis.call('SREM', KEYS[4], ARGV[4])
  return false
end
redis.call('INCR', KEYS[2])
return message
"""


def release(tenant_id: int, *, connection=None) -> int:
    """Send the tenant's held tasks while it has room (module docstring). Returns how many."""
    from celery import current_app

    caps = limits_of(tenant_id)
    r = redis_client()
    take = r.register_script(_TAKE)
    keys = [redis_key(tenant_id, "held"), redis_key(tenant_id, "queued"), redis_key(tenant_id, "slots"), HELD_TENANTS]
    sent = 0
    while True:
        raw = take(keys=keys, args=[caps["queue_cap"], caps["worker_pool_max"], time.time(), tenant_id])
        if not raw:
            return sent
        message = json.loads(raw)
        options = dict(message.get("options") or {})
        if connection is not None:
            options["connection"] = connection
        try:
            _apply(current_app.tasks[message["task"]], message["args"], message["kwargs"], options)
        except Exception:
            r.lpush(keys[0], raw)  # back at the head, sent on the next release
            _decrement(keys[1])
            raise
        sent += 1


def release_all(*, connection=None) -> int:
    """Every tenant with held tasks (the beat task), after re-counting waiting tasks from
    the broker; idle pools shrink back to what runs."""
    from runtime import queues

    r = redis_client()
    counts, exact = queues.tenant_counts()
    sent = 0
    for raw in r.smembers(HELD_TENANTS):
        tenant_id = int(raw)
        if exact:
            r.set(redis_key(tenant_id, "queued"), counts.get(tenant_id, 0))
        sent += release(tenant_id, connection=connection)
    for key in r.scan_iter("levqor:cap:*:pool"):
        tenant_id = int(key.decode().split(":")[2])
        r.zremrangebyscore(redis_key(tenant_id, "slots"), "-inf", time.time())
        if not r.llen(redis_key(tenant_id, "held")):
            running = r.zcard(redis_key(tenant_id, "slots"))
            r.set(key, max(1, running))
    return sent


# --- reading and auto-heal -------------------------------------------------------------------


def pool_status(tenant_id: int) -> dict:
    """The tenant's pool and queue share now."""
    r = redis_client()
    r.zremrangebyscore(redis_key(tenant_id, "slots"), "-inf", time.time())
    caps = limits_of(tenant_id)
    return {"size": min(int(r.get(redis_key(tenant_id, "pool")) or 1), caps["worker_pool_max"]),
            "running": r.zcard(redis_key(tenant_id, "slots")), "worker_pool_max": caps["worker_pool_max"],
            "queued": int(r.get(redis_key(tenant_id, "queued")) or 0), "held": r.llen(redis_key(tenant_id, "held")),
            "queue_cap": caps["queue_cap"]}


def scale_pool(tenant_id: int, size: int) -> int:
    """Set the tenant's pool size, clamped to 1..its plan's cap. Returns the size set."""
    size = max(1, min(int(size), limits_of(tenant_id)["worker_pool_max"]))
    redis_client().set(redis_key(tenant_id, "pool"), size)
    return size


def shrink_pool(tenant_id: int) -> None:
    """Back to one slot, keeping the leases of tasks still running (hibernation)."""
    redis_client().delete(redis_key(tenant_id, "pool"))


def reset_pool(tenant_id: int) -> int:
    """Restart the tenant's pool: drop every slot lease (tasks stuck holding one), back to
    one slot, and send what waits. Returns how many tasks were sent."""
    redis_client().delete(redis_key(tenant_id, "slots"), redis_key(tenant_id, "pool"))
    return release(tenant_id)


def register() -> None:
    import sys

    from tenants import tasks_base

    tasks_base.register_gate(sys.modules[__name__])
