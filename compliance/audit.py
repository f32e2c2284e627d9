"""Appending to a tenant's audit trail.

Each tenant's events form a hash chain: a row's hash covers its content and the
previous row's hash, and `seq` is unique per tenant, so concurrent writers serialize on
a per-tenant advisory lock and the chain cannot fork. Call `record()` inside the
transaction of the change it records: both commit or neither does.
"""
from __future__ import annotations

import contextvars
import hashlib
import logging
import time
import json
from contextlib import contextmanager
from dataclasses import dataclass

from django.db import connection, transaction
from django.utils import timezone

from compliance import events
from compliance.models import AuditEvent

logger = logging.getLogger(__name__)
GENESIS = "0" * 64
_LOCK_CLASS = 7301  # advisory lock namespace of audit chains (taken in SQL by levqor_audit_head)


@dataclass(frozen=True)
class RequestInfo:
    ip: str | None = None
    user_agent: str = ""


_request_info: contextvars.ContextVar[RequestInfo | None] = contextvars.ContextVar("levqor_audit_request", default=None)


@contextmanager
def request_context(request):
    token = _request_info.set(request_info(request))
    try:
        yield
    finally:
        _request_info.reset(token)


def request_info(request) -> RequestInfo | None:
    if request is None:
        return None
    from levqor.clientip import client_ip

    return RequestInfo(ip=client_ip(request), user_agent=(request.META.get("HTTP_USER_AGENT") or "")[:300])


def content_hash(*, prev_hash: str, tenant_id: int, seq: int, event: str, actor: str, ts, metadata: dict) -> str:
    payload = json.dumps(
        [prev_hash, tenant_id, seq, event, actor, ts.isoformat(), metadata],
        sort_keys=True, separators=(",", ":"), default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def record(event: str, *, tenant_id: int, actor: str, metadata: dict | None = None, request=None) -> AuditEvent:
    events.check(event)
    metadata = json.loads(json.dumps(metadata or {}, default=str))  # what is hashed is what is stored
    if request is None:
        info = _request_info.get()  # set by AuditRequestMiddleware during a request
    else:
        info = request_info(request) if not isinstance(request, RequestInfo) else request
    actor = actor[:200]
    user_agent = info.user_agent if info else ""
    ip = info.ip if info else None
    with transaction.atomic(), connection.cursor() as cursor:
        # Hot path (every change writes one): one round trip locks the tenant's chain and
        # reads its head, one inserts. Concurrent writers of a tenant queue on the lock.
        cursor.execute("SELECT seq, hash FROM levqor_audit_head(%s)", [tenant_id])
        row = cursor.fetchone()
        seq, prev_hash = (row[0] + 1, row[1]) if row else (1, GENESIS)
        ts = timezone.now()
        digest = content_hash(prev_hash=prev_hash, tenant_id=tenant_id, seq=seq, event=event, actor=actor, ts=ts,
                              metadata=metadata)
        cursor.execute(
            "INSERT INTO public.tenant_audit (tenant_id, seq, event, actor, ts, ip, user_agent, metadata_json, "
            "prev_hash, hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            [tenant_id, seq, event, actor, ts, ip, user_agent, json.dumps(metadata), prev_hash, digest],
        )
        (pk,) = cursor.fetchone()
        if _has_streams(tenant_id):
            transaction.on_commit(lambda: _wake_streams(tenant_id))
    return AuditEvent(id=pk, tenant_id=tenant_id, seq=seq, event=event, actor=actor, ts=ts, ip=ip,
                      user_agent=user_agent, metadata_json=metadata, prev_hash=prev_hash, hash=digest)


_streams_seen = {"at": 0.0, "tenants": frozenset()}


def _has_streams(tenant_id: int) -> bool:
    """Whether the tenant has SIEM streams, from a list refreshed every few seconds (the
    minutely sweep delivers anything a stale list missed)."""
    now = time.monotonic()
    if now - _streams_seen["at"] > 5:
        from compliance.models import AuditStream

        _streams_seen["tenants"] = frozenset(AuditStream.dangerously_all_tenants.values_list("tenant_id", flat=True))
        _streams_seen["at"] = now
    return tenant_id in _streams_seen["tenants"]


def forget_stream_list() -> None:
    _streams_seen["at"] = 0.0


def _wake_streams(tenant_id: int) -> None:
    try:
        from compliance.streams import schedule_for_tenant

        schedule_for_tenant(tenant_id)
    except Exception:  # the broker is down: the minutely sweep delivers later
        logger.warning("could not wake audit streams of tenant %s", tenant_id, exc_info=True)


def purge(*, tenant_id: int, up_to_seq: int | None = None, reason: str, actor: str,
          checkpoint: bool = True) -> int:
    """The one way rows leave tenant_audit (the trigger refuses every other DELETE).

    Deletes the tenant's rows up to `up_to_seq` (all when None) and, unless the tenant
    never existed (a rolled-back provisioning), writes a checkpoint holding the last
    deleted row's hash so the rest of the chain stays verifiable.
    """
    from compliance.models import AuditCheckpoint

    rows = AuditEvent.dangerously_all_tenants.filter(tenant_id=tenant_id)
    if up_to_seq is not None:
        rows = rows.filter(seq__lte=up_to_seq)
    with transaction.atomic():
        last = rows.order_by("-seq").values("seq", "hash").first()
        if last is None:
            return 0
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('levqor.audit_purge', 'on', true)")
        count, _ = rows.delete()
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('levqor.audit_purge', 'off', true)")
        if checkpoint:
            AuditCheckpoint.objects.create(tenant_id=tenant_id, seq=last["seq"], hash=last["hash"], purged_rows=count,
                                           reason=reason, actor=actor)
    return count


def verify_chain(tenant_id: int) -> tuple[bool, int | None]:
    """(intact, first broken seq). Starts from the latest purge checkpoint, if any."""
    from compliance.models import AuditCheckpoint

    checkpoint = AuditCheckpoint.objects.filter(tenant_id=tenant_id).order_by("-seq").first()
    prev = checkpoint.hash if checkpoint else GENESIS
    expected_seq = checkpoint.seq + 1 if checkpoint else 1
    for row in AuditEvent.dangerously_all_tenants.filter(tenant_id=tenant_id, seq__gte=expected_seq).order_by("seq").iterator():
        digest = content_hash(prev_hash=prev, tenant_id=row.tenant_id, seq=row.seq, event=row.event,
                              actor=row.actor, ts=row.ts, metadata=row.metadata_json)
        if row.seq != expected_seq or row.prev_hash != prev or row.hash != digest:
            return False, row.seq
        prev = row.hash
        expected_seq += 1
    return True, None
