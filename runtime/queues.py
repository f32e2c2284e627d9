"""Celery queue depth, read from the Redis broker.

What it measures: tasks waiting in the broker's lists (LEVQOR_METRICS_QUEUES, each with
kombu's priority lists), not tasks a worker has already taken (prefetched or running).
A task belongs to a tenant only when it carries one: tenant tasks (tenants.tasks_base)
travel with a `tenant_id` keyword; platform tasks (stream delivery, alert delivery,
sweeps) count for the fleet only. Finding a tenant's tasks means reading messages, so at
most SCAN_LIMIT messages per list are read, and the per-tenant figure is a lower bound
when a list is longer (`exact` says which).
"""
from __future__ import annotations

import base64
import json
import threading
import time
from functools import lru_cache

import redis
from django.conf import settings

SCAN_LIMIT = 1000
CACHE_SECONDS = 5.0  # one scan serves every tenant's metrics call for this long
PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")  # kombu's Redis priority lists

_cache_lock = threading.Lock()
_cache: dict = {"at": -CACHE_SECONDS, "tenants": {}, "exact": True}


@lru_cache(maxsize=4)
def _broker(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def _broker_client() -> redis.Redis | None:
    url = settings.CELERY_BROKER_URL
    return _broker(url) if url.startswith(("redis://", "rediss://", "unix://")) else None


def _queues(broker) -> list[str]:
    """LEVQOR_METRICS_QUEUES, and the tenants' dedicated queues (`tenant-<id>`) when on."""
    queues = list(settings.LEVQOR_METRICS_QUEUES)
    if settings.LEVQOR_DEDICATED_QUEUES:
        found = {key.decode().split("\x06")[0] for key in broker.scan_iter(match="tenant-*", count=500)}
        queues += sorted(q for q in found if q[len("tenant-"):].isdigit())
    return queues


def queue_lengths() -> dict[str, int] | None:
    """Waiting tasks per queue (all priorities), or None when the broker is not Redis or down."""
    broker = _broker_client()
    if broker is None:
        return None
    try:
        queues = _queues(broker)
        pipe = broker.pipeline(transaction=False)
        for queue in queues:
            for suffix in PRIORITY_SUFFIXES:
                pipe.llen(queue + suffix)
        sizes = pipe.execute()
    except redis.RedisError:
        return None
    n = len(PRIORITY_SUFFIXES)
    return {queue: sum(sizes[i * n:(i + 1) * n]) for i, queue in enumerate(queues)}


def tenant_of(raw: bytes) -> int | None:
    """The `tenant_id` keyword of a Celery (protocol 2) message, if it has one."""
    try:
        message = json.loads(raw)
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        _, kwargs, _ = json.loads(body)
        tenant_id = kwargs.get("tenant_id")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return tenant_id if isinstance(tenant_id, int) else None


def _scan() -> tuple[dict[int, int], bool]:
    broker = _broker_client()
    counts: dict[int, int] = {}
    exact = True
    if broker is None:
        return counts, False
    try:
        for queue in _queues(broker):
            for suffix in PRIORITY_SUFFIXES:
                key = queue + suffix
                messages = broker.lrange(key, 0, SCAN_LIMIT - 1)
                exact = exact and len(messages) < SCAN_LIMIT
                for raw in messages:
                    tenant_id = tenant_of(raw)
                    if tenant_id is not None:
                        counts[tenant_id] = counts.get(tenant_id, 0) + 1
    except redis.RedisError:
        return {}, False
    return counts, exact


def tenant_queue_depth(tenant_id: int) -> tuple[int, bool]:
    """(waiting tasks carrying this tenant, whether that count is exact)."""
    now = time.monotonic()
    with _cache_lock:
        if now - _cache["at"] >= CACHE_SECONDS:
            _cache["tenants"], _cache["exact"] = _scan()
            _cache["at"] = now
        return _cache["tenants"].get(tenant_id, 0), _cache["exact"]


def tenant_counts() -> tuple[dict[int, int], bool]:
    """A fresh scan: each tenant's waiting tasks, and whether the counts are exact. It also
    refreshes what tenant_queue_depth() serves."""
    counts, exact = _scan()
    with _cache_lock:
        _cache.update(tenants=counts, exact=exact, at=time.monotonic())
    return counts, exact


def forget() -> None:
    """Drop the cached scan (tests, and after changing the queues)."""
    with _cache_lock:
        _cache["at"] = -CACHE_SECONDS
